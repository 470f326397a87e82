//! Position embeddings over the patch grid (fixed 2-D sin-cos or learned) and the sinusoidal
//! embedding of the noise level σ (CAN's decoder conditioning).

use super::{NnError, token_param};
use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// How positions are embedded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PosKind {
    /// Fixed 2-D sin-cos table (MAE's `get_2d_sincos_pos_embed`), not a parameter.
    SinCos,
    /// A learned `[1, cls + grid, d]` parameter, N(0, 0.02²) at initialisation.
    Learned,
}

/// The position embedding of a `side × side` grid, with a leading CLS slot when the sequence
/// has one: `[1, cls + side², d]`.
#[derive(Module, Debug)]
pub enum PosEmbed<B: Backend> {
    /// A constant table (no gradient, not in the parameter count).
    Fixed(Tensor<B, 3>),
    /// A parameter.
    Learned(Param<Tensor<B, 3>>),
}

impl<B: Backend> PosEmbed<B> {
    /// A fresh embedding of `kind` for `side × side` positions of width `dim` (`dim` must be a
    /// multiple of 4 for sin-cos).
    pub fn new(
        kind: PosKind,
        side: usize,
        dim: usize,
        cls: bool,
        device: &B::Device,
    ) -> Result<Self, NnError> {
        let n = side * side + usize::from(cls);
        Ok(match kind {
            PosKind::SinCos => {
                let table = sincos_2d(dim, side, cls)?;
                let data = TensorData::new(table, [1, n, dim]);
                PosEmbed::Fixed(Tensor::from_data(data, device))
            }
            PosKind::Learned => PosEmbed::Learned(token_param(n, dim, device)),
        })
    }

    /// The `[1, cls + grid, d]` table.
    pub fn value(&self) -> Tensor<B, 3> {
        match self {
            PosEmbed::Fixed(t) => t.clone(),
            PosEmbed::Learned(p) => p.val(),
        }
    }
}

/// MAE's 1-D sin-cos embedding of position `pos` into `out` (width `w`, even):
/// `[sin(pos·ω_0), …, sin(pos·ω_{w/2−1}), cos(pos·ω_0), …]` with `ω_k = 10000^(−k/(w/2))`.
fn sincos_1d(pos: f64, out: &mut [f32]) {
    let half = out.len() / 2;
    for k in 0..half {
        let omega = 1.0 / 10000f64.powf(k as f64 / half as f64);
        out[k] = (pos * omega).sin() as f32;
        out[half + k] = (pos * omega).cos() as f32;
    }
}

/// MAE's `get_2d_sincos_pos_embed(dim, side, cls_token)`: a row-major `[cls + side², dim]`
/// table. For grid position `(row i, column j)` the first `dim/2` values embed the column `j`
/// and the last `dim/2` the row `i` (MAE's `meshgrid(w, h)` puts `w` first); the CLS row is
/// zeros. `dim` must be a multiple of 4.
pub fn sincos_2d(dim: usize, side: usize, cls: bool) -> Result<Vec<f32>, NnError> {
    if dim == 0 || !dim.is_multiple_of(4) {
        return Err(NnError::Shape(format!(
            "sin-cos position embeddings need a width divisible by 4, got {dim}"
        )));
    }
    let mut table = vec![0f32; (side * side + usize::from(cls)) * dim];
    let rows = table[usize::from(cls) * dim..].chunks_exact_mut(dim);
    for (m, row) in rows.enumerate() {
        let (i, j) = (m / side, m % side);
        let (first, second) = row.split_at_mut(dim / 2);
        sincos_1d(j as f64, first);
        sincos_1d(i as f64, second);
    }
    Ok(table)
}

/// The sinusoidal embedding of per-image noise levels `sigma` `[B]` → `[B, dim]`:
/// `[sin(σ·ω_0), …, sin(σ·ω_{h−1}), cos(σ·ω_0), …, cos(σ·ω_{h−1})]`, `h = ⌊dim/2⌋`,
/// `ω_k = exp(−ln(10000)·k/(h−1))` (`ω_0 = 1` when `h = 1`), with a zero column appended for odd
/// `dim` (the diffusion timestep embedding CAN applies to the raw σ).
pub fn sigma_embedding<B: Backend>(sigma: Tensor<B, 1>, dim: usize) -> Tensor<B, 2> {
    let h = dim / 2;
    let denom = h.saturating_sub(1).max(1) as f64;
    let omega: Vec<f32> = (0..h)
        .map(|k| (-(10000f64.ln()) * k as f64 / denom).exp() as f32)
        .collect();
    let device = sigma.device();
    let omega = Tensor::<B, 1>::from_data(TensorData::new(omega, [h]), &device);
    let [b] = sigma.dims();
    let args = sigma.reshape([b, 1]) * omega.reshape([1, h]);
    let mut parts = vec![args.clone().sin(), args.cos()];
    if dim % 2 == 1 {
        parts.push(Tensor::zeros([b, 1], &device));
    }
    Tensor::cat(parts, 1)
}
