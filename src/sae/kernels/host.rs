//! Host views of CPU tensors: the f32 data of a tensor as a slice, to read or to update where it
//! lies.
//!
//! candle's tensors are immutable values; an update written as tensor operations allocates a
//! fresh result for every operation. The CPU training step updates its 19 MB weight matrices,
//! their Adam moments and their gradients in place instead, through candle's in-place custom
//! operation, which hands the storage over under its write lock. Every tensor a model or an
//! optimiser holds owns its storage (neither has a `Clone` that would share it; `Sae::copy`
//! copies the data), so an update in place changes no other value.

use std::cell::RefCell;

use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Storage, Tensor};

use crate::sae::{Result, SaeError};

/// Whether `t` is contiguous f32 data in host memory (the tensors the host kernels take).
pub(crate) fn is_host_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous()
}

/// Run `f` on the f32 host data of a CPU tensor (a non-contiguous one is copied first).
pub(crate) fn with_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (st, layout) = t.storage_and_layout();
    match &*st {
        Storage::Cpu(c) => {
            let s = c.as_slice::<f32>()?;
            let (a, b) = layout
                .contiguous_offsets()
                .ok_or_else(|| SaeError::Data("non-contiguous tensor".into()))?;
            Ok(f(&s[a..b]))
        }
        _ => Err(SaeError::Data("host kernels need CPU tensors".into())),
    }
}

/// Run `f` on the f32 host data of a contiguous CPU tensor, which it may change in place.
pub(crate) fn with_slice_mut<R>(t: &Tensor, f: impl FnOnce(&mut [f32]) -> R) -> Result<R> {
    if !is_host_f32(t) {
        return Err(SaeError::Data(
            "in-place host update needs a contiguous f32 CPU tensor".into(),
        ));
    }
    let op = InPlace {
        f: RefCell::new(Some(f)),
        out: RefCell::new(None),
    };
    t.inplace_op1(&op)?;
    op.out
        .into_inner()
        .ok_or_else(|| SaeError::Data("in-place host update did not run".into()))
}

/// A closure run once on a tensor's storage, with its result kept for the caller.
struct InPlace<F, R> {
    f: RefCell<Option<F>>,
    out: RefCell<Option<R>>,
}

impl<F: FnOnce(&mut [f32]) -> R, R> InplaceOp1 for InPlace<F, R> {
    fn name(&self) -> &'static str {
        "host-update"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let (a, b) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("non-contiguous tensor".into()))?;
        let CpuStorage::F32(data) = storage else {
            return Err(candle_core::Error::Msg("expected f32 data".into()));
        };
        let f = self
            .f
            .borrow_mut()
            .take()
            .ok_or_else(|| candle_core::Error::Msg("in-place update run twice".into()))?;
        *self.out.borrow_mut() = Some(f(&mut data[a..b]));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn updates_land_in_the_tensor_and_views_are_refused() {
        let t = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap();
        let sum = with_slice_mut(&t, |s| {
            s.iter_mut().for_each(|v| *v *= 10.0);
            s.iter().sum::<f32>()
        })
        .unwrap();
        assert_eq!(sum, 100.0);
        assert_eq!(
            t.to_vec2::<f32>().unwrap(),
            vec![vec![10.0, 20.0], vec![30.0, 40.0]]
        );
        // A transposed view is not contiguous: refused, and the data is unchanged.
        assert!(with_slice_mut(&t.t().unwrap(), |s| s.fill(0.0)).is_err());
        // A row of the matrix is contiguous at an offset: only that row changes.
        let row = t.narrow(0, 1, 1).unwrap();
        with_slice_mut(&row, |s| s.fill(-1.0)).unwrap();
        assert_eq!(
            t.to_vec2::<f32>().unwrap(),
            vec![vec![10.0, 20.0], vec![-1.0, -1.0]]
        );
        assert!(with_slice_mut(&t.to_dtype(DType::F64).unwrap(), |_| ()).is_err());
        assert_eq!(
            with_slice(&t.t().unwrap(), |s| s.to_vec()).unwrap()[1],
            -1.0
        );
    }
}
