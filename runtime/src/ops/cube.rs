//! canc's own GPU kernels (CUDA and wgpu), each one launch (unless said) where Burn's tensor
//! ops take several:
//! - transformer blocks: LayerNorm forward and its `dx` (with `[dy·x̂ | dy]` for one column sum
//!   giving `dγ`, `dβ`), GELU forward and backward, GELU of `h + b` and the residual add
//!   `r + (h + b)` (a Linear's bias added in the op after it), the attention's scaled row
//!   softmax and its backward step, the split of a packed `qkv` into heads and the packing of
//!   `dqkv`;
//! - BatchNorm in training (the batch's statistics, the running ones moved, an optional ReLU)
//!   and its backward step;
//! - the column sums of a `[rows, c]` tensor (biases' and LayerNorm's parameter gradients);
//! - losses: the L2 normalisation both ways, the contrastive cross-entropy over cosine logits
//!   (two launches forward), the reconstruction losses' row errors and their selected mean
//!   (two forward), MAE's per-patch target normalisation;
//! - optimizer: laying a parameter group's tensors end to end into a flat buffer (eight per
//!   launch), the AdamW step of the flat group, the EMA step of a teacher's tensors (four per
//!   launch).
//!
//! On a GPU a small model's step is bound by kernel launches, not arithmetic (BENCHMARKS.md,
//! "Kernel launches per training step"). Composed from Burn's ops, LayerNorm is 11 launches
//! forward and its closed-form `dx` 8, GELU 5 forward and 7 backward, the softmax with its scale
//! 6, BatchNorm about 20, InfoNCE about 20, AdamW about 15 per group, a flat buffer a fill and a
//! copy per tensor, an EMA step 3 per tensor. The kernels ([`super::cube_kernels`]) compute the
//! same functions in one pass each.
//!
//! Each function here takes tensors of any backend `B` and returns `None` unless `B` is CUDA's
//! or wgpu's CubeCL backend without Burn's fusion (whichever features are on), the tensors are
//! f32 and the kernels are [`enabled`]; the callers ([`super::tensor_ad`] under autodiff,
//! [`super`]'s dispatch without it, the flat AdamW, the EMA update) then use Burn's ops as
//! before. Tested against the CPU backend's values in `runtime/tests/wgpu.rs`.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use std::sync::OnceLock;
#[cfg(any(feature = "cuda", feature = "wgpu"))]
use {super::cube_kernels as k, burn_cubecl::CubeBackend, std::any::TypeId};

/// Whether the kernels run: yes unless `CANC_CUBE_KERNELS=0` (read once), which restores
/// Burn's composed ops, e.g. to count or time both in one binary.
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| crate::backend::env_switch("CANC_CUBE_KERNELS").unwrap_or(true))
}

/// The kernel families turned off by `CANC_CUBE_KERNELS_OFF` (read once), a comma-separated
/// list of `layer_norm`, `batch_norm`, `patch_norm`, `l2norm`, `contrastive`, `patch_error`,
/// `gelu`, `bias`, `col_sum`, `rows`, `softmax`, `heads`, `flat`, `adamw`, `ema`: those take Burn's ops, the rest
/// stay canc's, e.g. to find which family a difference on a device comes from.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(dead_code))]
fn family_on(family: &str) -> bool {
    static OFF: OnceLock<Vec<String>> = OnceLock::new();
    let off = OFF.get_or_init(|| {
        std::env::var("CANC_CUBE_KERNELS_OFF")
            .map(|v| v.split(',').map(|f| f.trim().to_string()).collect())
            .unwrap_or_default()
    });
    family.is_empty() || !off.iter().any(|f| f == family)
}

/// Whether `dtypes` are all f32, the float type these kernels are enabled for. They are written
/// for any float type (accumulating in f32), but f16 and bf16 have not run on a device that has
/// them (lavapipe has neither), so half-precision training keeps Burn's ops for now.
fn all_f32(dtypes: &[DType]) -> bool {
    !dtypes.is_empty() && dtypes.iter().all(|&t| t == DType::F32)
}

/// Runs `$body` with `$r` naming the CubeCL runtime of backend `$b` when `$b` is CUDA's or
/// wgpu's `CubeBackend` (f32 default element, no fusion) and the kernels are enabled, those of
/// `$family` too (`""`: any family).
macro_rules! on_runtime {
    ($b:ty, $r:ident, $family:literal => $body:expr) => {{
        #[cfg(feature = "cuda")]
        if enabled()
            && family_on($family)
            && TypeId::of::<$b>()
                == TypeId::of::<CubeBackend<burn::cubecl::cuda::CudaRuntime, f32, i32, u8>>()
        {
            #[allow(dead_code)]
            type $r = burn::cubecl::cuda::CudaRuntime;
            return $body;
        }
        #[cfg(feature = "wgpu")]
        if enabled()
            && family_on($family)
            && TypeId::of::<$b>()
                == TypeId::of::<CubeBackend<burn::cubecl::wgpu::WgpuRuntime, f32, i32, u32>>()
        {
            #[allow(dead_code)]
            type $r = burn::cubecl::wgpu::WgpuRuntime;
            return $body;
        }
        None
    }};
}

/// LayerNorm of the rows of `x` (`[rows, d]`, biased variance): `(y, x̂, r)` with
/// `y = x̂·γ + β`, `x̂ = (x − μ)·r` and `r = 1/√(σ² + ε)` (`[rows, 1]`), in one launch.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(unused_variables))]
pub fn layer_norm<B: Backend>(
    x: &Tensor<B, 2>,
    gamma: &Tensor<B, 1>,
    beta: &Tensor<B, 1>,
    eps: f64,
) -> Option<(Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 2>)> {
    if !all_f32(&[x.dtype(), gamma.dtype(), beta.dtype()]) {
        return None;
    }
    on_runtime!(B, R, "layer_norm" => Some(k::layer_norm_on::<B, R>(x, gamma, beta, eps)))
}

/// LayerNorm's input gradient `dx = r·(g − mean(g) − x̂·mean(g·x̂))`, `g = dy·γ`, and each
/// row's `dy·x̂` and `dy` side by side (`[rows, 2d]`, whose column sums are `dγ` then `dβ`: one
/// reduction for both), in one launch.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(unused_variables))]
pub fn layer_norm_dx<B: Backend>(
    dy: &Tensor<B, 2>,
    xhat: &Tensor<B, 2>,
    rstd: &Tensor<B, 2>,
    gamma: &Tensor<B, 1>,
) -> Option<(Tensor<B, 2>, Tensor<B, 2>)> {
    if !all_f32(&[dy.dtype(), xhat.dtype(), rstd.dtype(), gamma.dtype()]) {
        return None;
    }
    on_runtime!(B, R, "layer_norm" => Some(k::layer_norm_dx_on::<B, R>(dy, xhat, rstd, gamma)))
}

/// The column sums of `x` (`[rows, c]`) as `[c]`: two launches up to 65,536 rows (a fixed
/// order of additions), where Burn's reduction along the rows took 1–3 ms a call on an H100
/// (BENCHMARKS.md). The biases' and LayerNorm's parameter gradients.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(unused_variables))]
pub fn col_sum<B: Backend>(x: &Tensor<B, 2>) -> Option<Tensor<B, 1>> {
    let [rows, c] = x.dims();
    if rows == 0 || c == 0 || rows.div_ceil(256) > 65_535 || !all_f32(&[x.dtype()]) {
        return None;
    }
    on_runtime!(B, R, "col_sum" => Some(k::col_sum_on::<B, R>(x)))
}

/// The inverse of distinct row indices `flat` (`[m]`, each `< total`): `[total]` with `r` at
/// `flat[r]` and `fill` everywhere else, in one launch after a fill, where Burn's `select_assign`
/// took 1.3 ms on an H100. The gathers that place masked rows and their gradients use it.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(unused_variables))]
pub fn inverse_rows<B: Backend>(
    flat: &Tensor<B, 1, burn::tensor::Int>,
    total: usize,
    fill: usize,
) -> Option<Tensor<B, 1, burn::tensor::Int>> {
    if flat.dtype() != DType::I32 || total > i32::MAX as usize || fill > i32::MAX as usize {
        return None;
    }
    on_runtime!(B, R, "rows" => Some(k::inverse_rows_on::<B, R>(flat, total, fill)))
}

/// A BatchNorm's affine `(γ, β)`, if it has one.
pub type Affine<'a, B> = Option<(&'a Tensor<B, 1>, &'a Tensor<B, 1>)>;

/// What [`batch_norm`] computes from a batch `x` (`[n, c]`).
#[derive(Debug, Clone)]
pub struct BatchNormOut<B: Backend> {
    /// The output `x̂·γ + β` (after ReLU where asked).
    pub y: Tensor<B, 2>,
    /// The normalised batch `x̂ = (x − μ)·r`.
    pub xhat: Tensor<B, 2>,
    /// `r = 1/√(σ² + ε)` per column (biased batch variance).
    pub rstd: Tensor<B, 1>,
    /// The running mean moved towards the batch's: `m·(1 − momentum) + μ·momentum`.
    pub running_mean: Tensor<B, 1>,
    /// The running variance moved towards the batch's unbiased variance.
    pub running_var: Tensor<B, 1>,
}

/// BatchNorm's training forward over the batch of `x` (`[n, c]`, PyTorch's `BatchNorm1d`):
/// normalises each column with the batch's statistics, applies the affine `(γ, β)` if given
/// and then ReLU if `relu`, and moves the `running` (mean, variance) by `momentum`, in one
/// launch instead of about 20.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(unused_variables))]
pub fn batch_norm<B: Backend>(
    x: &Tensor<B, 2>,
    affine: Affine<'_, B>,
    running: (&Tensor<B, 1>, &Tensor<B, 1>),
    eps: f64,
    momentum: f64,
    relu: bool,
) -> Option<BatchNormOut<B>> {
    let [n, c] = x.dims();
    let mut dtypes = vec![x.dtype(), running.0.dtype(), running.1.dtype()];
    let mut fits = n > 0 && running.0.dims() == [c] && running.1.dims() == [c];
    if let Some((g, b)) = affine {
        dtypes.extend([g.dtype(), b.dtype()]);
        fits &= g.dims() == [c] && b.dims() == [c];
    }
    if !fits || !all_f32(&dtypes) {
        return None;
    }
    on_runtime!(B, R, "batch_norm" => Some(k::batch_norm_on::<B, R>(x, affine, running, eps, momentum, relu)))
}

/// BatchNorm's backward step from [`batch_norm`]'s `x̂` and `r`: `(dx, dγ, dβ)`, the upstream
/// gradient `dy` first masked by the ReLU when the forward had one, in one launch.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(unused_variables))]
pub fn batch_norm_dx<B: Backend>(
    dy: &Tensor<B, 2>,
    xhat: &Tensor<B, 2>,
    rstd: &Tensor<B, 1>,
    affine: Affine<'_, B>,
    relu: bool,
) -> Option<(Tensor<B, 2>, Tensor<B, 1>, Tensor<B, 1>)> {
    let mut dtypes = vec![dy.dtype(), xhat.dtype(), rstd.dtype()];
    if let Some((g, b)) = affine {
        dtypes.extend([g.dtype(), b.dtype()]);
    }
    if dy.dims() != xhat.dims() || dy.dims()[0] == 0 || !all_f32(&dtypes) {
        return None;
    }
    on_runtime!(B, R, "batch_norm" => Some(k::batch_norm_dx_on::<B, R>(dy, xhat, rstd, affine, relu)))
}

/// MAE's per-patch target normalisation (`loss::patch_norm`) of the rows of `x` (`[rows, d]`,
/// `d ≥ 2`): `(x − μ)/√(s² + ε)`, `s²` the unbiased variance, in one launch instead of 9.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(unused_variables))]
pub fn patch_norm<B: Backend>(x: &Tensor<B, 2>, eps: f64) -> Option<Tensor<B, 2>> {
    if x.dims()[1] < 2 || !all_f32(&[x.dtype()]) {
        return None;
    }
    on_runtime!(B, R, "patch_norm" => Some(k::patch_norm_on::<B, R>(x, eps)))
}

/// The L2 normalisation of the rows of `x` (`[rows, d]`), torch's `F.normalize`:
/// `y = x/max(‖x‖, eps)`, with what its backward step needs (`[rows, 2]`: `1/max(‖x‖, eps)`
/// and whether the norm was clamped), in one launch instead of 6.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(unused_variables))]
pub fn l2norm<B: Backend>(x: &Tensor<B, 2>, eps: f64) -> Option<(Tensor<B, 2>, Tensor<B, 2>)> {
    if x.dims()[1] == 0 || !all_f32(&[x.dtype()]) {
        return None;
    }
    on_runtime!(B, R, "l2norm" => Some(k::l2norm_on::<B, R>(x, eps)))
}

/// The gradient of [`l2norm`] from its output `y` and `info`: `dx = (dy − y·Σ(dy·y))/‖x‖`
/// (`dy/eps` where the norm was clamped), in one launch.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(unused_variables))]
pub fn l2norm_dx<B: Backend>(
    dy: &Tensor<B, 2>,
    y: &Tensor<B, 2>,
    info: &Tensor<B, 2>,
) -> Option<Tensor<B, 2>> {
    let fits = dy.dims() == y.dims() && info.dims() == [y.dims()[0], 2];
    if !fits || !all_f32(&[dy.dtype(), y.dtype(), info.dtype()]) {
        return None;
    }
    on_runtime!(B, R, "l2norm" => Some(k::l2norm_dx_on::<B, R>(dy, y, info)))
}

/// A contrastive cross-entropy on cosine logits `s` (`[rows, cols]`): row `i`'s positive is
/// column `(i + shift) mod cols`, its logits `s/temperature` over every column but `i` with
/// `self_mask` (SimCLR's NT-Xent) or all of them (MoCo v3's query-key form), and the loss is
/// `scale·mean_i (logsumexp_i − logit_{i,positive})`.
#[derive(Debug, Clone, Copy)]
pub struct Ce {
    /// The positive's column offset from the row.
    pub shift: usize,
    /// The softmax temperature τ.
    pub temperature: f64,
    /// Whether each row's own column is left out.
    pub self_mask: bool,
    /// The factor on the mean.
    pub scale: f64,
}

/// [`Ce`]'s loss (`[1]`) and each row's `logsumexp` (`[rows]`, for the backward step), in two
/// launches instead of about 20.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(unused_variables))]
pub fn contrastive_ce<B: Backend>(
    s: &Tensor<B, 2>,
    ce: Ce,
) -> Option<(Tensor<B, 1>, Tensor<B, 1>)> {
    let [rows, cols] = s.dims();
    let fits = rows > 0 && cols > usize::from(ce.self_mask) && ce.temperature > 0.0;
    if !fits || !all_f32(&[s.dtype()]) {
        return None;
    }
    on_runtime!(B, R, "contrastive" => Some(k::contrastive_ce_on::<B, R>(s, ce)))
}

/// The gradient of [`contrastive_ce`]'s loss in `s`, from the loss's gradient `dl` (`[1]`) and
/// the rows' `lse`: `dl·scale/rows·(softmax − onehot)/τ`, in one launch.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(unused_variables))]
pub fn contrastive_ce_dx<B: Backend>(
    s: &Tensor<B, 2>,
    lse: &Tensor<B, 1>,
    dl: &Tensor<B, 1>,
    ce: Ce,
) -> Option<Tensor<B, 2>> {
    let fits = lse.dims() == [s.dims()[0]] && dl.dims() == [1];
    if !fits || !all_f32(&[s.dtype(), lse.dtype(), dl.dtype()]) {
        return None;
    }
    on_runtime!(B, R, "contrastive" => Some(k::contrastive_ce_dx_on::<B, R>(s, lse, dl, ce)))
}

/// The reconstruction losses' reduction (`loss::mse` and `loss::l1` on patches): each row's
/// mean error `mean_j (p − t)²` (or `|p − t|` with `l1`) of `pred` against `target` (`[rows,
/// d]`), then the mean over the rows where `select` (`[rows]`, 1.0 or 0.0) holds, `Σ err·sel /
/// max(Σ sel, f32::MIN_POSITIVE)` (over all rows without it). Returns the loss and the
/// denominator (`[1]` each), in two launches instead of about 12.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(unused_variables))]
pub fn patch_error<B: Backend>(
    pred: &Tensor<B, 2>,
    target: &Tensor<B, 2>,
    select: Option<&Tensor<B, 1>>,
    l1: bool,
) -> Option<(Tensor<B, 1>, Tensor<B, 1>)> {
    let [rows, d] = pred.dims();
    let mut dtypes = vec![pred.dtype(), target.dtype()];
    dtypes.extend(select.map(Tensor::dtype));
    let fits = rows > 0
        && d > 0
        && target.dims() == [rows, d]
        && select.is_none_or(|s| s.dims() == [rows]);
    if !fits || !all_f32(&dtypes) {
        return None;
    }
    on_runtime!(B, R, "patch_error" => Some(k::patch_error_on::<B, R>(pred, target, select, l1)))
}

/// The gradient of [`patch_error`]'s loss in `pred`, from `dl` (the loss's gradient) and
/// the denominator `den` (`[1]` each):
/// `dloss·sel/den · 2(p − t)/d` (or `sign(p − t)/d` with `l1`), in one launch. The target's
/// gradient is its negation.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(unused_variables))]
pub fn patch_error_dx<B: Backend>(
    pred: &Tensor<B, 2>,
    target: &Tensor<B, 2>,
    select: Option<&Tensor<B, 1>>,
    (dl, den): (&Tensor<B, 1>, &Tensor<B, 1>),
    l1: bool,
) -> Option<Tensor<B, 2>> {
    let mut dtypes = vec![pred.dtype(), target.dtype(), dl.dtype(), den.dtype()];
    dtypes.extend(select.map(Tensor::dtype));
    let fits = pred.dims() == target.dims() && dl.dims() == [1] && den.dims() == [1];
    if !fits || !all_f32(&dtypes) {
        return None;
    }
    on_runtime!(B, R, "patch_error" => Some(k::patch_error_dx_on::<B, R>(pred, target, select, (dl, den), l1)))
}

/// Exact GELU of a flat `x`: `(x·Φ(x), Φ(x))`, `Φ(x) = (1 + erf(x/√2))/2`, in one launch.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(unused_variables))]
pub fn gelu<B: Backend>(x: &Tensor<B, 1>) -> Option<(Tensor<B, 1>, Tensor<B, 1>)> {
    if !all_f32(&[x.dtype()]) {
        return None;
    }
    on_runtime!(B, R, "gelu" => Some(k::gelu_on::<B, R>(x)))
}

/// Exact GELU of `h + b` (`h` `[rows, width]`, `b` `[width]` broadcast over the rows: a
/// Linear's bias added in the activation's launch): `[y, x, Φ(x)]` with `x = h + b`,
/// `y = x·Φ(x)`, in one launch instead of two.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(unused_variables))]
pub fn bias_gelu<B: Backend>(h: &Tensor<B, 2>, b: &Tensor<B, 1>) -> Option<[Tensor<B, 2>; 3]> {
    if b.dims()[0] != h.dims()[1] || !all_f32(&[h.dtype(), b.dtype()]) {
        return None;
    }
    on_runtime!(B, R, "bias" => Some(k::bias_gelu_on::<B, R>(h, b)))
}

/// The residual add `r + (h + b)` (`r`, `h` `[rows, width]`, `b` `[width]` broadcast over the
/// rows: a Linear's bias added in the residual's launch), in one launch instead of two.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(unused_variables))]
pub fn bias_residual<B: Backend>(
    r: &Tensor<B, 2>,
    h: &Tensor<B, 2>,
    b: &Tensor<B, 1>,
) -> Option<Tensor<B, 2>> {
    let fits = r.dims() == h.dims() && b.dims()[0] == h.dims()[1];
    if !fits || !all_f32(&[r.dtype(), h.dtype(), b.dtype()]) {
        return None;
    }
    on_runtime!(B, R, "bias" => Some(k::bias_residual_on::<B, R>(r, h, b)))
}

/// GELU's input gradient `dy·(Φ(x) + x·φ(x))`, `φ(x) = e^{−x²/2}/√(2π)`, in one launch.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(unused_variables))]
pub fn gelu_dx<B: Backend>(
    dy: &Tensor<B, 1>,
    x: &Tensor<B, 1>,
    phi: &Tensor<B, 1>,
) -> Option<Tensor<B, 1>> {
    if !all_f32(&[dy.dtype(), x.dtype(), phi.dtype()]) {
        return None;
    }
    on_runtime!(B, R, "gelu" => Some(k::gelu_dx_on::<B, R>(dy, x, phi)))
}

/// `softmax(s·scale)` over the last dimension of `s`, in one launch.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(unused_variables))]
pub fn softmax<B: Backend, const D: usize>(s: &Tensor<B, D>, scale: f64) -> Option<Tensor<B, D>> {
    if !all_f32(&[s.dtype()]) || s.dims()[D - 1] == 0 {
        return None;
    }
    on_runtime!(B, R, "softmax" => Some(k::softmax_on::<B, R, D>(s, scale)))
}

/// The heads of `x` (`[B, T, parts·heads·dh]`, the last dimension laid out `(parts, heads,
/// dh)`) as one contiguous `[parts, B, heads, T, dh]`, in one launch.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(unused_variables))]
pub fn split_heads<B: Backend>(
    x: &Tensor<B, 3>,
    parts: usize,
    heads: usize,
) -> Option<Tensor<B, 5>> {
    let width = x.dims()[2];
    if !all_f32(&[x.dtype()]) || parts * heads == 0 || !width.is_multiple_of(parts * heads) {
        return None;
    }
    on_runtime!(B, R, "heads" => Some(k::split_heads_on::<B, R>(x, parts, heads)))
}

/// `dq`, `dk`, `dv` (`[B, heads, T, dh]` each) packed as a `qkv` gradient `[B, T, 3·heads·dh]`
/// (the inverse of [`split_heads`] with three parts), in one launch.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(unused_variables))]
pub fn pack_heads<B: Backend>(
    dq: &Tensor<B, 4>,
    dk: &Tensor<B, 4>,
    dv: &Tensor<B, 4>,
) -> Option<Tensor<B, 3>> {
    let same = dq.dims() == dk.dims() && dq.dims() == dv.dims();
    if !same || !all_f32(&[dq.dtype(), dk.dtype(), dv.dtype()]) {
        return None;
    }
    on_runtime!(B, R, "heads" => Some(k::pack_heads_on::<B, R>(dq, dk, dv)))
}

/// The backward step of `p = softmax(s·scale)` over the last dimension: `ds = p ⊙ (dp −
/// rowsum(dp ⊙ p))·scale`, in one launch.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(unused_variables))]
pub fn softmax_dx<B: Backend, const D: usize>(
    p: &Tensor<B, D>,
    dp: &Tensor<B, D>,
    scale: f64,
) -> Option<Tensor<B, D>> {
    let ok = p.dims() == dp.dims() && p.dims()[D - 1] > 0;
    if !ok || !all_f32(&[p.dtype(), dp.dtype()]) {
        return None;
    }
    on_runtime!(B, R, "softmax" => Some(k::softmax_dx_on::<B, R, D>(p, dp, scale)))
}

/// `pieces` laid end to end in one tensor of `total` elements, piece `i` followed by zeros up
/// to `padded[i]` elements (`Σ padded = total`), in one launch per eight pieces instead of a
/// fill and a copy per piece.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(unused_variables))]
pub fn lay_end_to_end<B: Backend>(
    pieces: &[Tensor<B, 1>],
    padded: &[usize],
    total: usize,
) -> Option<Tensor<B, 1>> {
    let fits = pieces.len() == padded.len()
        && padded.iter().sum::<usize>() == total
        && pieces.iter().zip(padded).all(|(t, &p)| t.dims()[0] <= p);
    let dtypes: Vec<DType> = pieces.iter().map(Tensor::dtype).collect();
    if pieces.is_empty() || !fits || !all_f32(&dtypes) {
        return None;
    }
    on_runtime!(B, R, "flat" => Some(k::lay_end_to_end_on::<B, R>(pieces, padded, total)))
}

/// One AdamW step of flat weights `p` with gradient `g` and moments `m1`, `m2` (all of one
/// length), Burn's `AdamW` arithmetic with the scalars of `s` (whose `first` is ignored: zero
/// moments give the first step): `[weights, first moment, second moment]` after it, in one
/// launch instead of about 15.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(unused_variables))]
pub fn adamw<B: Backend>(
    [p, g, m1, m2]: [&Tensor<B, 1>; 4],
    s: &super::inplace::AdamWStep,
) -> Option<[Tensor<B, 1>; 3]> {
    let fits = [g, m1, m2].iter().all(|t| t.dims() == p.dims());
    if !fits || !all_f32(&[p.dtype(), g.dtype(), m1.dtype(), m2.dtype()]) {
        return None;
    }
    on_runtime!(B, R, "adamw" => Some(k::adamw_on::<B, R>([p, g, m1, m2], s)))
}

/// Whether canc's kernels run on backend `B` (CUDA's or wgpu's CubeCL backend, enabled).
pub fn runs_on<B: Backend>() -> bool {
    #[cfg_attr(
        not(any(feature = "cuda", feature = "wgpu")),
        allow(clippy::extra_unused_type_parameters)
    )]
    fn on<B: Backend>() -> Option<()> {
        on_runtime!(B, R, "" => Some(()))
    }
    on::<B>().is_some()
}

/// The EMA step `t·m + s·(1 − m)` of each teacher tensor in `teacher` towards the source tensor
/// of the same place in `source` (flat, of equal lengths), in one launch per four tensors
/// instead of three per tensor.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(unused_variables))]
pub fn ema_many<B: Backend>(
    teacher: &[Tensor<B, 1>],
    source: &[Tensor<B, 1>],
    m: f64,
) -> Option<Vec<Tensor<B, 1>>> {
    let fits = teacher.len() == source.len()
        && teacher
            .iter()
            .zip(source)
            .all(|(t, s)| t.dims() == s.dims());
    let dtypes: Vec<DType> = teacher.iter().chain(source).map(Tensor::dtype).collect();
    if teacher.is_empty() || !fits || !all_f32(&dtypes) {
        return None;
    }
    on_runtime!(B, R, "ema" => Some(k::ema_many_on::<B, R>(teacher, source, m)))
}
