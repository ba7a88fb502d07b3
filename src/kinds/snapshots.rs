//! Per-epoch weight snapshots of a training run, packed into one store object.
//!
//! While training, each epoch's model is written to `partial/snapshot_e<i>.safetensors` (so a
//! resumed run keeps them). At the end they are packed into one safetensors file whose tensors
//! `epoch<i>` are the raw bytes (`U8`) of each epoch's model file. The pack is written by
//! streaming the files one after another, so memory stays bounded whatever the model size.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use memmap2::Mmap;

pub fn epoch_file(dir: &Path, epoch: usize) -> PathBuf {
    dir.join(format!("snapshot_e{epoch:04}.safetensors"))
}

/// Packs the snapshots of epochs `0..epochs` from `dir` into `out`.
pub fn combine(dir: &Path, epochs: usize, out: &Path) -> Result<()> {
    let mut sizes = Vec::with_capacity(epochs);
    for e in 0..epochs {
        let f = epoch_file(dir, e);
        let len = std::fs::metadata(&f)
            .with_context(|| format!("snapshot of epoch {e} is missing"))?
            .len();
        sizes.push(len);
    }
    // The safetensors header: a JSON object of name → dtype, shape, data offsets.
    let mut header = String::from("{");
    let mut offset = 0u64;
    for (e, len) in sizes.iter().enumerate() {
        if e > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            "\"epoch{e}\":{{\"dtype\":\"U8\",\"shape\":[{len}],\"data_offsets\":[{offset},{}]}}",
            offset + len
        ));
        offset += len;
    }
    header.push('}');
    // Pad with spaces to 8-byte alignment, as the format recommends.
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut w = BufWriter::with_capacity(1 << 20, File::create(out)?);
    w.write_all(&(header.len() as u64).to_le_bytes())?;
    w.write_all(header.as_bytes())?;
    for e in 0..epochs {
        let mut f = File::open(epoch_file(dir, e))?;
        std::io::copy(&mut f, &mut w)?;
    }
    w.flush()?;
    Ok(())
}

/// A packed snapshot file, memory-mapped.
pub struct Snapshots {
    map: Mmap,
    ranges: Vec<(usize, usize)>,
}

impl Snapshots {
    pub fn open(path: &Path) -> Result<Snapshots> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: store objects are immutable.
        let map = unsafe { Mmap::map(&file)? };
        let tensors = safetensors::SafeTensors::deserialize(&map)
            .with_context(|| format!("{} is not a snapshot pack", path.display()))?;
        let n = tensors.len();
        let mut ranges = Vec::with_capacity(n);
        for e in 0..n {
            let t = tensors
                .tensor(&format!("epoch{e}"))
                .map_err(|_| anyhow!("snapshot pack lacks epoch {e}"))?;
            let start = t.data().as_ptr() as usize - map.as_ptr() as usize;
            ranges.push((start, start + t.data().len()));
        }
        if ranges.is_empty() {
            bail!("{} holds no snapshot", path.display());
        }
        Ok(Snapshots { map, ranges })
    }

    pub fn epochs(&self) -> usize {
        self.ranges.len()
    }

    /// The model file bytes of one epoch.
    pub fn epoch(&self, e: usize) -> &[u8] {
        let (a, b) = self.ranges[e];
        &self.map[a..b]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_and_unpacks_epoch_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(epoch_file(dir.path(), 0), b"first").unwrap();
        std::fs::write(epoch_file(dir.path(), 1), b"second epoch").unwrap();
        let out = dir.path().join("pack");
        combine(dir.path(), 2, &out).unwrap();
        let s = Snapshots::open(&out).unwrap();
        assert_eq!(s.epochs(), 2);
        assert_eq!(s.epoch(0), b"first");
        assert_eq!(s.epoch(1), b"second epoch");
    }
}
