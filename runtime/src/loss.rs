//! Loss functions and the tensor ops they need (patchify, per-patch normalisation, L2 norm).
//!
//! Every loss returns a rank-1 tensor of shape `[1]`. Row counts are read from the inputs, so the
//! batch size may change between calls. Contrastive losses compute log-softmax with the row max
//! subtracted and exclude self-similarity with a large finite negative logit, never −∞, so their
//! gradients stay finite.
//!
//! Shapes are the caller's contract (the plan fixes them); a mismatch panics inside Burn.

use crate::ops::cube::Ce;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor};

/// `eps` of torch's `F.normalize`: norms below it are clamped to it.
const NORM_EPS: f64 = 1e-12;

/// A logit that `exp` turns into exactly 0 against any cosine logit in `[−1/τ, 1/τ]`, and that
/// stays finite in f16 for any τ above 2·10⁻⁵.
fn masked_logit(temperature: f64) -> f64 {
    -(1.0 / temperature + 1.0e4)
}

/// `[n, n]` mask, `true` on the diagonal.
fn diagonal<B: Backend>(n: usize, device: &B::Device) -> Tensor<B, 2, Bool> {
    Tensor::<B, 2, Bool>::diag_mask([n, n], 0, device).bool_not()
}

/// L2-normalise the last dim (eps 1e-12 like torch `F.normalize`).
///
/// The norm is clamped as `sqrt(max(Σx², eps²))`, which equals torch's `max(‖x‖, eps)` and keeps
/// the gradient finite at a zero vector.
pub fn l2norm<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if crate::ops::gpu_kernels::<B>() {
        let dims = x.dims();
        let d = dims[D - 1];
        let rows = dims.iter().product::<usize>() / d.max(1);
        if let Some(y) = crate::ops::l2norm(&x.clone().reshape([rows, d]), NORM_EPS) {
            return y.reshape(dims);
        }
    }
    let norm = x
        .clone()
        .square()
        .sum_dim(D - 1)
        .clamp_min(NORM_EPS * NORM_EPS)
        .sqrt();
    x.div(norm)
}

/// Cosine-similarity logits `z·zᵀ/τ` of L2-normalised rows with the diagonal masked out.
fn self_masked_logits<B: Backend>(z: Tensor<B, 2>, temperature: f64) -> Tensor<B, 2> {
    let [n, _] = z.dims();
    let z = l2norm(z);
    let logits = z.clone().matmul(z.transpose()).div_scalar(temperature);
    let mask = diagonal::<B>(n, &logits.device());
    logits.mask_fill(mask, masked_logit(temperature))
}

/// NT-Xent over 2N embeddings of two views: anchors are all 2N rows, the positive of row i of `a`
/// is row i of `b` and vice versa, negatives are the other 2N−2 rows (self-similarity excluded),
/// cosine similarity / temperature.
///
/// `sum_views = false`: mean over the 2N anchors; `true`: SimCLR's sum over the two views, i.e.
/// 2 × that mean.
pub fn infonce<B: Backend>(
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
    temperature: f64,
    sum_views: bool,
) -> Tensor<B, 1> {
    let [n, _] = a.dims();
    let device = a.device();
    if crate::ops::gpu_kernels::<B>() {
        let z = l2norm(Tensor::cat(vec![a.clone(), b.clone()], 0));
        let ce = Ce {
            shift: n,
            temperature,
            self_mask: true,
            scale: if sum_views { 2.0 } else { 1.0 },
        };
        if let Some(loss) = crate::ops::contrastive_ce(&z.clone().matmul(z.transpose()), ce) {
            return loss;
        }
    }
    let log_prob = log_softmax(
        self_masked_logits(Tensor::cat(vec![a, b], 0), temperature),
        1,
    );
    // Row i < N pairs with row i + N, row i ≥ N with row i − N.
    let n = n as i64;
    let positive = Tensor::cat(
        vec![
            Tensor::<B, 1, Int>::arange(n..2 * n, &device),
            Tensor::<B, 1, Int>::arange(0..n, &device),
        ],
        0,
    )
    .unsqueeze_dim::<2>(1);
    let loss = log_prob.gather(1, positive).mean().neg();
    if sum_views {
        loss.mul_scalar(2.0)
    } else {
        loss
    }
}

/// MoCo v3 / CMAE query→key InfoNCE: `q` `[N, d]` and `k` `[N, d]` are L2-normalised inside;
/// logits `q·kᵀ/τ`, targets the diagonal, cross-entropy mean; times 2τ if `scale_2tau`.
///
/// Keys carry gradient unless the caller detaches them (MoCo's keys come from the momentum branch).
pub fn infonce_qk<B: Backend>(
    q: Tensor<B, 2>,
    k: Tensor<B, 2>,
    temperature: f64,
    scale_2tau: bool,
) -> Tensor<B, 1> {
    let [n, _] = q.dims();
    let device = q.device();
    let cosines = l2norm(q).matmul(l2norm(k).transpose());
    if crate::ops::gpu_kernels::<B>() {
        let ce = Ce {
            shift: 0,
            temperature,
            self_mask: false,
            scale: if scale_2tau { 2.0 * temperature } else { 1.0 },
        };
        if let Some(loss) = crate::ops::contrastive_ce(&cosines, ce) {
            return loss;
        }
    }
    let logits = cosines.div_scalar(temperature);
    let target = Tensor::<B, 1, Int>::arange(0..n as i64, &device).unsqueeze_dim::<2>(1);
    let loss = log_softmax(logits, 1).gather(1, target).mean().neg();
    if scale_2tau {
        loss.mul_scalar(2.0 * temperature)
    } else {
        loss
    }
}

/// SupCon (Khosla et al. 2020, "L_out" form): 2N anchors from the two views (rows L2-normalised
/// inside), positives all other rows with the same label, denominator all other rows; the mean
/// over anchors is scaled by `temperature / base_temperature`.
///
/// `labels` `[N]` labels the rows of both `a` and `b`. Every anchor has at least one positive (its
/// other view), so with all-distinct labels this is [`infonce`]'s mean form times τ/τ_base.
pub fn supcon<B: Backend>(
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
    labels: Tensor<B, 1, Int>,
    temperature: f64,
    base_temperature: f64,
) -> Tensor<B, 1> {
    let [n, _] = a.dims();
    let rows = 2 * n;
    let device = a.device();
    let log_prob = log_softmax(
        self_masked_logits(Tensor::cat(vec![a, b], 0), temperature),
        1,
    );
    let labels = Tensor::cat(vec![labels.clone(), labels], 0);
    let same = labels
        .clone()
        .unsqueeze_dim::<2>(1)
        .expand([rows, rows])
        .equal(labels.unsqueeze_dim::<2>(0).expand([rows, rows]));
    let positives = same
        .bool_and(diagonal::<B>(rows, &device).bool_not())
        .float();
    // The masked diagonal of `log_prob` is finite, so 0 × it is 0.
    let mean_log_prob_pos = log_prob
        .mul(positives.clone())
        .sum_dim(1)
        .div(positives.sum_dim(1));
    mean_log_prob_pos
        .mean()
        .mul_scalar(-temperature / base_temperature)
}

/// Mean over the selected patches of a per-patch error `[B, N]`; `select` `[B, N]` holds 1.0
/// where a patch counts (None: all). An empty selection gives 0, not NaN.
fn patch_mean<B: Backend>(per_patch: Tensor<B, 2>, select: Option<Tensor<B, 2>>) -> Tensor<B, 1> {
    match select {
        None => per_patch.mean(),
        Some(select) => per_patch
            .mul(select.clone())
            .sum()
            .div(select.sum().clamp_min(f64::from(f32::MIN_POSITIVE))),
    }
}

/// `[B, N, D]` → `[B, N]` by the mean over the last dim.
fn mean_last<B: Backend>(x: Tensor<B, 3>) -> Tensor<B, 2> {
    x.mean_dim(2).squeeze_dim::<2>(2)
}

/// Per-patch mean over the last dim of (pred − target)², then the mean over the selected patches:
/// `select` `[B, N]` holds 1.0 where a patch counts (None: all). MAE's loss is
/// `(loss * mask).sum() / mask.sum()`; an empty selection gives 0.
pub fn mse<B: Backend>(
    pred: Tensor<B, 3>,
    target: Tensor<B, 3>,
    select: Option<Tensor<B, 2>>,
) -> Tensor<B, 1> {
    fused_patch_error(&pred, &target, select.as_ref(), false)
        .unwrap_or_else(|| patch_mean(mean_last(pred.sub(target).square()), select))
}

/// [`mse`] or [`l1`] as one GPU kernel and its reduction ([`crate::ops::patch_error`]) where
/// canc's kernels run; `None` elsewhere.
fn fused_patch_error<B: Backend>(
    pred: &Tensor<B, 3>,
    target: &Tensor<B, 3>,
    select: Option<&Tensor<B, 2>>,
    l1: bool,
) -> Option<Tensor<B, 1>> {
    let [b, n, d] = pred.dims();
    if !crate::ops::gpu_kernels::<B>()
        || target.dims() != [b, n, d]
        || select.is_some_and(|s| s.dims() != [b, n])
    {
        return None;
    }
    let rows = |t: &Tensor<B, 3>| t.clone().reshape([b * n, d]);
    let select = select.map(|s| s.clone().reshape([b * n]));
    crate::ops::patch_error(&rows(pred), &rows(target), select.as_ref(), l1)
}

/// As [`mse`] with |pred − target| in place of the square.
pub fn l1<B: Backend>(
    pred: Tensor<B, 3>,
    target: Tensor<B, 3>,
    select: Option<Tensor<B, 2>>,
) -> Tensor<B, 1> {
    fused_patch_error(&pred, &target, select.as_ref(), true)
        .unwrap_or_else(|| patch_mean(mean_last(pred.sub(target).abs()), select))
}

/// MSE between embeddings `[B, d]` (mean over all elements).
pub fn mse_embedding<B: Backend>(a: Tensor<B, 2>, b: Tensor<B, 2>) -> Tensor<B, 1> {
    a.sub(b).square().mean()
}

/// Negative cosine similarity of the rows of `a` and `b` `[B, d]`, averaged over the batch.
pub fn cosine<B: Backend>(a: Tensor<B, 2>, b: Tensor<B, 2>) -> Tensor<B, 1> {
    l2norm(a).mul(l2norm(b)).sum_dim(1).mean().neg()
}

/// Images `[B, C, H, W]` → patches `[B, (H/p)·(W/p), p·p·C]`, patches in row-major grid order,
/// each patch's values in `(p1 p2 c)` order (MAE's `einsum('nchpwq->nhwpqc')`).
///
/// # Panics
/// If `patch` is 0 or does not divide H and W.
pub fn patchify<B: Backend>(images: Tensor<B, 4>, patch: usize) -> Tensor<B, 3> {
    let [b, c, h, w] = images.dims();
    assert!(
        patch > 0 && h.is_multiple_of(patch) && w.is_multiple_of(patch),
        "patchify: patch {patch} must divide the image size {h}×{w}"
    );
    let (gh, gw) = (h / patch, w / patch);
    images
        .reshape([b, c, gh, patch, gw, patch])
        .permute([0, 2, 4, 3, 5, 1])
        .reshape([b, gh * gw, patch * patch * c])
}

/// Per-patch normalisation of targets (MAE `norm_pix_loss`): `(x − mean) / sqrt(var + eps)`
/// over the last dim, var unbiased (torch `.var` default; a last dim of 1 gives NaN as in torch).
pub fn patch_norm<B: Backend>(patches: Tensor<B, 3>, eps: f64) -> Tensor<B, 3> {
    let [b, n, d] = patches.dims();
    if crate::ops::gpu_kernels::<B>()
        && let Some(y) = crate::ops::patch_norm(&patches.clone().reshape([b * n, d]), eps)
    {
        return y.reshape([b, n, d]);
    }
    let (var, mean) = patches.clone().var_mean(2);
    patches.sub(mean).div(var.add_scalar(eps).sqrt())
}
