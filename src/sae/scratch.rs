//! Reusable scratch buffers for the CPU fast path of the training step.
//!
//! A step of a large Matryoshka model needs about a gigabyte of temporary arrays. Fresh
//! allocations of that size come straight from the kernel as untouched pages, and faulting
//! them in costs about 40 ms per 100 MB — a tenth of the step. Buffers here are anonymous
//! memory mappings that go back to a small process-wide pool when dropped and are zeroed on
//! reuse (a few milliseconds per 100 MB). On Linux they ask for transparent huge pages, which
//! also spares the gathers of the sparse products most TLB misses. Mappings start on a page
//! boundary, so vector loads of 64-byte chunks never straddle cache lines.

use std::marker::PhantomData;
use std::sync::Mutex;

use rayon::prelude::*;

/// Element types whose all-zero bit pattern is the value zero, with no padding.
pub(crate) trait Zeroed: Copy + Send + Sync + 'static {}
impl Zeroed for f32 {}
impl Zeroed for u32 {}

/// Mappings kept for reuse; beyond this many, or beyond [`POOL_BYTES`] in all, the oldest
/// returned ones are released (a sweep of models of different sizes does not accumulate them).
const POOL_MAPPINGS: usize = 24;
/// Bytes kept for reuse at most: a Matryoshka step with d = 768, n = 6144 and batch 4096 uses
/// about a gigabyte of scratch arrays.
const POOL_BYTES: usize = 3 << 29;

static POOL: Mutex<Vec<memmap2::MmapMut>> = Mutex::new(Vec::new());

/// Mapping size for a request of `bytes`: rounded up to a sixteenth of the next power of two
/// (at least 2 MiB, one huge page). Requests reuse only mappings of their own class, so a
/// step's arrays, whose sizes drift a little with the number of code entries, keep finding
/// their mappings, and a large mapping never goes to a small request.
fn size_class(bytes: usize) -> usize {
    let grain = (bytes.next_power_of_two() / 16).max(1 << 21);
    bytes.div_ceil(grain) * grain
}

/// A zero-initialised buffer of `len` elements of `T`.
pub(crate) struct Scratch<T: Zeroed> {
    map: Option<memmap2::MmapMut>,
    len: usize,
    _elem: PhantomData<T>,
}

impl<T: Zeroed> Scratch<T> {
    /// Panics when the system cannot map the memory (as a vector allocation would abort).
    pub(crate) fn zeros(len: usize) -> Self {
        let bytes = (len * std::mem::size_of::<T>()).max(1);
        let class = size_class(bytes);
        let reused = {
            let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
            let found = pool.iter().position(|m| m.len() == class);
            found.map(|i| pool.remove(i))
        };
        let map = match reused {
            Some(mut map) => {
                map[..bytes].par_chunks_mut(1 << 20).for_each(|c| c.fill(0));
                map
            }
            None => {
                let map = memmap2::MmapMut::map_anon(class)
                    .unwrap_or_else(|e| panic!("cannot map {class} bytes of memory: {e}"));
                // Only a hint: where huge pages are unavailable the mapping works as it is.
                #[cfg(target_os = "linux")]
                let _ = map.advise(memmap2::Advice::HugePage);
                map
            }
        };
        Scratch {
            map: Some(map),
            len,
            _elem: PhantomData,
        }
    }
}

impl<T: Zeroed> Drop for Scratch<T> {
    fn drop(&mut self) {
        if let Some(map) = self.map.take() {
            let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
            pool.push(map);
            while pool.len() > POOL_MAPPINGS
                || pool.iter().map(|m| m.len()).sum::<usize>() > POOL_BYTES
            {
                pool.remove(0);
            }
        }
    }
}

impl<T: Zeroed> std::ops::Deref for Scratch<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match &self.map {
            // SAFETY: the mapping is page-aligned (enough for T), at least len · size_of::<T>()
            // bytes long, zero-initialised (a valid T per `Zeroed`) and owned by `self`.
            Some(m) => unsafe { std::slice::from_raw_parts(m.as_ptr().cast::<T>(), self.len) },
            None => &[],
        }
    }
}

impl<T: Zeroed> std::ops::DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match &mut self.map {
            // SAFETY: as in `deref`, with exclusive access through `&mut self`.
            Some(m) => unsafe {
                std::slice::from_raw_parts_mut(m.as_mut_ptr().cast::<T>(), self.len)
            },
            None => &mut [],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reused_buffers_come_back_zeroed() {
        // Sizes no other test asks for, so that the pool hands back these very mappings.
        let len = 3_000_017;
        {
            let mut a = Scratch::<f32>::zeros(len);
            assert!(a.iter().all(|&v| v == 0.0));
            a.fill(7.5);
            assert_eq!(a.as_ptr() as usize % 4096, 0);
        }
        let b = Scratch::<u32>::zeros(len - 5);
        assert_eq!(b.len(), len - 5);
        assert!(b.iter().all(|&v| v == 0));
        let empty = Scratch::<f32>::zeros(0);
        assert!(empty.is_empty());
    }

    #[test]
    fn size_classes_group_nearby_sizes_and_cover_the_request() {
        assert_eq!(size_class(1), 1 << 21);
        assert_eq!(size_class(50_671_428), size_class(50_828_096));
        assert_ne!(size_class(50_828_096), size_class(100_663_296));
        for bytes in [1usize, 4095, 1 << 21, 3_000_017, 100_663_296, 1 << 33] {
            let c = size_class(bytes);
            assert!(
                c >= bytes && c <= bytes + bytes / 8 + (1 << 21),
                "{bytes} -> {c}"
            );
        }
    }
}
