//! Float32 column sums in the order PyTorch's CPU `sum(dim=0)` adds them.
//!
//! The reference computes the dataset mean from float32 column sums of
//! 10,000-row chunks. Float32 addition is not associative, so the order of the
//! additions decides the last bits of μ, and through it of everything that is
//! standardised with μ. PyTorch (`aten/src/ATen/native/cpu/SumKernel.cpp`,
//! AVX2 build, 8 lanes) sums a contiguous `[rows, cols]` tensor over rows as:
//!
//! * columns `0 .. cols − cols mod 32`: one four-level cascade per column
//!   (`multi_row_sum`): add 2^p rows into level 0 (p = max(4, ⌈log2 rows⌉ / 4)),
//!   then push level j into level j + 1 while the row index is a multiple of
//!   2^(p·j); finally add levels 1, 2, 3 into level 0;
//! * the remaining columns: `row_sum`, four interleaved cascades over rows
//!   `4i + k`, the leftover rows added to the first, then the four partials
//!   added in order;
//! * tensors narrower than 8 columns use groups of 4 columns instead of 32.
//!
//! Columns are independent of each other. With several threads PyTorch splits
//! the columns into ranges rounded to multiples of 32, which on an AVX2 build
//! leaves the grouping above unchanged, so the result does not depend on the
//! thread count; for the CLIP widths (512, 768, 1024) every column takes the
//! cascade path. (An AVX-512 build groups 64 columns, and a 32-column thread
//! range then goes through `row_sum`; that case is not modelled.)

const LEVELS: usize = 4;

fn ceil_log2(x: usize) -> usize {
    if x <= 1 {
        0
    } else {
        (usize::BITS - (x - 1).leading_zeros()) as usize
    }
}

fn level_power(size: usize) -> usize {
    4.max(ceil_log2(size) / LEVELS)
}

/// One cascade over `size` values given by `load(i)` (`multi_row_sum` with a
/// single accumulator row).
fn cascade(load: impl Fn(usize) -> f32, size: usize) -> f32 {
    let power = level_power(size);
    let step = 1usize << power;
    let mask = step - 1;
    let mut acc = [0.0f32; LEVELS];
    let mut i = 0;
    while i + step <= size {
        for _ in 0..step {
            acc[0] += load(i);
            i += 1;
        }
        for j in 1..LEVELS {
            acc[j] += acc[j - 1];
            acc[j - 1] = 0.0;
            if i & (mask << (j * power)) != 0 {
                break;
            }
        }
    }
    while i < size {
        acc[0] += load(i);
        i += 1;
    }
    for j in 1..LEVELS {
        acc[0] += acc[j];
    }
    acc[0]
}

/// `row_sum`: four interleaved cascades, then the tail, then the partials.
fn row_sum(load: impl Fn(usize) -> f32, size: usize) -> f32 {
    const ILP: usize = 4;
    let size_ilp = size / ILP;
    let mut partial = [0.0f32; ILP];
    for (k, p) in partial.iter_mut().enumerate() {
        *p = cascade(|i| load(i * ILP + k), size_ilp);
    }
    for i in size_ilp * ILP..size {
        partial[0] += load(i);
    }
    for k in 1..ILP {
        partial[0] += partial[k];
    }
    partial[0]
}

/// The same cascade as [`cascade`], run for columns `0..width` of every row at
/// once so that the chunk is read row by row (cache friendly).
fn cascade_columns(chunk: &[f32], cols: usize, width: usize, out: &mut [f32]) {
    let rows = chunk.len() / cols;
    let power = level_power(rows);
    let step = 1usize << power;
    let mask = step - 1;
    let mut acc = vec![[0.0f32; LEVELS]; width];
    let mut i = 0;
    let add_row = |acc: &mut [[f32; LEVELS]], i: usize| {
        for (a, &v) in acc.iter_mut().zip(&chunk[i * cols..i * cols + width]) {
            a[0] += v;
        }
    };
    while i + step <= rows {
        for _ in 0..step {
            add_row(&mut acc, i);
            i += 1;
        }
        for j in 1..LEVELS {
            for a in acc.iter_mut() {
                a[j] += a[j - 1];
                a[j - 1] = 0.0;
            }
            if i & (mask << (j * power)) != 0 {
                break;
            }
        }
    }
    while i < rows {
        add_row(&mut acc, i);
        i += 1;
    }
    for (o, a) in out.iter_mut().zip(&acc) {
        let mut total = a[0];
        for level in &a[1..] {
            total += level;
        }
        *o = total;
    }
}

/// Float32 column sums of a row-major `[rows, cols]` chunk, bit for bit as
/// PyTorch's CPU `sum(dim=0)` (AVX2 build) computes them for `cols >= 2`.
pub fn torch_column_sums(chunk: &[f32], cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; cols];
    if cols == 0 || chunk.is_empty() {
        return out;
    }
    let rows = chunk.len() / cols;
    let group = if cols >= 8 { 32 } else { 4 };
    let main = cols - cols % group;
    cascade_columns(chunk, cols, main, &mut out[..main]);
    for (j, o) in out.iter_mut().enumerate().skip(main) {
        *o = row_sum(|i| chunk[i * cols + j], rows);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cascade_hand_example() {
        // 2^24 followed by 31 ones. Adding 1 to 2^24 in f32 rounds back to 2^24,
        // so a sequential sum stays at 16777216. The cascade adds the first 16
        // rows (2^24; the ones are lost), moves them to level 1, adds the next
        // 16 ones exactly (16) and combines: 16777232. Exact: 16777247.
        let mut col = [1.0f32; 32];
        col[0] = 16_777_216.0;
        assert_eq!(cascade(|i| col[i], 32), 16_777_232.0);
        let sequential = col.iter().fold(0.0f32, |a, &v| a + v);
        assert_eq!(sequential, 16_777_216.0);
    }

    #[test]
    fn row_sum_hand_example() {
        // 10 values: partials over rows 4i+k for i < 2 are
        // k=0: v0+v4, k=1: v1+v5, k=2: v2+v6, k=3: v3+v7; then v8, v9 go to
        // partial 0; then partial 0 + 1 + 2 + 3.
        // With v0 = 2^24 and the rest 1: p0 = 2^24 (+1 lost), then +1 +1 lost,
        // then + 2 + 2 + 2 = 2^24 + 6.
        let mut col = [1.0f32; 10];
        col[0] = 16_777_216.0;
        assert_eq!(row_sum(|i| col[i], 10), 16_777_222.0);
    }

    #[test]
    fn column_paths_agree_with_scalar_definitions() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
        for (rows, cols) in [(1000, 40), (300, 6), (17, 33), (5000, 32)] {
            let chunk: Vec<f32> = (0..rows * cols)
                .map(|_| 100.0 + rng.random_range(-1.0f32..1.0))
                .collect();
            let got = torch_column_sums(&chunk, cols);
            let group = if cols >= 8 { 32 } else { 4 };
            for (j, &g) in got.iter().enumerate() {
                let expect = if j < cols - cols % group {
                    cascade(|i| chunk[i * cols + j], rows)
                } else {
                    row_sum(|i| chunk[i * cols + j], rows)
                };
                assert_eq!(g.to_bits(), expect.to_bits(), "rows {rows} column {j}");
            }
        }
    }

    #[test]
    fn level_power_grows_for_long_columns() {
        assert_eq!(level_power(10_000), 4);
        assert_eq!(level_power(1 << 20), 5);
        assert_eq!(ceil_log2(1), 0);
        assert_eq!(ceil_log2(10_000), 14);
    }
}
