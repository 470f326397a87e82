//! Helpers shared by the runtime's test binaries (each uses some of them).
#![allow(dead_code)]

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// The values of `t`, as f32.
pub fn values<const D: usize, Bk: Backend>(t: Tensor<Bk, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// Deterministic pseudo-random values in [-scale, scale) (a 64-bit LCG seeded by `seed`).
pub fn fill(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0) * scale
        })
        .collect()
}
