//! The fused ops written with Burn's tensor ops: the path for backends other than the CPU
//! (CUDA) and for non-f32 dtypes, and the independent reference the fused kernels are tested
//! against.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention as burn_attention;
use burn::tensor::ops::AttentionModuleOptions;

/// Exact GELU `x·Φ(x)`, `Φ(x) = (1 + erf(x/√2))/2`, written with Burn's tensor ops so that
/// autodiff differentiates it exactly (through `erf`). Burn's own `gelu` op takes its gradient
/// from the backend's `gelu_backward`, whose default (used by the CUDA backend, which has none
/// of its own) is the derivative of the tanh approximation: off by up to 9e-4 of the exact one
/// (at |x| ≈ 2). Under autodiff this is also fewer ops than that default backward.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.clone() * normal_cdf(x)
}

/// The standard normal CDF `Φ(x) = (1 + erf(x/√2))/2`, element-wise.
pub fn normal_cdf<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.mul_scalar(core::f64::consts::FRAC_1_SQRT_2)
        .erf()
        .add_scalar(1.0)
        .mul_scalar(0.5)
}

/// LayerNorm over the last dimension: `(x − mean)/√(var + eps)·gamma + beta`, biased variance.
pub fn layer_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    beta: Option<Tensor<B, 1>>,
    eps: f64,
) -> Tensor<B, D> {
    let (var, mean) = x.clone().var_mean_bias(D - 1);
    let y = x.sub(mean).div(var.add_scalar(eps).sqrt());
    let y = y.mul(gamma.unsqueeze());
    match beta {
        Some(b) => y.add(b.unsqueeze()),
        None => y,
    }
}

/// Multi-head self-attention of a packed `qkv` `[B, T, 3d]` (last dimension laid out
/// `(3, heads, d/heads)`) → `[B, T, d]`, through Burn's `attention`.
pub fn attention<B: Backend>(qkv: Tensor<B, 3>, heads: usize) -> Tensor<B, 3> {
    let [b, t, w] = qkv.dims();
    let d = w / 3;
    let dh = d / heads;
    // [B, T, 3d] -> [3, B, heads, T, dh]
    let qkv = qkv.reshape([b, t, 3, heads, dh]).permute([2, 0, 3, 1, 4]);
    let part = |i: usize| qkv.clone().narrow(0, i, 1).reshape([b, heads, t, dh]);
    let o = burn_attention(
        part(0),
        part(1),
        part(2),
        None,
        None,
        AttentionModuleOptions::default(),
    );
    // [B, heads, T, dh] -> [B, T, d]
    o.swap_dims(1, 2).reshape([b, t, d])
}
