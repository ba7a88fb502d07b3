//! Reusable scratch buffers for the CPU fast path of the training step.
//!
//! A step of a large Matryoshka model needs about a gigabyte of temporary arrays. Fresh
//! allocations of that size come straight from the kernel as untouched pages, and faulting
//! them in costs about 40 ms per 100 MB — a tenth of the step. Buffers here are anonymous
//! memory mappings that go back to a small process-wide pool when dropped and are zeroed on
//! reuse (a few milliseconds per 100 MB). On Linux they ask for transparent huge pages, which
//! also spares the gathers of the sparse products most TLB misses. Mappings start on a page
//! boundary, so vector loads of 64-byte chunks never straddle cache lines.
//!
//! The pool lives only while some training holds a [`PoolLease`]: when the last one ends, the
//! pooled mappings go back to the system, so the steps that follow a large training in the same
//! process (or a smaller model next in a grid) do not carry its gigabyte of scratch memory.

use std::marker::PhantomData;
use std::sync::Mutex;

use rayon::prelude::*;

/// Element types whose all-zero bit pattern is the value zero, with no padding, and for which
/// every bit pattern is a valid value.
pub(crate) trait Zeroed: Copy + Send + Sync + 'static {}
impl Zeroed for f32 {}
impl Zeroed for u32 {}

/// Mappings kept for reuse; beyond this many, or beyond [`POOL_BYTES`] in all, the oldest
/// returned ones are released (a sweep of models of different sizes does not accumulate them).
const POOL_MAPPINGS: usize = 24;
/// Bytes kept for reuse at most: a Matryoshka step with d = 768, n = 6144 and batch 4096 uses
/// about a gigabyte of scratch arrays.
const POOL_BYTES: usize = 3 << 29;

static POOL: Mutex<Pool> = Mutex::new(Pool {
    maps: Vec::new(),
    leases: 0,
});

struct Pool {
    maps: Vec<memmap2::MmapMut>,
    /// Trainings in progress; buffers dropped while there are none are unmapped at once.
    leases: usize,
}

impl Pool {
    fn take(&mut self, class: usize) -> Option<memmap2::MmapMut> {
        let found = self.maps.iter().position(|m| m.len() == class);
        found.map(|i| self.maps.remove(i))
    }

    /// Keeps `map` for reuse while a lease is held (the oldest go beyond the bounds).
    fn give_back(&mut self, map: memmap2::MmapMut) {
        if self.leases == 0 {
            return;
        }
        self.maps.push(map);
        while self.maps.len() > POOL_MAPPINGS
            || self.maps.iter().map(|m| m.len()).sum::<usize>() > POOL_BYTES
        {
            self.maps.remove(0);
        }
    }

    fn end_lease(&mut self) {
        self.leases -= 1;
        if self.leases == 0 {
            self.maps.clear();
        }
    }
}

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps buffers pooled for reuse while it lives (held by a training for its duration).
pub(crate) struct PoolLease(());

impl PoolLease {
    pub(crate) fn acquire() -> PoolLease {
        pool().leases += 1;
        PoolLease(())
    }
}

impl Drop for PoolLease {
    fn drop(&mut self) {
        pool().end_lease();
    }
}

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
        Self::new(len, true)
    }

    /// A buffer whose content is unspecified (zeros, or what its last user left), for a
    /// product that writes every element: a reused 100 MB buffer is not cleared for nothing.
    /// Any bit pattern is a valid f32 or u32, so stale content is wrong values, never
    /// undefined behaviour.
    pub(crate) fn for_overwrite(len: usize) -> Self {
        Self::new(len, false)
    }

    fn new(len: usize, clear: bool) -> Self {
        let bytes = (len * std::mem::size_of::<T>()).max(1);
        let class = size_class(bytes);
        let reused = pool().take(class);
        let map = match reused {
            Some(mut map) => {
                if clear {
                    map[..bytes].par_chunks_mut(1 << 20).for_each(|c| c.fill(0));
                }
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
            pool().give_back(map);
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
        let _lease = PoolLease::acquire();
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
    fn the_pool_keeps_mappings_only_while_leased() {
        let map = || memmap2::MmapMut::map_anon(1 << 21).unwrap();
        let mut pool = Pool {
            maps: Vec::new(),
            leases: 0,
        };
        pool.give_back(map());
        assert!(pool.maps.is_empty(), "nothing is pooled without a lease");
        pool.leases = 2;
        pool.give_back(map());
        pool.give_back(map());
        assert_eq!(pool.maps.len(), 2);
        assert!(pool.take(1 << 21).is_some());
        assert!(
            pool.take(1 << 22).is_none(),
            "other size classes are not handed out"
        );
        pool.end_lease();
        assert_eq!(pool.maps.len(), 1, "one lease is still held");
        pool.end_lease();
        assert!(
            pool.maps.is_empty(),
            "the last lease releases every mapping"
        );
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
