//! Inner loops of the sparse products: weighted sums of gathered matrix rows, and dot products
//! of one vector with gathered matrix rows.
//!
//! Both read each gathered row once per call and keep their running sums in registers, so
//! they are limited by how fast the rows stream in from cache rather than by loads and stores
//! of an accumulator in memory. On x86-64 machines with AVX-512, or else AVX2 and FMA (detected
//! at run time), hand-written kernels are used; elsewhere, and for widths they do not cover,
//! portable loops. The kernels are load-bound (each entry streams 256 bytes of a row), so
//! AVX-512's 64-byte loads halve the instructions per entry. Results are deterministic on a
//! given machine; the variants may differ in the last bits (fused multiply-add and summation
//! order of the dot products).

/// Width of the column chunks that [`gather_axpy`] keeps in registers (eight AVX or four
/// AVX-512 registers).
pub(crate) const CHUNK: usize = 64;

/// `acc += Σ_e val[e] · m[idx[e]·stride + off .. + acc.len()]`.
///
/// Panics when a gathered row would leave `m`.
pub(crate) fn gather_axpy(
    acc: &mut [f32],
    m: &[f32],
    stride: usize,
    off: usize,
    idx: &[u32],
    val: &[f32],
) {
    assert_eq!(idx.len(), val.len());
    assert!(off + acc.len() <= stride);
    let rows = m.len() / stride;
    #[cfg(target_arch = "x86_64")]
    if acc.len() == CHUNK {
        match level() {
            // SAFETY: the CPU supports the kernel's instructions; every row index is checked
            // against `rows` inside the kernel, and off + CHUNK <= stride keeps each read
            // inside its row.
            Level::Avx512 => {
                return unsafe { x86::gather_axpy_64_avx512(acc, m, stride, off, idx, val, rows) }
            }
            Level::Avx2 => {
                return unsafe { x86::gather_axpy_64(acc, m, stride, off, idx, val, rows) }
            }
            Level::Portable => {}
        }
    }
    for (&i, &v) in idx.iter().zip(val) {
        let i = i as usize;
        assert!(i < rows, "row {i} outside a {rows}-row matrix");
        let row = &m[i * stride + off..i * stride + off + acc.len()];
        for (a, x) in acc.iter_mut().zip(row) {
            *a += v * x;
        }
    }
}

/// `out[q] += a · m[idx[q]·stride + off ..][..a.len()]` for every q.
///
/// Panics when a gathered row would leave `m`.
pub(crate) fn gather_dot_add(
    a: &[f32],
    m: &[f32],
    stride: usize,
    off: usize,
    idx: &[u32],
    out: &mut [f32],
) {
    assert_eq!(idx.len(), out.len());
    assert!(off + a.len() <= stride);
    let rows = m.len() / stride;
    #[cfg(target_arch = "x86_64")]
    if a.len() == CHUNK {
        match level() {
            // SAFETY: as in `gather_axpy`.
            Level::Avx512 => {
                return unsafe { x86::gather_dot_add_64_avx512(a, m, stride, off, idx, out, rows) }
            }
            Level::Avx2 => {
                return unsafe { x86::gather_dot_add_64(a, m, stride, off, idx, out, rows) }
            }
            Level::Portable => {}
        }
    }
    for (o, &i) in out.iter_mut().zip(idx) {
        let i = i as usize;
        assert!(i < rows, "row {i} outside a {rows}-row matrix");
        *o += dot(a, &m[i * stride + off..i * stride + off + a.len()]);
    }
}

/// Dot product with 32 partial sums, so that the additions do not wait on one another.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const W: usize = 32;
    let mut acc = [0f32; W];
    let (ca, cb) = (a.chunks_exact(W), b.chunks_exact(W));
    let mut s: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((s, x), y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    s += acc.iter().sum::<f32>();
    s
}

/// The widest kernels this CPU runs.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Level {
    Portable,
    Avx2,
    Avx512,
}

/// The kernels to use here (CPU features are cached by the standard library).
#[cfg(target_arch = "x86_64")]
fn level() -> Level {
    let native = if x86::avx512_available() {
        Level::Avx512
    } else if x86::available() {
        Level::Avx2
    } else {
        Level::Portable
    };
    #[cfg(test)]
    let native = native.min(CEILING.with(|c| c.get()));
    native
}

// Tests lower this ceiling to check the narrower kernels on machines that have wider ones.
#[cfg(all(target_arch = "x86_64", test))]
thread_local! {
    static CEILING: std::cell::Cell<Level> = const { std::cell::Cell::new(Level::Avx512) };
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[inline]
    pub(super) fn available() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }

    #[inline]
    pub(super) fn avx512_available() -> bool {
        is_x86_feature_detected!("avx512f")
    }

    /// `gather_axpy_64` with the chunk in four 16-lane registers: per lane the same fused
    /// multiply-adds in the same order, so the same bits as the AVX2 kernel.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gather_axpy_64_avx512(
        acc: &mut [f32],
        m: &[f32],
        stride: usize,
        off: usize,
        idx: &[u32],
        val: &[f32],
        rows: usize,
    ) {
        let a = acc.as_mut_ptr();
        let mut s = [_mm512_setzero_ps(); 4];
        for (q, r) in s.iter_mut().enumerate() {
            *r = _mm512_loadu_ps(a.add(16 * q));
        }
        let base = m.as_ptr();
        for (&i, &v) in idx.iter().zip(val) {
            let i = i as usize;
            assert!(i < rows, "row {i} outside a {rows}-row matrix");
            let p = base.add(i * stride + off);
            let v = _mm512_set1_ps(v);
            for (q, r) in s.iter_mut().enumerate() {
                *r = _mm512_fmadd_ps(v, _mm512_loadu_ps(p.add(16 * q)), *r);
            }
        }
        for (q, r) in s.iter().enumerate() {
            _mm512_storeu_ps(a.add(16 * q), *r);
        }
    }

    /// `gather_dot_add_64` with `a` in four 16-lane registers and two accumulators per entry.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gather_dot_add_64_avx512(
        a: &[f32],
        m: &[f32],
        stride: usize,
        off: usize,
        idx: &[u32],
        out: &mut [f32],
        rows: usize,
    ) {
        let ap = a.as_ptr();
        let x = [
            _mm512_loadu_ps(ap),
            _mm512_loadu_ps(ap.add(16)),
            _mm512_loadu_ps(ap.add(32)),
            _mm512_loadu_ps(ap.add(48)),
        ];
        let base = m.as_ptr();
        for (&i, o) in idx.iter().zip(out.iter_mut()) {
            let i = i as usize;
            assert!(i < rows, "row {i} outside a {rows}-row matrix");
            let p = base.add(i * stride + off);
            let mut s0 = _mm512_mul_ps(x[0], _mm512_loadu_ps(p));
            let mut s1 = _mm512_mul_ps(x[1], _mm512_loadu_ps(p.add(16)));
            s0 = _mm512_fmadd_ps(x[2], _mm512_loadu_ps(p.add(32)), s0);
            s1 = _mm512_fmadd_ps(x[3], _mm512_loadu_ps(p.add(48)), s1);
            *o += _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
        }
    }

    /// Eight accumulators of eight lanes hold the 64-column chunk; each entry adds one
    /// scaled 64-float piece of its row.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gather_axpy_64(
        acc: &mut [f32],
        m: &[f32],
        stride: usize,
        off: usize,
        idx: &[u32],
        val: &[f32],
        rows: usize,
    ) {
        let a = acc.as_mut_ptr();
        let mut s = [_mm256_setzero_ps(); 8];
        for (q, r) in s.iter_mut().enumerate() {
            *r = _mm256_loadu_ps(a.add(8 * q));
        }
        let base = m.as_ptr();
        for (&i, &v) in idx.iter().zip(val) {
            let i = i as usize;
            assert!(i < rows, "row {i} outside a {rows}-row matrix");
            let p = base.add(i * stride + off);
            let v = _mm256_set1_ps(v);
            for (q, r) in s.iter_mut().enumerate() {
                *r = _mm256_fmadd_ps(v, _mm256_loadu_ps(p.add(8 * q)), *r);
            }
        }
        for (q, r) in s.iter().enumerate() {
            _mm256_storeu_ps(a.add(8 * q), *r);
        }
    }

    /// `a` stays in eight registers; each entry's eight products go to two fresh accumulators
    /// (no dependency between entries, so consecutive entries overlap).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gather_dot_add_64(
        a: &[f32],
        m: &[f32],
        stride: usize,
        off: usize,
        idx: &[u32],
        out: &mut [f32],
        rows: usize,
    ) {
        let ap = a.as_ptr();
        let mut x = [_mm256_setzero_ps(); 8];
        for (q, r) in x.iter_mut().enumerate() {
            *r = _mm256_loadu_ps(ap.add(8 * q));
        }
        let base = m.as_ptr();
        for (&i, o) in idx.iter().zip(out.iter_mut()) {
            let i = i as usize;
            assert!(i < rows, "row {i} outside a {rows}-row matrix");
            let p = base.add(i * stride + off);
            let mut s0 = _mm256_mul_ps(x[0], _mm256_loadu_ps(p));
            let mut s1 = _mm256_mul_ps(x[1], _mm256_loadu_ps(p.add(8)));
            s0 = _mm256_fmadd_ps(x[2], _mm256_loadu_ps(p.add(16)), s0);
            s1 = _mm256_fmadd_ps(x[3], _mm256_loadu_ps(p.add(24)), s1);
            s0 = _mm256_fmadd_ps(x[4], _mm256_loadu_ps(p.add(32)), s0);
            s1 = _mm256_fmadd_ps(x[5], _mm256_loadu_ps(p.add(40)), s1);
            s0 = _mm256_fmadd_ps(x[6], _mm256_loadu_ps(p.add(48)), s0);
            s1 = _mm256_fmadd_ps(x[7], _mm256_loadu_ps(p.add(56)), s1);
            *o += hsum(_mm256_add_ps(s0, s1));
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        let h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
        _mm_cvtss_f32(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rows × stride matrix with distinct, exactly representable values.
    fn matrix(rows: usize, stride: usize) -> Vec<f32> {
        (0..rows * stride)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 16.0)
            .collect()
    }

    /// Runs `f` with the widest kernels this CPU has, then with at most AVX2, then with the
    /// portable loops.
    fn both_paths(f: impl Fn(&str)) {
        #[cfg(target_arch = "x86_64")]
        {
            eprintln!("kernels here: {:?}", level());
            for (name, ceiling) in [
                ("native", Level::Avx512),
                ("avx2", Level::Avx2),
                ("portable", Level::Portable),
            ] {
                CEILING.with(|c| c.set(ceiling));
                f(name);
            }
            CEILING.with(|c| c.set(Level::Avx512));
        }
        #[cfg(not(target_arch = "x86_64"))]
        f("portable");
    }

    #[test]
    fn gather_axpy_matches_float64_sums() {
        let (rows, stride) = (9, 80);
        let m = matrix(rows, stride);
        let idx = [3u32, 0, 8, 3, 5];
        let val = [0.5f32, -1.25, 2.0, 0.75, -0.5];
        both_paths(|path| {
            for (off, width) in [(0, CHUNK), (16, CHUNK), (0, 7), (70, 10)] {
                let mut acc: Vec<f32> = (0..width).map(|c| c as f32 * 0.25).collect();
                gather_axpy(&mut acc, &m, stride, off, &idx, &val);
                for (c, a) in acc.iter().enumerate() {
                    let want = c as f64 * 0.25
                        + idx
                            .iter()
                            .zip(&val)
                            .map(|(&i, &v)| v as f64 * m[i as usize * stride + off + c] as f64)
                            .sum::<f64>();
                    assert!((*a as f64 - want).abs() < 1e-5, "{path} {off} {width} {c}");
                }
            }
        });
    }

    #[test]
    fn gather_dot_add_matches_float64_dots() {
        let (rows, stride) = (6, 72);
        let m = matrix(rows, stride);
        let idx = [5u32, 1, 1, 0];
        both_paths(|path| {
            for (off, width) in [(0, CHUNK), (8, CHUNK), (3, 20)] {
                let a: Vec<f32> = (0..width).map(|c| (c as f32 - 9.0) / 8.0).collect();
                let mut out = vec![1.0f32, -2.0, 0.0, 0.5];
                let before = out.clone();
                gather_dot_add(&a, &m, stride, off, &idx, &mut out);
                for (q, &i) in idx.iter().enumerate() {
                    let dot: f64 = (0..width)
                        .map(|c| a[c] as f64 * m[i as usize * stride + off + c] as f64)
                        .sum();
                    let want = before[q] as f64 + dot;
                    assert!((out[q] as f64 - want).abs() < 1e-4, "{path} {off} {q}");
                }
            }
        });
    }

    #[test]
    fn gathers_refuse_rows_outside_the_matrix() {
        both_paths(|_| {
            let m = matrix(4, CHUNK);
            let r = std::panic::catch_unwind(|| {
                let mut acc = [0f32; CHUNK];
                gather_axpy(&mut acc, &m, CHUNK, 0, &[1, 4], &[1.0, 1.0]);
            });
            assert!(r.is_err());
            let r = std::panic::catch_unwind(|| {
                let mut out = [0f32; 1];
                gather_dot_add(&m[..CHUNK], &m, CHUNK, 0, &[7], &mut out);
            });
            assert!(r.is_err());
        });
    }
}
