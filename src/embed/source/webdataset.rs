//! WebDataset shards: tar archives (optionally gzipped) whose members are grouped into samples.
//!
//! A shard is read as a stream of 512-byte tar blocks: each member header is decoded with
//! [`tar::Header`] and checked against its checksum here, and GNU long-name and PAX members
//! apply to the member that follows. The walk is ours rather than `tar::Archive`'s so that a
//! source can stop and resume between samples, seek over data it does not need and tell where a
//! shard is damaged; one header is read ahead to see where a sample ends.
//! Compatibility details: docs/embed.md, "WebDataset shards".

use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::PathBuf;

use anyhow::bail;
use flate2::read::MultiGzDecoder;

use super::{Entry, Item, Source};

const BLOCK: u64 = 512;
/// Upper bounds on extension members (GNU long names, PAX records): a header claiming more is
/// treated as damaged rather than trusted with an allocation.
const MAX_LONG_NAME: u64 = 64 * 1024;
const MAX_PAX: u64 = 1024 * 1024;

/// Which member extensions play which role in a sample.
#[derive(Debug, Clone, PartialEq)]
pub struct WebDatasetOptions {
    /// Image members, in order of preference. Default `jpg, jpeg, png, webp`.
    pub image_extensions: Vec<String>,
    /// Text members (UTF-8), in order of preference. Default `txt, caption`.
    pub text_extensions: Vec<String>,
    /// Label members (UTF-8 text, trimmed), in order of preference. Default `cls`.
    pub label_extensions: Vec<String>,
}

impl Default for WebDatasetOptions {
    fn default() -> Self {
        let list = |names: &[&str]| names.iter().map(|s| s.to_string()).collect();
        Self {
            image_extensions: list(&["jpg", "jpeg", "png", "webp"]),
            text_extensions: list(&["txt", "caption"]),
            label_extensions: list(&["cls"]),
        }
    }
}

/// A [`Source`] over WebDataset shards, read in the given order.
pub struct WebDataset {
    shards: Vec<PathBuf>,
    /// The name of each shard in keys and messages (its file name unless set otherwise).
    names: Vec<String>,
    /// Index in `shards` of the next shard to open.
    next_shard: usize,
    current: Option<ShardReader>,
    roles: Roles,
}

impl WebDataset {
    /// A source over `shards` (plain or gzipped tar files), in this order.
    ///
    /// Fails when there are no shards or a shard is not a file; a shard that exists but cannot
    /// be read is reported as an unreadable entry when it is reached.
    pub fn open(shards: Vec<PathBuf>, opts: WebDatasetOptions) -> anyhow::Result<Self> {
        if shards.is_empty() {
            bail!("no WebDataset shards given");
        }
        for shard in &shards {
            if !shard.is_file() {
                bail!("WebDataset shard {} is not a file", shard.display());
            }
        }
        let roles = Roles::new(&opts);
        if roles.image.is_empty() && roles.text.is_empty() {
            bail!("WebDataset options name no image and no text extension");
        }
        Ok(Self {
            names: shards.iter().map(|p| shard_name(p)).collect(),
            shards,
            next_shard: 0,
            current: None,
            roles,
        })
    }

    /// Names the shards in keys and messages with `names` (one per shard, in order) instead of
    /// their file names: a dataset repository's files are known by their path in it.
    pub fn with_names(mut self, names: Vec<String>) -> anyhow::Result<Self> {
        if names.len() != self.shards.len() {
            bail!(
                "{} names given for {} WebDataset shards",
                names.len(),
                self.shards.len()
            );
        }
        self.names = names;
        Ok(self)
    }

    /// The next position: a sample (built when `keep`), a damage record, or `None` at the end.
    /// With `keep == false` member data is skipped and the entry returned is only a marker.
    fn advance(&mut self, keep: bool) -> Option<Entry> {
        loop {
            if let Some(shard) = &mut self.current {
                if let Some(entry) = shard.next_sample(keep, &self.roles) {
                    return Some(entry);
                }
                self.current = None;
            }
            let path = self.shards.get(self.next_shard)?.clone();
            let name = self.names[self.next_shard].clone();
            self.next_shard += 1;
            match ShardReader::open(&path, name.clone()) {
                Ok(reader) => self.current = Some(reader),
                Err(e) => {
                    return Some(Entry::Unreadable {
                        key: name.clone(),
                        reason: format!("{name}: cannot open shard {}: {e}", path.display()),
                    });
                }
            }
        }
    }
}

impl Source for WebDataset {
    fn next_entry(&mut self) -> anyhow::Result<Option<Entry>> {
        Ok(self.advance(true))
    }

    fn skip(&mut self, n: usize) -> anyhow::Result<()> {
        for _ in 0..n {
            if self.advance(false).is_none() {
                break;
            }
        }
        Ok(())
    }
}

/// The option lists, lower-cased once.
struct Roles {
    image: Vec<String>,
    text: Vec<String>,
    label: Vec<String>,
}

impl Roles {
    fn new(opts: &WebDatasetOptions) -> Self {
        let lower = |v: &[String]| v.iter().map(|s| s.to_ascii_lowercase()).collect();
        Self {
            image: lower(&opts.image_extensions),
            text: lower(&opts.text_extensions),
            label: lower(&opts.label_extensions),
        }
    }

    /// Whether a member with this (lower-cased) extension is needed at all.
    fn wanted(&self, ext: &str) -> bool {
        [&self.image, &self.text, &self.label]
            .iter()
            .any(|list| list.iter().any(|e| e == ext))
    }
}

/// The file name of a shard, used in keys and messages.
fn shard_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Anything that can be read and sought, so tests can watch what a plain shard reads.
trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

/// The byte stream of a shard: a plain file (seekable, of known length) or a gzip stream.
enum Stream {
    Plain { inner: Box<dyn ReadSeek>, len: u64 },
    Gzip(Box<MultiGzDecoder<BufReader<File>>>),
}

/// Where and how a shard stopped being readable.
struct Damage {
    offset: u64,
    what: String,
}

/// One member header, its data not yet consumed.
struct Member {
    /// The member's path inside the archive (after long-name and PAX records).
    path: String,
    key: String,
    /// Lower-cased extension (everything after the first dot of the file name).
    ext: String,
    size: u64,
    header_offset: u64,
}

enum Next {
    Member(Member),
    End,
    Damaged(Damage),
}

/// Reads one shard sample by sample.
struct ShardReader {
    name: String,
    stream: Stream,
    /// Offset in the (decompressed) tar stream of the next byte to read.
    pos: u64,
    /// "byte" or "decompressed byte", for messages.
    unit: &'static str,
    /// The first member of the next sample, its data not yet consumed.
    lookahead: Option<Member>,
    /// Damage met after a member's data, reported in place of the next header.
    broken: Option<Damage>,
    done: bool,
}

impl ShardReader {
    fn open(path: &std::path::Path, name: String) -> io::Result<Self> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut magic = [0u8; 2];
        let n = read_full(&mut file, &mut magic)?;
        file.rewind()?;
        let stream = if n == 2 && magic == [0x1f, 0x8b] {
            Stream::Gzip(Box::new(MultiGzDecoder::new(BufReader::new(file))))
        } else {
            Stream::Plain {
                inner: Box::new(BufReader::new(file)),
                len,
            }
        };
        Ok(Self::from_stream(name, stream))
    }

    fn from_stream(name: String, stream: Stream) -> Self {
        let unit = match stream {
            Stream::Plain { .. } => "byte",
            Stream::Gzip(_) => "decompressed byte",
        };
        Self {
            name,
            stream,
            pos: 0,
            unit,
            lookahead: None,
            broken: None,
            done: false,
        }
    }

    /// The next sample of this shard (or damage record); `None` when the shard is finished.
    fn next_sample(&mut self, keep: bool, roles: &Roles) -> Option<Entry> {
        if self.done {
            return None;
        }
        let first = match self.lookahead.take() {
            Some(member) => member,
            None => match self.next_member() {
                Next::Member(member) => member,
                Next::End => {
                    self.done = true;
                    return None;
                }
                Next::Damaged(damage) => {
                    // Damage before any sample started: one record for the shard.
                    self.done = true;
                    return Some(Entry::Unreadable {
                        key: self.name.clone(),
                        reason: format!(
                            "{}: {} at {} {}; the rest of the shard is skipped",
                            self.name, damage.what, self.unit, damage.offset
                        ),
                    });
                }
            },
        };
        let key = format!("{}:{}", self.name, first.key);
        let mut parts: Vec<(String, String, Vec<u8>)> = Vec::new();
        let mut member = first;
        loop {
            let read = keep && roles.wanted(&member.ext);
            match self.consume_data(&member, read) {
                Ok(Some(data)) => parts.push((member.ext.clone(), member.path.clone(), data)),
                Ok(None) => {}
                Err(damage) => {
                    self.done = true;
                    return Some(Entry::Unreadable {
                        key,
                        reason: format!(
                            "{}: member `{}` (header at byte {}) is cut off at {} {}: {}; \
                             the rest of the shard is lost",
                            self.name,
                            member.path,
                            member.header_offset,
                            self.unit,
                            damage.offset,
                            damage.what
                        ),
                    });
                }
            }
            match self.next_member() {
                Next::Member(next) if next.key == member.key => member = next,
                Next::Member(next) => {
                    self.lookahead = Some(next);
                    break;
                }
                Next::End => {
                    self.done = true;
                    break;
                }
                Next::Damaged(damage) => {
                    // The damaged header may have belonged to this sample: it cannot be
                    // trusted to be complete.
                    self.done = true;
                    return Some(Entry::Unreadable {
                        key,
                        reason: format!(
                            "{}: {} at {} {}, after this sample's member `{}`; the sample may \
                             be incomplete and the rest of the shard is skipped",
                            self.name, damage.what, self.unit, damage.offset, member.path
                        ),
                    });
                }
            }
        }
        if !keep {
            // Only the position matters when skipping.
            return Some(Entry::Unreadable {
                key,
                reason: String::new(),
            });
        }
        Some(build_sample(key, parts, roles))
    }

    /// Reads headers up to the next regular-file member, applying extension records.
    fn next_member(&mut self) -> Next {
        if let Some(damage) = self.broken.take() {
            return Next::Damaged(damage);
        }
        // Extension records describe the member that follows them.
        let mut long_name: Option<Vec<u8>> = None;
        let mut pax_path: Option<Vec<u8>> = None;
        let mut pax_size: Option<u64> = None;
        loop {
            let header_offset = self.pos;
            let damaged = |what: String| {
                Next::Damaged(Damage {
                    offset: header_offset,
                    what,
                })
            };
            let mut block = [0u8; BLOCK as usize];
            let n = match self.read_full(&mut block) {
                Ok(n) => n,
                Err(e) => return damaged(format!("member header unreadable ({e})")),
            };
            if n == 0 {
                // A clean end at a member boundary (end-of-archive blocks missing).
                return Next::End;
            }
            if n < block.len() {
                return damaged(format!("member header cut off after {n} of 512 bytes"));
            }
            if block.iter().all(|&b| b == 0) {
                // The end-of-archive marker; whatever follows is padding.
                return Next::End;
            }
            let header = tar::Header::from_byte_slice(&block);
            match header.cksum() {
                Ok(stored) if checksum_matches(&block, stored) => {}
                Ok(_) => return damaged("member header checksum mismatch".into()),
                Err(_) => return damaged("member header has an unreadable checksum field".into()),
            }
            let size = match header.entry_size() {
                Ok(size) => size,
                Err(_) => return damaged("member header has an unreadable size field".into()),
            };
            let kind = header.entry_type();
            let mut member = Member {
                path: String::new(),
                key: String::new(),
                ext: String::new(),
                size,
                header_offset,
            };
            if kind.is_gnu_longname() || kind.is_pax_local_extensions() {
                let limit = if kind.is_gnu_longname() {
                    MAX_LONG_NAME
                } else {
                    MAX_PAX
                };
                if size > limit {
                    return damaged(format!("extension header claims {size} bytes"));
                }
                let data = match self.consume_data(&member, true) {
                    Ok(data) => data.unwrap_or_default(),
                    Err(damage) => return Next::Damaged(damage),
                };
                if kind.is_gnu_longname() {
                    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                    long_name = Some(data[..end].to_vec());
                } else {
                    match parse_pax(&data) {
                        Ok((path, size)) => {
                            pax_path = path.or(pax_path);
                            pax_size = size.or(pax_size);
                        }
                        Err(what) => return damaged(what),
                    }
                }
                continue;
            }
            if kind.is_gnu_longlink() || kind.is_pax_global_extensions() {
                // Link targets and archive-wide records say nothing about member names.
                if let Err(damage) = self.consume_data(&member, false) {
                    return Next::Damaged(damage);
                }
                continue;
            }
            // An ordinary header: the extension records read so far belong to it.
            if let Some(size) = pax_size.take() {
                member.size = size;
            }
            let path = long_name
                .take()
                .or(pax_path.take())
                .unwrap_or_else(|| header.path_bytes().into_owned());
            if !(kind.is_file() || kind.is_contiguous()) {
                // Folders, links and the like are not sample members.
                if let Err(damage) = self.consume_data(&member, false) {
                    return Next::Damaged(damage);
                }
                continue;
            }
            let path = String::from_utf8_lossy(&path).into_owned();
            let (key, ext) = split_key(&path);
            member.key = key.to_string();
            member.ext = ext.to_ascii_lowercase();
            member.path = path;
            return Next::Member(member);
        }
    }

    /// Consumes a member's data and the padding to the next block: returns the data when
    /// `read`, else moves past it without reading it (seeking in a plain shard).
    fn consume_data(&mut self, member: &Member, read: bool) -> Result<Option<Vec<u8>>, Damage> {
        let size = member.size;
        let padding = (BLOCK - size % BLOCK) % BLOCK;
        let start = self.pos;
        let cut = |pos: u64, what: String| Damage { offset: pos, what };
        let data = match &mut self.stream {
            Stream::Plain { inner, len } => {
                // Checked against the file length first: seeking past the end succeeds, and a
                // damaged size must not become a huge allocation.
                if start.saturating_add(size) > *len {
                    return Err(cut(
                        *len,
                        format!("the shard ends {} bytes into its {size}", *len - start),
                    ));
                }
                if read {
                    let mut buf = vec![0u8; size as usize];
                    inner
                        .read_exact(&mut buf)
                        .map_err(|e| cut(start, format!("read error ({e})")))?;
                    Some(buf)
                } else {
                    inner
                        .seek_relative(size as i64)
                        .map_err(|e| cut(start, format!("seek error ({e})")))?;
                    None
                }
            }
            Stream::Gzip(inner) => {
                let mut taken = inner.take(size);
                let result = if read {
                    let mut buf = Vec::new();
                    taken.read_to_end(&mut buf).map(|n| (n as u64, Some(buf)))
                } else {
                    io::copy(&mut taken, &mut io::sink()).map(|n| (n, None))
                };
                match result {
                    Ok((n, data)) if n == size => data,
                    Ok((n, _)) => {
                        return Err(cut(
                            start + n,
                            format!("the stream ends {n} bytes into its {size}"),
                        ))
                    }
                    // The decoder does not say how far it got; the member's start is known.
                    Err(e) => return Err(cut(start, format!("decompression failed ({e})"))),
                }
            }
        };
        self.pos = start + size;
        // A shard cut inside the padding lost no data: the next header read meets the end. A
        // stream that fails here is reported when the next header is wanted.
        let mut pad = [0u8; BLOCK as usize];
        if let Err(e) = self.read_full(&mut pad[..padding as usize]) {
            self.broken = Some(Damage {
                offset: self.pos,
                what: format!("unreadable stream ({e})"),
            });
        }
        Ok(data)
    }

    /// Reads as much of `buf` as the stream still holds, advancing `pos`.
    fn read_full(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match &mut self.stream {
            Stream::Plain { inner, .. } => read_full(inner, buf)?,
            Stream::Gzip(inner) => read_full(inner, buf)?,
        };
        self.pos += n as u64;
        Ok(n)
    }
}

/// Reads until `buf` is full or the reader is exhausted; returns the bytes read.
fn read_full<R: Read + ?Sized>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The tar checksum: the byte sum of the header with the checksum field read as spaces. Some
/// historic writers summed signed bytes, so both sums are accepted.
fn checksum_matches(block: &[u8; BLOCK as usize], stored: u32) -> bool {
    let fields = block[..148].iter().chain(&block[156..]);
    let unsigned: u32 = fields.clone().map(|&b| b as u32).sum::<u32>() + 8 * 32;
    let signed: i64 = fields.map(|&b| b as i8 as i64).sum::<i64>() + 8 * 32;
    unsigned == stored || signed == stored as i64
}

/// The `path` and `size` records of a PAX extension member.
#[allow(clippy::type_complexity)]
fn parse_pax(data: &[u8]) -> Result<(Option<Vec<u8>>, Option<u64>), String> {
    let mut path = None;
    let mut size = None;
    for ext in tar::PaxExtensions::new(data) {
        let ext = ext.map_err(|_| "malformed PAX extension record".to_string())?;
        match ext.key_bytes() {
            b"path" => path = Some(ext.value_bytes().to_vec()),
            b"size" => {
                let value = std::str::from_utf8(ext.value_bytes())
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| "malformed PAX size record".to_string())?;
                size = Some(value);
            }
            _ => {}
        }
    }
    Ok((path, size))
}

/// Splits a member path into its sample key and extension at the first dot of the file name
/// (dots in folder names do not count).
fn split_key(path: &str) -> (&str, &str) {
    let name_start = path.rfind('/').map_or(0, |i| i + 1);
    match path[name_start..].find('.') {
        Some(dot) => (&path[..name_start + dot], &path[name_start + dot + 1..]),
        None => (path, ""),
    }
}

/// Assembles a sample from its members' data: `(extension, member path, bytes)`.
fn build_sample(key: String, mut parts: Vec<(String, String, Vec<u8>)>, roles: &Roles) -> Entry {
    // The member whose extension comes first in a role's list (ties: the earlier member).
    let pick = |list: &[String]| -> Option<usize> {
        parts
            .iter()
            .enumerate()
            .filter_map(|(i, part)| list.iter().position(|e| *e == part.0).map(|r| (r, i)))
            .min()
            .map(|(_, i)| i)
    };
    let (image, text, label) = (pick(&roles.image), pick(&roles.text), pick(&roles.label));
    if image.is_none() && text.is_none() {
        return Entry::Unreadable {
            key,
            reason: "no image or text member".to_string(),
        };
    }
    let as_text = |i: usize| -> Result<String, String> {
        std::str::from_utf8(&parts[i].2)
            .map(str::to_string)
            .map_err(|e| format!("member `{}` is not UTF-8 text ({e})", parts[i].1))
    };
    let text = match text.map(as_text).transpose() {
        Ok(text) => text,
        Err(reason) => return Entry::Unreadable { key, reason },
    };
    let label = match label.map(as_text).transpose() {
        Ok(label) => label.map(|l| l.trim().to_string()),
        Err(reason) => return Entry::Unreadable { key, reason },
    };
    Entry::Item(Item {
        key,
        image: image.map(|i| std::mem::take(&mut parts[i].2)),
        text,
        label,
        group: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::path::Path;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// A member for a test shard: `(path, data)`; a path ending in `/` is a folder.
    type Members<'a> = &'a [(&'a str, &'a [u8])];

    fn tar_bytes(members: Members) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in members {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            header.set_mtime(0);
            if path.ends_with('/') {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                builder.append_data(&mut header, path, &[][..]).unwrap();
            } else {
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path, *data).unwrap();
            }
        }
        builder.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    /// Byte offsets of the headers of regular members written by `tar_bytes` (short names,
    /// no folders): each member is a header block and its data padded to whole blocks.
    fn header_offsets(members: Members) -> Vec<u64> {
        let mut offsets = Vec::new();
        let mut pos = 0;
        for (_, data) in members {
            offsets.push(pos);
            pos += BLOCK + (data.len() as u64).div_ceil(BLOCK) * BLOCK;
        }
        offsets
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn read_all(source: &mut dyn Source) -> Vec<Entry> {
        let mut out = Vec::new();
        while let Some(entry) = source.next_entry().unwrap() {
            out.push(entry);
        }
        out
    }

    fn item(key: &str, image: Option<&[u8]>, text: Option<&str>, label: Option<&str>) -> Entry {
        Entry::Item(Item {
            key: key.to_string(),
            image: image.map(|b| b.to_vec()),
            text: text.map(str::to_string),
            label: label.map(str::to_string),
            group: None,
        })
    }

    /// Keys and kinds: `key` for items, `!key` for unreadable entries.
    fn outline(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| match e {
                Entry::Item(item) => item.key.clone(),
                Entry::Unreadable { key, .. } => format!("!{key}"),
            })
            .collect()
    }

    fn reason(entries: &[Entry], key: &str) -> String {
        entries
            .iter()
            .find_map(|e| match e {
                Entry::Unreadable { key: k, reason } if k == key => Some(reason.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no unreadable entry {key}"))
    }

    /// Two shards covering grouping, folders, subfolder keys, long names and labels.
    fn two_shards() -> (Vec<u8>, Vec<u8>, String) {
        let long_dir = format!("{}/", "d".repeat(120));
        let long_key = format!("{long_dir}000007");
        let first = tar_bytes(&[
            ("000000.jpg", b"jpeg-0"),
            ("000000.txt", b"a cat"),
            ("000000.json", b"{}"),
            ("000001.png", b"png-1"),
            ("000001.cls", b"  7\n"),
            ("sub/", b""),
            ("sub/000002.txt", b"only text"),
            ("000003.json", b"{}"),
        ]);
        let second = tar_bytes(&[
            ("000004.jpg", b"jpeg-4"),
            ("000004.caption", b"a dog"),
            (&format!("{long_key}.jpg"), b"jpeg-7"),
            (&format!("{long_key}.txt"), b"far away"),
        ]);
        (first, second, long_key)
    }

    #[test]
    fn members_are_grouped_into_samples_in_shard_order() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second, long_key) = two_shards();
        let shards = vec![
            write(dir.path(), "a.tar", &first),
            write(dir.path(), "b.tar", &second),
        ];
        let mut source = WebDataset::open(shards, WebDatasetOptions::default()).unwrap();
        let entries = read_all(&mut source);
        assert_eq!(
            entries,
            vec![
                item("a.tar:000000", Some(b"jpeg-0"), Some("a cat"), None),
                item("a.tar:000001", Some(b"png-1"), None, Some("7")),
                item("a.tar:sub/000002", None, Some("only text"), None),
                Entry::Unreadable {
                    key: "a.tar:000003".into(),
                    reason: "no image or text member".into()
                },
                item("b.tar:000004", Some(b"jpeg-4"), Some("a dog"), None),
                item(
                    &format!("b.tar:{long_key}"),
                    Some(b"jpeg-7"),
                    Some("far away"),
                    None
                ),
            ]
        );
        assert_eq!(source.next_entry().unwrap(), None);
    }

    #[test]
    fn gzipped_shards_read_like_plain_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second, _) = two_shards();
        let plain = vec![
            write(dir.path(), "a.tar", &first),
            write(dir.path(), "b.tar", &second),
        ];
        let gz = vec![
            write(dir.path(), "a.tar.gz", &gzip(&first)),
            // Compressed whatever the name says: detected by the magic bytes.
            write(
                dir.path(),
                "b.tar",
                &[gzip(&second[..2048]), gzip(&second[2048..])].concat(),
            ),
        ];
        let plain = read_all(&mut WebDataset::open(plain, Default::default()).unwrap());
        let gz = read_all(&mut WebDataset::open(gz, Default::default()).unwrap());
        let rename = |entries: Vec<Entry>| -> Vec<Entry> {
            entries
                .into_iter()
                .map(|mut e| {
                    match &mut e {
                        Entry::Item(item) => item.key = item.key.replace("a.tar.gz", "a.tar"),
                        Entry::Unreadable { key, .. } => *key = key.replace("a.tar.gz", "a.tar"),
                    }
                    e
                })
                .collect()
        };
        assert_eq!(plain.len(), 6);
        assert_eq!(rename(gz), plain);
    }

    #[test]
    fn options_choose_roles_and_preferences() {
        let dir = tempfile::tempdir().unwrap();
        let shard = tar_bytes(&[
            // png first in the archive, but jpg comes first in the default list.
            ("x.png", b"png-x"),
            ("x.JPG", b"jpg-x"),
            ("x.caption", b"cap-x"),
            ("x.txt", b"txt-x"),
            ("x.label", b"lab-x"),
            ("x.cls", b"cls-x"),
            ("y.seg.png", b"seg-y"),
            ("y.png", b"png-y"),
        ]);
        let path = write(dir.path(), "s.tar", &shard);
        let entries =
            read_all(&mut WebDataset::open(vec![path.clone()], Default::default()).unwrap());
        assert_eq!(
            entries,
            vec![
                item("s.tar:x", Some(b"jpg-x"), Some("txt-x"), Some("cls-x")),
                item("s.tar:y", Some(b"png-y"), None, None),
            ]
        );
        let opts = WebDatasetOptions {
            image_extensions: vec!["seg.png".into(), "png".into()],
            text_extensions: vec!["caption".into()],
            label_extensions: vec!["label".into(), "cls".into()],
        };
        let entries = read_all(&mut WebDataset::open(vec![path], opts).unwrap());
        assert_eq!(
            entries,
            vec![
                item("s.tar:x", Some(b"png-x"), Some("cap-x"), Some("lab-x")),
                item("s.tar:y", Some(b"seg-y"), None, None),
            ]
        );
    }

    #[test]
    fn pax_records_name_the_member_that_follows_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        let append = |builder: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]| {
            let mut header = tar::Header::new_ustar();
            header.set_mode(0o644);
            header.set_size(data.len() as u64);
            builder.append_data(&mut header, path, data).unwrap();
        };
        append(&mut builder, "000.jpg", b"jpg-0");
        // A link between members of a sample is not a member and does not split it.
        let mut link = tar::Header::new_ustar();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        builder
            .append_link(&mut link, "000.lnk", "000.jpg")
            .unwrap();
        append(&mut builder, "000.txt", b"zero");
        builder
            .append_pax_extensions([("path", &b"pax/001.jpg"[..])])
            .unwrap();
        append(&mut builder, "short-name.bin", b"jpg-1");
        builder
            .append_pax_extensions([("comment", &b"not a name"[..])])
            .unwrap();
        append(&mut builder, "pax/001.txt", b"one");
        let path = write(dir.path(), "p.tar", &builder.into_inner().unwrap());
        let entries = read_all(&mut WebDataset::open(vec![path], Default::default()).unwrap());
        assert_eq!(
            entries,
            vec![
                item("p.tar:000", Some(b"jpg-0"), Some("zero"), None),
                item("p.tar:pax/001", Some(b"jpg-1"), Some("one"), None),
            ]
        );
    }

    #[test]
    fn a_text_that_is_not_utf8_makes_its_sample_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let shard = tar_bytes(&[
            ("a.jpg", b"jpg-a"),
            ("a.txt", b"caf\xe9"),
            ("b.jpg", b"jpg-b"),
            ("b.cls", b"\xff"),
            ("c.jpg", b"jpg-c"),
        ]);
        let path = write(dir.path(), "s.tar", &shard);
        let entries = read_all(&mut WebDataset::open(vec![path], Default::default()).unwrap());
        assert_eq!(outline(&entries), ["!s.tar:a", "!s.tar:b", "s.tar:c"]);
        assert!(reason(&entries, "s.tar:a").contains("`a.txt` is not UTF-8"));
        assert!(reason(&entries, "s.tar:b").contains("`b.cls` is not UTF-8"));
    }

    /// Five samples of an image and a text each.
    fn five_samples() -> Vec<(String, Vec<u8>)> {
        let mut members = Vec::new();
        for i in 0..5 {
            members.push((format!("{i:03}.jpg"), vec![i as u8; 700 + 100 * i]));
            members.push((format!("{i:03}.txt"), format!("caption {i}").into_bytes()));
        }
        members
    }

    fn as_members(owned: &[(String, Vec<u8>)]) -> Vec<(&str, &[u8])> {
        owned
            .iter()
            .map(|(p, d)| (p.as_str(), d.as_slice()))
            .collect()
    }

    #[test]
    fn a_corrupt_member_header_ends_its_shard_and_reading_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let owned = five_samples();
        let members = as_members(&owned);
        let offsets = header_offsets(&members);
        let good = tar_bytes(&members);

        // Damage the header of 002.txt (member 5): sample 002 may be incomplete.
        let mut in_sample = good.clone();
        in_sample[offsets[5] as usize + 10..offsets[5] as usize + 20].fill(b'#');
        // Damage the header of 003.jpg (member 6), the first of its sample: the sample being
        // collected (002) cannot know it is complete.
        let mut at_boundary = good.clone();
        at_boundary[offsets[6] as usize + 124] ^= 0x01; // a size digit
                                                        // Damage the very first header: one record for the whole shard.
        let mut first = good.clone();
        first[3] = b'!';

        let shards = vec![
            write(dir.path(), "a.tar", &in_sample),
            write(dir.path(), "b.tar", &at_boundary),
            write(dir.path(), "c.tar", &first),
            write(dir.path(), "d.tar", &good),
        ];
        let entries = read_all(&mut WebDataset::open(shards, Default::default()).unwrap());
        assert_eq!(
            outline(&entries),
            [
                "a.tar:000",
                "a.tar:001",
                "!a.tar:002", //
                "b.tar:000",
                "b.tar:001",
                "!b.tar:002", //
                "!c.tar",     //
                "d.tar:000",
                "d.tar:001",
                "d.tar:002",
                "d.tar:003",
                "d.tar:004",
            ]
        );
        let r = reason(&entries, "a.tar:002");
        assert!(
            r.starts_with("a.tar: member header checksum mismatch"),
            "{r}"
        );
        assert!(r.contains(&format!("at byte {}", offsets[5])), "{r}");
        assert!(r.contains("`002.jpg`"), "{r}");
        let r = reason(&entries, "b.tar:002");
        assert!(
            r.contains(&format!("checksum mismatch at byte {}", offsets[6])),
            "{r}"
        );
        assert!(r.contains("may be incomplete"), "{r}");
        let r = reason(&entries, "c.tar");
        assert!(r.contains("checksum mismatch at byte 0"), "{r}");
        // The samples before the damage are intact.
        assert_eq!(
            entries[1],
            item("a.tar:001", Some(&[1u8; 800]), Some("caption 1"), None)
        );
    }

    #[test]
    fn a_truncated_shard_yields_what_precedes_the_cut() {
        let dir = tempfile::tempdir().unwrap();
        let owned = five_samples();
        let members = as_members(&owned);
        let offsets = header_offsets(&members);
        let good = tar_bytes(&members);
        // Cut inside the data of 003.jpg (member 6): 002 is complete (the header of 003.jpg
        // closed it), 003 is cut off.
        let mid_member = &good[..offsets[6] as usize + 512 + 300];
        // Cut inside the header of 002.txt (member 5): 002 may be incomplete.
        let mid_header = &good[..offsets[5] as usize + 100];
        // Cut at a member boundary after 001.txt: a clean end, nothing lost that can be seen.
        let boundary = &good[..offsets[4] as usize];
        let shards = vec![
            write(dir.path(), "a.tar", mid_member),
            write(dir.path(), "b.tar", mid_header),
            write(dir.path(), "c.tar", boundary),
            write(dir.path(), "d.tar", &good[..100]),
        ];
        let entries = read_all(&mut WebDataset::open(shards, Default::default()).unwrap());
        assert_eq!(
            outline(&entries),
            [
                "a.tar:000",
                "a.tar:001",
                "a.tar:002",
                "!a.tar:003", //
                "b.tar:000",
                "b.tar:001",
                "!b.tar:002", //
                "c.tar:000",
                "c.tar:001", //
                "!d.tar",
            ]
        );
        let r = reason(&entries, "a.tar:003");
        assert!(
            r.contains(&format!("member `003.jpg` (header at byte {})", offsets[6])),
            "{r}"
        );
        assert!(
            r.contains(&format!("cut off at byte {}", mid_member.len())),
            "{r}"
        );
        let r = reason(&entries, "b.tar:002");
        assert!(r.contains("cut off after 100 of 512 bytes"), "{r}");
        assert_eq!(
            entries[2],
            item("a.tar:002", Some(&[2u8; 900]), Some("caption 2"), None)
        );
    }

    #[test]
    fn a_truncated_gzip_shard_yields_what_precedes_the_cut() {
        let dir = tempfile::tempdir().unwrap();
        // Incompressible members of 16 KiB, so compressed and decompressed offsets stay close.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect()
        };
        let owned: Vec<(String, Vec<u8>)> = (0..10)
            .map(|i| (format!("{i}.jpg"), noise(16384)))
            .collect();
        let gz = gzip(&tar_bytes(&as_members(&owned)));
        // Member 4's data spans decompressed bytes 68096..84480; cut in its middle.
        let cut = &gz[..4 * 16384 + 8192];
        let path = write(dir.path(), "a.tar.gz", cut);
        let entries = read_all(&mut WebDataset::open(vec![path], Default::default()).unwrap());
        assert_eq!(
            outline(&entries),
            [
                "a.tar.gz:0",
                "a.tar.gz:1",
                "a.tar.gz:2",
                "a.tar.gz:3",
                "!a.tar.gz:4"
            ]
        );
        assert_eq!(
            entries[3],
            item("a.tar.gz:3", Some(&owned[3].1), None, None)
        );
        let r = reason(&entries, "a.tar.gz:4");
        assert!(r.contains("member `4.jpg` (header at byte 67584)"), "{r}");
        assert!(r.contains("decompressed byte"), "{r}");
    }

    #[test]
    fn skip_equals_reading_and_dropping() {
        let dir = tempfile::tempdir().unwrap();
        let owned = five_samples();
        let members = as_members(&owned);
        let offsets = header_offsets(&members);
        let good = tar_bytes(&members);
        let mut corrupt = good.clone();
        corrupt[offsets[5] as usize + 10] ^= 0x55;
        let (first, second, _) = two_shards();
        let shards = vec![
            write(dir.path(), "a.tar", &first),
            write(
                dir.path(),
                "b.tar.gz",
                &gzip(&good[..offsets[6] as usize + 700]),
            ),
            write(dir.path(), "c.tar", &corrupt),
            write(dir.path(), "d.tar", &good[..offsets[6] as usize + 800]),
            write(dir.path(), "e.tgz", &gzip(&second)),
            write(dir.path(), "f.tar", &good[..700]),
        ];
        let all = read_all(&mut WebDataset::open(shards.clone(), Default::default()).unwrap());
        assert_eq!(all.len(), 4 + 4 + 3 + 4 + 2 + 1);
        for n in 0..=all.len() + 2 {
            let mut source = WebDataset::open(shards.clone(), Default::default()).unwrap();
            source.skip(n).unwrap();
            let rest = read_all(&mut source);
            assert_eq!(rest, all[n.min(all.len())..], "after skipping {n}");
        }
        // Skips in several steps land in the same place.
        let mut source = WebDataset::open(shards, Default::default()).unwrap();
        source.skip(3).unwrap();
        source.skip(5).unwrap();
        assert_eq!(source.next_entry().unwrap().as_ref(), Some(&all[8]));
    }

    /// Counts the bytes read through it.
    struct Counting<R> {
        inner: R,
        read: Arc<AtomicU64>,
    }

    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read.fetch_add(n as u64, Ordering::Relaxed);
            Ok(n)
        }
    }

    impl<R: Seek> Seek for Counting<R> {
        fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
            self.inner.seek(pos)
        }
    }

    #[test]
    fn skipping_a_plain_shard_reads_headers_only() {
        let owned: Vec<(String, Vec<u8>)> = (0..20)
            .map(|i| (format!("{i:02}.jpg"), vec![7u8; 10_000]))
            .collect();
        let bytes = tar_bytes(&as_members(&owned));
        let len = bytes.len() as u64;
        let read = Arc::new(AtomicU64::new(0));
        let stream = Stream::Plain {
            inner: Box::new(Counting {
                inner: io::Cursor::new(bytes),
                read: read.clone(),
            }),
            len,
        };
        let mut shard = ShardReader::from_stream("s.tar".into(), stream);
        let roles = Roles::new(&WebDatasetOptions::default());
        for _ in 0..19 {
            assert!(shard.next_sample(false, &roles).is_some());
        }
        // 20 headers (the last read ahead) and the padding after 19 members: no data.
        assert_eq!(
            read.load(Ordering::Relaxed),
            20 * 512 + 19 * (10_240 - 10_000)
        );
        assert_eq!(
            shard.next_sample(true, &roles),
            Some(item("s.tar:19", Some(&[7u8; 10_000]), None, None))
        );
        assert_eq!(shard.next_sample(true, &roles), None);
    }

    #[test]
    fn opening_checks_the_shards() {
        let dir = tempfile::tempdir().unwrap();
        assert!(WebDataset::open(vec![], Default::default()).is_err());
        let err = WebDataset::open(vec![dir.path().join("none.tar")], Default::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("none.tar is not a file"), "{err}");
        let path = write(dir.path(), "s.tar", &tar_bytes(&[("a.jpg", b"x")]));
        let opts = WebDatasetOptions {
            image_extensions: vec![],
            text_extensions: vec![],
            label_extensions: vec!["cls".into()],
        };
        assert!(WebDataset::open(vec![path], opts).is_err());
    }
}
