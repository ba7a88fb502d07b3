//! The floor under a dense training step: the five matrix products that every step on a code
//! keeping a large share of its entries computes, timed alone.
//!
//! A ReLU or JumpReLU code keeps about half of the latents when training starts. A step then
//! computes five dense B×d×n products — the encoder product, the reconstruction, the code
//! gradient, the decoder gradient and the encoder gradient — whatever else it does, so their
//! time bounds the step from below, and the PyTorch step divided by it bounds the ratio any
//! implementation of that step can reach against PyTorch. The products are timed here with the
//! call msae's step makes (`msae::matmul::matmul_into`, operands in the step's layouts,
//! results into buffers allocated once); `benches/torch_sae.py products` times them with
//! PyTorch.

use std::time::Instant;

use msae::matmul::matmul_into;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

/// Operands and result buffers of the five products of one step.
pub struct Products {
    b: usize,
    d: usize,
    n: usize,
    /// Centred input, B×d.
    xc: Vec<f32>,
    /// Encoder, d×n.
    w_enc: Vec<f32>,
    /// Code, B×n, half of it zero.
    z: Vec<f32>,
    /// Decoder, n×d.
    w_dec: Vec<f32>,
    /// Reconstruction gradient, B×d.
    c: Vec<f32>,
    /// Results: pre-activations and code gradient (B×n), reconstruction (B×d), decoder
    /// gradient (n×d), encoder gradient (d×n).
    p: Vec<f32>,
    dz: Vec<f32>,
    recon: Vec<f32>,
    g_dec: Vec<f32>,
    g_enc: Vec<f32>,
}

impl Products {
    /// Standard-normal operands (the code rectified) at batch `b`, width `d`, `n` latents.
    pub fn new(b: usize, d: usize, n: usize) -> Self {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let mut normal = |len: usize| -> Vec<f32> {
            (0..len).map(|_| StandardNormal.sample(&mut rng)).collect()
        };
        let z = normal(b * n).into_iter().map(|v: f32| v.max(0.0)).collect();
        Products {
            b,
            d,
            n,
            xc: normal(b * d),
            w_enc: normal(d * n),
            z,
            w_dec: normal(n * d),
            c: normal(b * d),
            p: vec![0.0; b * n],
            dz: vec![0.0; b * n],
            recon: vec![0.0; b * d],
            g_dec: vec![0.0; n * d],
            g_enc: vec![0.0; d * n],
        }
    }

    /// Seconds for `steps` repetitions of the five products.
    pub fn time(&mut self, steps: usize) -> f64 {
        let (b, d, n) = (self.b, self.d, self.n);
        let start = Instant::now();
        for _ in 0..steps {
            // P = Xc·W_enc, X̂ = Z·W_dec, dZ = C·W_decᵀ, g_dec = Zᵀ·C, g_enc = Xcᵀ·dZ.
            matmul_into(b, n, d, &self.xc, (d, 1), &self.w_enc, (n, 1), &mut self.p);
            matmul_into(
                b,
                d,
                n,
                &self.z,
                (n, 1),
                &self.w_dec,
                (d, 1),
                &mut self.recon,
            );
            matmul_into(b, n, d, &self.c, (d, 1), &self.w_dec, (1, d), &mut self.dz);
            matmul_into(n, d, b, &self.z, (1, n), &self.c, (d, 1), &mut self.g_dec);
            matmul_into(d, n, b, &self.xc, (1, d), &self.dz, (n, 1), &mut self.g_enc);
        }
        start.elapsed().as_secs_f64()
    }
}
