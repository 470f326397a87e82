//! Fused ops with their own backward step written in Burn tensor ops, for autodiff over any
//! backend (the GPU path; the CPU has its own kernels in [`super::kernels`]).
//!
//! Burn's autodiff differentiates a composed op one tensor op at a time, and on a GPU every op
//! is a kernel launch. LayerNorm composed of tensor ops ([`super::reference::layer_norm`]) is
//! 11 ops forward and, counted from burn-autodiff 0.21's backward rules (broadcast reductions,
//! the division's and square root's gradients, the adds where `x` and the mean fan out), about
//! 26 more backward. [`layer_norm`] here is 10 forward and 11 backward, from the closed-form
//! gradient of the normalised `x̂ = (x − μ)·r`, `r = 1/√(σ² + ε)`:
//! `dx = r·(g − mean(g) − x̂·mean(g·x̂))` with `g = dy·γ`, `dγ = Σ dy·x̂`, `dβ = Σ dy`.
//!
//! Attention of a packed `qkv` goes, under Burn's autodiff, through its fallback decomposition
//! (10 ops and the 4 copies that unpack q, k, v and pack the output) and about 30 backward ops
//! (the softmax's max, clamps, division and fan-out, and each `narrow` of q, k, v scattered
//! back into a zero-filled `dqkv` and summed). [`attention`] keeps the probabilities `P` and
//! writes the backward in closed form: `dV = Pᵀ·dO`, `dP = dO·Vᵀ`, `dS = P ⊙ (dP − rowsum(dP ⊙
//! P))·scale`, `dQ = dS·K`, `dK = dSᵀ·Q`, stacked into `dqkv` at once: about 13 ops forward
//! and 14 backward (counted from the code).
//!
//! GELU `x·Φ(x)` (exact, through `erf`) is 5 ops forward and, under autodiff, about 11
//! backward; [`gelu`] keeps `x` and `Φ(x)` and computes `dx = dy·(Φ(x) + x·φ(x))`,
//! `φ(x) = e^{−x²/2}/√(2π)`, in 7.
//!
//! On CUDA and wgpu, canc's own kernels ([`super::cube`]) compute the LayerNorm forward and
//! `dx`, the attention's scaled softmax and its backward step, the split of `qkv` into heads and
//! the packing of `dqkv`, and GELU both ways, in one launch each (LayerNorm's `dγ` and `dβ` are
//! one column sum of `[dy·x̂ | dy]`); the tensor-op forms above are what other backends, other
//! dtypes and `CANC_CUBE_KERNELS=0` run.

use burn::backend::Autodiff;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorPrimitive};

use super::finish;

type Prim<B> = <Autodiff<B> as burn::tensor::backend::BackendTypes>::FloatTensorPrimitive;

fn inner<B: Backend, const D: usize>(p: B::FloatTensorPrimitive) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

fn raw<B: Backend, const D: usize>(t: Tensor<B, D>) -> B::FloatTensorPrimitive {
    t.into_primitive().tensor()
}

/// The column sums of `x` (`[rows, c]`) as `[c]`: canc's kernel ([`super::cube::col_sum`])
/// where it runs, else Burn's reduction.
fn col_sums<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 1> {
    let c = x.dims()[1];
    super::cube::col_sum(&x).unwrap_or_else(|| x.sum_dim(0).reshape([c]))
}

/// Registers the gradients of `h + b` (`b` broadcast over the rows of `h`: a Linear's bias)
/// given `dx`, the gradient of the sum: `dx` itself for `h` and its column sums for `b`.
fn register_bias_add<B: Backend>(
    grads: &mut Gradients,
    h: Option<NodeId>,
    b: Option<NodeId>,
    dx: Tensor<B, 2>,
) {
    if let Some(id) = b {
        grads.register::<B>(id, raw(col_sums(dx.clone())));
    }
    if let Some(id) = h {
        grads.register::<B>(id, raw(dx));
    }
}

/// Whether autodiff tracks `p` (a gradient may flow back through it).
fn tracked<B: Backend>(p: &Prim<B>) -> bool {
    !p.node.requirement.is_none()
}

/// MAE's per-patch target normalisation of the rows of `x` through canc's kernel
/// ([`super::cube::patch_norm`]) when `x` needs no gradient (a target made from the data);
/// `None` otherwise, or where the kernel does not run.
pub fn patch_norm<B: Backend>(
    x: &Tensor<Autodiff<B>, 2>,
    eps: f64,
) -> Option<Tensor<Autodiff<B>, 2>> {
    let xp: Prim<B> = x.clone().into_primitive().tensor();
    if tracked(&xp) {
        return None;
    }
    super::cube::patch_norm(&inner::<B, 2>(xp.primitive), eps).map(Tensor::from_inner)
}

/// What a LayerNorm backward step keeps: `x̂` (`[rows, d]`), `r` (`[rows, 1]`) and `γ`.
#[derive(Debug, Clone)]
pub struct LnState<B: Backend> {
    xhat: B::FloatTensorPrimitive,
    rstd: B::FloatTensorPrimitive,
    gamma: B::FloatTensorPrimitive,
}

#[derive(Debug)]
struct Ln;

impl<B: Backend> Backward<B, 3> for Ln {
    type State = LnState<B>;

    fn backward(self, ops: Ops<LnState<B>, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px, pg, pb] = ops.parents;
        let dy: Tensor<B, 2> = inner(grads.consume::<B>(&ops.node));
        let s = ops.state;
        let xhat: Tensor<B, 2> = inner(s.xhat);
        let d = xhat.dims()[1];
        let gamma: Tensor<B, 1> = inner(s.gamma);
        let rstd: Tensor<B, 2> = inner(s.rstd);
        if let Some(p) = &px
            && let Some((dx, sums)) = super::cube::layer_norm_dx(&dy, &xhat, &rstd, &gamma)
        {
            grads.register::<B>(p.id, raw(dx));
            if pg.is_some() || pb.is_some() {
                // One reduction for both: the columns of `[dy·x̂ | dy]`.
                let both = col_sums(sums);
                if let Some(p) = pg {
                    grads.register::<B>(p.id, raw(both.clone().narrow(0, 0, d)));
                }
                if let Some(p) = pb {
                    grads.register::<B>(p.id, raw(both.narrow(0, d, d)));
                }
            }
            return;
        }
        if let Some(p) = pg {
            let dg = col_sums(dy.clone() * xhat.clone());
            grads.register::<B>(p.id, raw(dg));
        }
        if let Some(p) = pb {
            grads.register::<B>(p.id, raw(col_sums(dy.clone())));
        }
        if let Some(p) = px {
            let g = dy * gamma.unsqueeze::<2>();
            let m1 = g.clone().mean_dim(1);
            let m2 = (g.clone() * xhat.clone()).mean_dim(1);
            let dx = (g - m1 - xhat * m2) * rstd;
            grads.register::<B>(p.id, raw(dx));
        }
    }
}

/// LayerNorm over the last dimension (`(x − mean)/√(var + eps)·gamma + beta`, biased variance)
/// under autodiff, with the closed-form backward step above. Without `beta` it is
/// [`super::reference::layer_norm`] (Burn's LayerNorm always has one).
pub fn layer_norm<B: Backend, const D: usize>(
    x: Tensor<Autodiff<B>, D>,
    gamma: Tensor<Autodiff<B>, 1>,
    beta: Option<Tensor<Autodiff<B>, 1>>,
    eps: f64,
) -> Tensor<Autodiff<B>, D> {
    let Some(beta) = beta else {
        return super::reference::layer_norm(x, gamma, None, eps);
    };
    let dims = x.dims();
    let d = dims[D - 1];
    let rows = dims.iter().product::<usize>() / d.max(1);
    let xp: Prim<B> = x.reshape([rows, d]).into_primitive().tensor();
    let gp: Prim<B> = gamma.into_primitive().tensor();
    let bp: Prim<B> = beta.into_primitive().tensor();

    let xi: Tensor<B, 2> = inner(xp.primitive.clone());
    let g: Tensor<B, 1> = inner(gp.primitive.clone());
    let b: Tensor<B, 1> = inner(bp.primitive.clone());
    let kernel = super::cube::layer_norm(&xi, &g, &b, eps);
    let (y, xhat, rstd) = kernel.unwrap_or_else(|| {
        let xc = xi.clone() - xi.mean_dim(1);
        let rstd = xc
            .clone()
            .square()
            .mean_dim(1)
            .add_scalar(eps)
            .sqrt()
            .recip();
        let xhat = xc * rstd.clone();
        let y = xhat.clone() * g.clone().unsqueeze::<2>() + b.unsqueeze::<2>();
        (y, xhat, rstd)
    });

    let state = || LnState {
        xhat: raw(xhat),
        rstd: raw(rstd),
        gamma: raw(g),
    };
    let y = finish(Ln, [&xp, &gp, &bp], state, raw(y));
    Tensor::<Autodiff<B>, 2>::from_primitive(TensorPrimitive::Float(y)).reshape(dims)
}

/// What an attention backward step keeps: q, k, v (`[B, heads, T, dh]`), the probabilities
/// (`[B, heads, T, T]`) and the score scale.
#[derive(Debug, Clone)]
pub struct AttnState<B: Backend> {
    q: B::FloatTensorPrimitive,
    k: B::FloatTensorPrimitive,
    v: B::FloatTensorPrimitive,
    p: B::FloatTensorPrimitive,
    scale: f64,
}

#[derive(Debug)]
struct Attn;

impl<B: Backend> Backward<B, 1> for Attn {
    type State = AttnState<B>;

    fn backward(self, ops: Ops<AttnState<B>, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let dy: Tensor<B, 3> = inner(grads.consume::<B>(&ops.node));
        let Some(parent) = parent else {
            return;
        };
        let s = ops.state;
        let (q, k, v, p): (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) =
            (inner(s.q), inner(s.k), inner(s.v), inner(s.p));
        let [b, heads, t, dh] = q.dims();
        // [B, T, d] -> [B, heads, T, dh]
        let d_o = match super::cube::split_heads(&dy, 1, heads) {
            Some(o) => o.reshape([b, heads, t, dh]),
            None => dy.reshape([b, t, heads, dh]).swap_dims(1, 2),
        };
        let dv = p.clone().swap_dims(2, 3).matmul(d_o.clone());
        let dp = d_o.matmul(v.swap_dims(2, 3));
        let ds = super::cube::softmax_dx(&p, &dp, s.scale).unwrap_or_else(|| {
            let row = (dp.clone() * p.clone()).sum_dim(3);
            (p * (dp - row)).mul_scalar(s.scale)
        });
        let dq = ds.clone().matmul(k);
        let dk = ds.swap_dims(2, 3).matmul(q);
        // [3, B, heads, T, dh] -> [B, T, 3, heads, dh] -> [B, T, 3d]
        let dqkv = super::cube::pack_heads(&dq, &dk, &dv).unwrap_or_else(|| {
            Tensor::stack::<5>(vec![dq, dk, dv], 0)
                .permute([1, 3, 0, 2, 4])
                .reshape([b, t, 3 * heads * dh])
        });
        grads.register::<B>(parent.id, raw(dqkv));
    }
}

/// Multi-head self-attention `softmax(q·kᵀ/√dh)·v` of a packed `qkv` `[B, T, 3d]` (last
/// dimension laid out `(3, heads, d/heads)`) → `[B, T, d]` under autodiff, with the
/// closed-form backward step above.
pub fn attention<B: Backend>(qkv: Tensor<Autodiff<B>, 3>, heads: usize) -> Tensor<Autodiff<B>, 3> {
    let xp: Prim<B> = qkv.into_primitive().tensor();
    let (y, s) = attention_forward(inner::<B, 3>(xp.primitive.clone()), heads);
    let y = finish(Attn, [&xp], || s, raw(y));
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// The attention of a packed `qkv` on backend `B` itself, with what its backward step keeps:
/// canc's kernels split the heads and compute the softmax where they run ([`super::cube`]),
/// Burn's ops otherwise. Without autodiff (an EMA teacher, evaluation) this is the whole op.
pub fn attention_forward<B: Backend>(
    qkv: Tensor<B, 3>,
    heads: usize,
) -> (Tensor<B, 3>, AttnState<B>) {
    let [b, t, w] = qkv.dims();
    let dh = w / 3 / heads;
    // [B, T, 3d] -> [3, B, heads, T, dh]
    let x = super::cube::split_heads(&qkv, 3, heads)
        .unwrap_or_else(|| qkv.reshape([b, t, 3, heads, dh]).permute([2, 0, 3, 1, 4]));
    let part = |i: usize| x.clone().narrow(0, i, 1).reshape([b, heads, t, dh]);
    let (q, k, v) = (part(0), part(1), part(2));
    let scale = 1.0 / (dh as f64).sqrt();
    let scores = q.clone().matmul(k.clone().swap_dims(2, 3));
    let kernel = super::cube::softmax(&scores, scale);
    let p =
        kernel.unwrap_or_else(|| burn::tensor::activation::softmax(scores.mul_scalar(scale), 3));
    // [B, heads, T, dh] -> [B, T, d]
    let y = p
        .clone()
        .matmul(v.clone())
        .swap_dims(1, 2)
        .reshape([b, t, heads * dh]);
    let state = AttnState {
        q: raw(q),
        k: raw(k),
        v: raw(v),
        p: raw(p),
        scale,
    };
    (y, state)
}

/// What a GELU backward step keeps: the input and `Φ(input)`.
#[derive(Debug, Clone)]
pub struct GeluState<B: Backend> {
    x: B::FloatTensorPrimitive,
    phi: B::FloatTensorPrimitive,
}

#[derive(Debug)]
struct Gelu;

impl<B: Backend> Backward<B, 1> for Gelu {
    type State = GeluState<B>;

    fn backward(self, ops: Ops<GeluState<B>, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let dy: Tensor<B, 1> = inner(grads.consume::<B>(&ops.node));
        let Some(parent) = parent else {
            return;
        };
        let (x, phi): (Tensor<B, 1>, Tensor<B, 1>) = (inner(ops.state.x), inner(ops.state.phi));
        grads.register::<B>(parent.id, raw(gelu_dx(dy, x, phi)));
    }
}

/// GELU's input gradient `dy·(Φ(x) + x·φ(x))`, `φ(x) = e^{−x²/2}/√(2π)`: canc's kernel where it
/// runs, Burn's ops otherwise.
fn gelu_dx<B: Backend>(dy: Tensor<B, 1>, x: Tensor<B, 1>, phi: Tensor<B, 1>) -> Tensor<B, 1> {
    if let Some(dx) = super::cube::gelu_dx(&dy, &x, &phi) {
        return dx;
    }
    let inv_sqrt_2pi = 0.5 * core::f64::consts::FRAC_2_SQRT_PI * core::f64::consts::FRAC_1_SQRT_2;
    let pdf = x
        .clone()
        .square()
        .mul_scalar(-0.5)
        .exp()
        .mul_scalar(inv_sqrt_2pi);
    dy * (x * pdf + phi)
}

/// Exact GELU `x·Φ(x)`, `Φ(x) = (1 + erf(x/√2))/2`, under autodiff, with the closed-form
/// backward step above (the same function as [`super::reference::gelu`]).
pub fn gelu<B: Backend, const D: usize>(x: Tensor<Autodiff<B>, D>) -> Tensor<Autodiff<B>, D> {
    let dims = x.dims();
    let n = dims.iter().product::<usize>();
    let xp: Prim<B> = x.reshape([n]).into_primitive().tensor();
    let xi: Tensor<B, 1> = inner(xp.primitive.clone());
    let kernel = super::cube::gelu(&xi);
    let (y, phi) = kernel.unwrap_or_else(|| {
        let phi = super::reference::normal_cdf(xi.clone());
        (xi.clone() * phi.clone(), phi)
    });
    let state = || GeluState {
        x: raw(xi),
        phi: raw(phi),
    };
    let y = finish(Gelu, [&xp], state, raw(y));
    Tensor::<Autodiff<B>, 1>::from_primitive(TensorPrimitive::Float(y)).reshape(dims)
}

/// What a BatchNorm backward step keeps: `x̂` (`[n, c]`), `r` (`[c]`), the affine `(γ, β)` if
/// any, and whether a ReLU followed.
#[derive(Debug, Clone)]
pub struct BnState<B: Backend> {
    xhat: B::FloatTensorPrimitive,
    rstd: B::FloatTensorPrimitive,
    affine: Option<(B::FloatTensorPrimitive, B::FloatTensorPrimitive)>,
    relu: bool,
}

/// BatchNorm's backward step: parents `[x]` without an affine, `[x, γ, β]` with one.
#[derive(Debug)]
struct Bn<const N: usize>;

impl<B: Backend, const N: usize> Backward<B, N> for Bn<N> {
    type State = BnState<B>;

    fn backward(self, ops: Ops<BnState<B>, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy: Tensor<B, 2> = inner(grads.consume::<B>(&ops.node));
        let s = ops.state;
        let (xhat, rstd): (Tensor<B, 2>, Tensor<B, 1>) = (inner(s.xhat), inner(s.rstd));
        let affine: Option<(Tensor<B, 1>, Tensor<B, 1>)> =
            s.affine.map(|(g, b)| (inner(g), inner(b)));
        let kernel = super::cube::batch_norm_dx(
            &dy,
            &xhat,
            &rstd,
            affine.as_ref().map(|(g, b)| (g, b)),
            s.relu,
        );
        let (dx, dg, db) = kernel.unwrap_or_else(|| bn_dx(dy, xhat, rstd, affine, s.relu));
        let mut parents = ops.parents.into_iter();
        if let Some(Some(p)) = parents.next() {
            grads.register::<B>(p.id, raw(dx));
        }
        if let Some(Some(p)) = parents.next() {
            grads.register::<B>(p.id, raw(dg));
        }
        if let Some(Some(p)) = parents.next() {
            grads.register::<B>(p.id, raw(db));
        }
    }
}

/// [`super::cube::batch_norm_dx`] in Burn's tensor ops (where the kernel declines, e.g. an
/// upstream gradient of another dtype).
fn bn_dx<B: Backend>(
    dy: Tensor<B, 2>,
    xhat: Tensor<B, 2>,
    rstd: Tensor<B, 1>,
    affine: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
    relu: bool,
) -> (Tensor<B, 2>, Tensor<B, 1>, Tensor<B, 1>) {
    let [n, c] = dy.dims();
    let g = match (&affine, relu) {
        (Some((g, b)), true) => {
            let y = xhat.clone() * g.clone().unsqueeze::<2>() + b.clone().unsqueeze::<2>();
            dy.mask_fill(y.lower_equal_elem(0.0), 0.0)
        }
        (None, true) => dy.mask_fill(xhat.clone().lower_equal_elem(0.0), 0.0),
        (_, false) => dy,
    };
    let db = g.clone().sum_dim(0);
    let dg = (g.clone() * xhat.clone()).sum_dim(0);
    let scale = match affine {
        Some((gamma, _)) => rstd * gamma,
        None => rstd,
    };
    let inv_n = 1.0 / n as f64;
    let dx = (g - db.clone().mul_scalar(inv_n) - xhat * dg.clone().mul_scalar(inv_n))
        * scale.unsqueeze::<2>();
    (dx, dg.reshape([c]), db.reshape([c]))
}

/// A BatchNorm training step's output under autodiff and the running (mean, variance) after it.
type BnTrained<B> = (Tensor<Autodiff<B>, 2>, Tensor<B, 1>, Tensor<B, 1>);

/// BatchNorm's training forward (batch statistics; ReLU after it if `relu`) under autodiff
/// through canc's kernels ([`super::cube::batch_norm`]), with their one-launch backward step:
/// the output and the `running` (mean, variance) moved by `momentum`. `None` where the kernels
/// do not run (another backend or dtype); the caller then composes Burn's ops.
pub fn batch_norm<B: Backend>(
    x: &Tensor<Autodiff<B>, 2>,
    affine: super::cube::Affine<'_, Autodiff<B>>,
    running: (&Tensor<B, 1>, &Tensor<B, 1>),
    eps: f64,
    momentum: f64,
    relu: bool,
) -> Option<BnTrained<B>> {
    let xp: Prim<B> = x.clone().into_primitive().tensor();
    let xi: Tensor<B, 2> = inner(xp.primitive.clone());
    let ap: Option<(Prim<B>, Prim<B>)> = affine.map(|(g, b)| {
        (
            g.clone().into_primitive().tensor(),
            b.clone().into_primitive().tensor(),
        )
    });
    let ai: Option<(Tensor<B, 1>, Tensor<B, 1>)> = ap
        .as_ref()
        .map(|(g, b)| (inner(g.primitive.clone()), inner(b.primitive.clone())));
    let out = super::cube::batch_norm(
        &xi,
        ai.as_ref().map(|(g, b)| (g, b)),
        running,
        eps,
        momentum,
        relu,
    )?;
    let state = BnState {
        xhat: raw(out.xhat),
        rstd: raw(out.rstd),
        affine: ai.map(|(g, b)| (raw(g), raw(b))),
        relu,
    };
    let y = match &ap {
        Some((g, b)) => finish(Bn::<3>, [&xp, g, b], || state, raw(out.y)),
        None => finish(Bn::<1>, [&xp], || state, raw(out.y)),
    };
    Some((
        Tensor::from_primitive(TensorPrimitive::Float(y)),
        out.running_mean,
        out.running_var,
    ))
}

/// What a patch-error backward step keeps: the prediction and target (`[rows, d]`), the row
/// selection, the loss's denominator and whether the error is L1.
#[derive(Debug, Clone)]
pub struct PatchErrorState<B: Backend> {
    pred: B::FloatTensorPrimitive,
    target: B::FloatTensorPrimitive,
    select: Option<B::FloatTensorPrimitive>,
    den: B::FloatTensorPrimitive,
    l1: bool,
}

/// The patch error's backward step: parents `[pred, target]`.
#[derive(Debug)]
struct PatchError;

impl<B: Backend> Backward<B, 2> for PatchError {
    type State = PatchErrorState<B>;

    fn backward(
        self,
        ops: Ops<PatchErrorState<B>, 2>,
        grads: &mut Gradients,
        _: &mut Checkpointer,
    ) {
        let [pp, pt] = ops.parents;
        let dl: Tensor<B, 1> = inner(grads.consume::<B>(&ops.node));
        let s = ops.state;
        let (pred, target): (Tensor<B, 2>, Tensor<B, 2>) = (inner(s.pred), inner(s.target));
        let select: Option<Tensor<B, 1>> = s.select.map(inner);
        let den: Tensor<B, 1> = inner(s.den);
        let kernel =
            super::cube::patch_error_dx(&pred, &target, select.as_ref(), (&dl, &den), s.l1);
        let dp = kernel.unwrap_or_else(|| {
            let [rows, d] = pred.dims();
            let e = pred - target;
            let g = if s.l1 { e.sign() } else { e.mul_scalar(2.0) };
            let per_row = (dl / den).reshape([1, 1]).div_scalar(d as f64);
            let per_row = match select {
                Some(sel) => sel.reshape([rows, 1]) * per_row,
                None => per_row,
            };
            g * per_row
        });
        if let Some(p) = pt {
            grads.register::<B>(p.id, raw(dp.clone().neg()));
        }
        if let Some(p) = pp {
            grads.register::<B>(p.id, raw(dp));
        }
    }
}

/// The reconstruction losses' reduction under autodiff through canc's kernels
/// ([`super::cube::patch_error`]): the mean over the selected rows of each row's mean squared
/// (or, with `l1`, absolute) error, `[1]`, with a one-launch backward step. `None` where the
/// kernels do not run or `select` is tracked (it is a 0/1 mask; the kernels give it no
/// gradient).
pub fn patch_error<B: Backend>(
    pred: &Tensor<Autodiff<B>, 2>,
    target: &Tensor<Autodiff<B>, 2>,
    select: Option<&Tensor<Autodiff<B>, 1>>,
    l1: bool,
) -> Option<Tensor<Autodiff<B>, 1>> {
    let pp: Prim<B> = pred.clone().into_primitive().tensor();
    let tp: Prim<B> = target.clone().into_primitive().tensor();
    let sp: Option<Prim<B>> = select.map(|s| s.clone().into_primitive().tensor());
    if sp.as_ref().is_some_and(tracked) {
        return None;
    }
    let (pi, ti): (Tensor<B, 2>, Tensor<B, 2>) =
        (inner(pp.primitive.clone()), inner(tp.primitive.clone()));
    let si: Option<Tensor<B, 1>> = sp.map(|s| inner(s.primitive));
    let (loss, den) = super::cube::patch_error(&pi, &ti, si.as_ref(), l1)?;
    let state = || PatchErrorState {
        pred: raw(pi),
        target: raw(ti),
        select: si.map(raw),
        den: raw(den),
        l1,
    };
    let y = finish(PatchError, [&pp, &tp], state, raw(loss));
    Some(Tensor::from_primitive(TensorPrimitive::Float(y)))
}

/// `GELU(h + b)`'s backward step: parents `[h, b]`; keeps `x = h + b` and `Φ(x)`.
#[derive(Debug)]
struct BiasGelu;

impl<B: Backend> Backward<B, 2> for BiasGelu {
    type State = GeluState<B>;

    fn backward(self, ops: Ops<GeluState<B>, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [ph, pb] = ops.parents;
        let dy: Tensor<B, 2> = inner(grads.consume::<B>(&ops.node));
        let [rows, width] = dy.dims();
        let n = rows * width;
        let (x, phi): (Tensor<B, 2>, Tensor<B, 2>) = (inner(ops.state.x), inner(ops.state.phi));
        let dx = gelu_dx(dy.reshape([n]), x.reshape([n]), phi.reshape([n])).reshape([rows, width]);
        register_bias_add(grads, ph.map(|p| p.id), pb.map(|p| p.id), dx);
    }
}

/// Exact GELU of `h + b` (`b` broadcast over the rows of `h`: a Linear's bias) under autodiff,
/// the add and the activation in one launch where canc's kernels run
/// ([`super::cube::bias_gelu`]); backward as [`gelu`]'s, and `db` the column sums of `dx`.
pub fn bias_gelu<B: Backend>(
    h: Tensor<Autodiff<B>, 2>,
    b: Tensor<Autodiff<B>, 1>,
) -> Tensor<Autodiff<B>, 2> {
    let (hp, bp): (Prim<B>, Prim<B>) = (h.into_primitive().tensor(), b.into_primitive().tensor());
    let (hi, bi): (Tensor<B, 2>, Tensor<B, 1>) =
        (inner(hp.primitive.clone()), inner(bp.primitive.clone()));
    let [y, x, phi] = super::cube::bias_gelu(&hi, &bi).unwrap_or_else(|| {
        let x = hi + bi.unsqueeze::<2>();
        let phi = super::reference::normal_cdf(x.clone());
        [x.clone() * phi.clone(), x, phi]
    });
    let state = || GeluState {
        x: raw(x),
        phi: raw(phi),
    };
    let y = finish(BiasGelu, [&hp, &bp], state, raw(y));
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// The residual add `r + (h + b)`'s backward step: parents `[r, h, b]`.
#[derive(Debug)]
struct BiasResidual;

impl<B: Backend> Backward<B, 3> for BiasResidual {
    type State = ();

    fn backward(self, ops: Ops<(), 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [pr, ph, pb] = ops.parents;
        let dy: Tensor<B, 2> = inner(grads.consume::<B>(&ops.node));
        if let Some(p) = pr {
            grads.register::<B>(p.id, raw(dy.clone()));
        }
        register_bias_add(grads, ph.map(|p| p.id), pb.map(|p| p.id), dy);
    }
}

/// The residual add `r + (h + b)` (`b` broadcast over the rows: a Linear's bias) under
/// autodiff, in one launch where canc's kernels run ([`super::cube::bias_residual`]).
pub fn bias_residual<B: Backend>(
    r: Tensor<Autodiff<B>, 2>,
    h: Tensor<Autodiff<B>, 2>,
    b: Tensor<Autodiff<B>, 1>,
) -> Tensor<Autodiff<B>, 2> {
    let (rp, hp, bp): (Prim<B>, Prim<B>, Prim<B>) = (
        r.into_primitive().tensor(),
        h.into_primitive().tensor(),
        b.into_primitive().tensor(),
    );
    let (ri, hi, bi): (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 1>) = (
        inner(rp.primitive.clone()),
        inner(hp.primitive.clone()),
        inner(bp.primitive.clone()),
    );
    let y = super::cube::bias_residual(&ri, &hi, &bi)
        .unwrap_or_else(|| ri + (hi + bi.unsqueeze::<2>()));
    let y = finish(BiasResidual, [&rp, &hp, &bp], || (), raw(y));
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// The bias add `h + b` (`b` broadcast over the rows of `h`: a Linear's bias)'s backward step:
/// parents `[h, b]`.
#[derive(Debug)]
struct AddBias;

impl<B: Backend> Backward<B, 2> for AddBias {
    type State = ();

    fn backward(self, ops: Ops<(), 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [ph, pb] = ops.parents;
        let dy: Tensor<B, 2> = inner(grads.consume::<B>(&ops.node));
        register_bias_add(grads, ph.map(|p| p.id), pb.map(|p| p.id), dy);
    }
}

/// `h + b` (`b` `[width]` broadcast over the rows of `h` `[rows, width]`) under autodiff, with
/// `db` the column sums of `dy` by canc's kernel where it runs (Burn's autodiff reduces a
/// broadcast add's gradient with its own, slower reduction).
pub fn add_bias<B: Backend>(
    h: Tensor<Autodiff<B>, 2>,
    b: Tensor<Autodiff<B>, 1>,
) -> Tensor<Autodiff<B>, 2> {
    let (hp, bp): (Prim<B>, Prim<B>) = (h.into_primitive().tensor(), b.into_primitive().tensor());
    let (hi, bi): (Tensor<B, 2>, Tensor<B, 1>) =
        (inner(hp.primitive.clone()), inner(bp.primitive.clone()));
    let y = hi + bi.unsqueeze::<2>();
    let y = finish(AddBias, [&hp, &bp], || (), raw(y));
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// What an L2 normalisation's backward step keeps: its output and, per row, `1/‖x‖` and whether
/// the norm was clamped.
#[derive(Debug, Clone)]
pub struct L2State<B: Backend> {
    y: B::FloatTensorPrimitive,
    info: B::FloatTensorPrimitive,
}

#[derive(Debug)]
struct L2Norm;

impl<B: Backend> Backward<B, 1> for L2Norm {
    type State = L2State<B>;

    fn backward(self, ops: Ops<L2State<B>, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let dy: Tensor<B, 2> = inner(grads.consume::<B>(&ops.node));
        let Some(parent) = parent else {
            return;
        };
        let (y, info): (Tensor<B, 2>, Tensor<B, 2>) = (inner(ops.state.y), inner(ops.state.info));
        let dx = super::cube::l2norm_dx(&dy, &y, &info).unwrap_or_else(|| {
            let [rows, _] = y.dims();
            let r = info.clone().narrow(1, 0, 1);
            let kept = info.narrow(1, 1, 1).lower_elem(0.5).float();
            let dot = (dy.clone() * y.clone()).sum_dim(1) * kept;
            (dy - y * dot.reshape([rows, 1])) * r
        });
        grads.register::<B>(parent.id, raw(dx));
    }
}

/// The L2 normalisation of the rows of `x` (`[rows, d]`, torch's `F.normalize` with `eps`)
/// under autodiff through canc's kernels ([`super::cube::l2norm`]): one launch each way.
/// `None` where the kernels do not run.
pub fn l2norm<B: Backend>(x: &Tensor<Autodiff<B>, 2>, eps: f64) -> Option<Tensor<Autodiff<B>, 2>> {
    let xp: Prim<B> = x.clone().into_primitive().tensor();
    let (y, info) = super::cube::l2norm(&inner::<B, 2>(xp.primitive.clone()), eps)?;
    let state = L2State {
        y: raw(y.clone()),
        info: raw(info),
    };
    let y = finish(L2Norm, [&xp], || state, raw(y));
    Some(Tensor::from_primitive(TensorPrimitive::Float(y)))
}

/// What a contrastive cross-entropy's backward step keeps: the logits and each row's
/// `logsumexp`.
#[derive(Debug, Clone)]
pub struct CeState<B: Backend> {
    s: B::FloatTensorPrimitive,
    lse: B::FloatTensorPrimitive,
    ce: super::cube::Ce,
}

#[derive(Debug)]
struct ContrastiveCe;

impl<B: Backend> Backward<B, 1> for ContrastiveCe {
    type State = CeState<B>;

    fn backward(self, ops: Ops<CeState<B>, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let dl: Tensor<B, 1> = inner(grads.consume::<B>(&ops.node));
        let Some(parent) = parent else {
            return;
        };
        let (s, lse): (Tensor<B, 2>, Tensor<B, 1>) = (inner(ops.state.s), inner(ops.state.lse));
        let ce = ops.state.ce;
        let ds = super::cube::contrastive_ce_dx(&s, &lse, &dl, ce)
            .unwrap_or_else(|| ce_dx(s, lse, dl, ce));
        grads.register::<B>(parent.id, raw(ds));
    }
}

/// [`super::cube::contrastive_ce_dx`] in Burn's tensor ops.
fn ce_dx<B: Backend>(
    s: Tensor<B, 2>,
    lse: Tensor<B, 1>,
    dl: Tensor<B, 1>,
    ce: super::cube::Ce,
) -> Tensor<B, 2> {
    let [rows, cols] = s.dims();
    let device = s.device();
    let inv_t = 1.0 / ce.temperature;
    let mut p = (s.mul_scalar(inv_t) - lse.reshape([rows, 1])).exp();
    if ce.self_mask {
        let diag = Tensor::<B, 2, burn::tensor::Bool>::diag_mask([rows, cols], 0, &device);
        p = p.mask_fill(diag.bool_not(), 0.0);
    }
    let pos: Vec<i64> = (0..rows).map(|i| ((i + ce.shift) % cols) as i64).collect();
    let pos = Tensor::<B, 1, burn::tensor::Int>::from_ints(pos.as_slice(), &device);
    let onehot = burn::tensor::Tensor::<B, 2>::zeros([rows, cols], &device).scatter(
        1,
        pos.reshape([rows, 1]),
        Tensor::ones([rows, 1], &device),
        burn::tensor::IndexingUpdateOp::Add,
    );
    let g = dl
        .reshape([1, 1])
        .mul_scalar(ce.scale * inv_t / rows as f64);
    (p - onehot) * g
}

/// [`super::cube::Ce`]'s contrastive cross-entropy of the logits `s` (`[rows, cols]`, before the
/// temperature) under autodiff through canc's kernels ([`super::cube::contrastive_ce`]): two
/// launches forward, one backward. `None` where the kernels do not run.
pub fn contrastive_ce<B: Backend>(
    s: &Tensor<Autodiff<B>, 2>,
    ce: super::cube::Ce,
) -> Option<Tensor<Autodiff<B>, 1>> {
    let sp: Prim<B> = s.clone().into_primitive().tensor();
    let si: Tensor<B, 2> = inner(sp.primitive.clone());
    let (loss, lse) = super::cube::contrastive_ce(&si, ce)?;
    let state = || CeState {
        s: raw(si),
        lse: raw(lse),
        ce,
    };
    let y = finish(ContrastiveCe, [&sp], state, raw(loss));
    Some(Tensor::from_primitive(TensorPrimitive::Float(y)))
}

/// What the backward step of a row select or a row placement keeps: the distinct row indices
/// `flat` and the number of rows `total` they index.
#[derive(Debug, Clone)]
pub struct RowsState<B: Backend> {
    flat: B::IntTensorPrimitive,
    total: usize,
}

/// `[total, d]` with row `r` of `x` (`[m, d]`) at row `flat[r]` (distinct) and `fill` (`[1, d]`)
/// everywhere else: a gather from `x` with `fill` appended, through the inverse of `flat`
/// ([`super::cube::inverse_rows`]; Burn's `select_assign` where it does not run).
pub(crate) fn place_rows_with<B: Backend>(
    x: Tensor<B, 2>,
    fill: Tensor<B, 2>,
    flat: Tensor<B, 1, Int>,
    total: usize,
) -> Tensor<B, 2> {
    let m = x.dims()[0];
    let source = super::cube::inverse_rows(&flat, total, m).unwrap_or_else(|| {
        let device = flat.device();
        let visible = Tensor::<B, 1, Int>::arange(0..m as i64, &device);
        Tensor::<B, 1, Int>::full([total], m as i64, &device).select_assign(
            0,
            flat,
            visible.sub_scalar(m as i64),
            burn::tensor::IndexingUpdateOp::Add,
        )
    });
    Tensor::cat(vec![x, fill], 0).select(0, source)
}

/// A row select's backward step: parent `[x]`.
#[derive(Debug)]
struct SelectRows;

impl<B: Backend> Backward<B, 1> for SelectRows {
    type State = RowsState<B>;

    fn backward(self, ops: Ops<RowsState<B>, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px] = ops.parents;
        let dy: Tensor<B, 2> = inner(grads.consume::<B>(&ops.node));
        if let Some(p) = px {
            let zero = Tensor::zeros([1, dy.dims()[1]], &dy.device());
            let flat = Tensor::from_primitive(ops.state.flat);
            grads.register::<B>(p.id, raw(place_rows_with(dy, zero, flat, ops.state.total)));
        }
    }
}

/// Rows `flat` (distinct) of `x` (`[total, d]`) under autodiff. Its backward step places each
/// row's gradient back with a gather ([`place_rows_with`] with zeros), where Burn's gradient of
/// a select is a scatter-add (3 ms on an H100 for the CAN encoder's kept patches).
pub fn select_rows<B: Backend>(
    x: Tensor<Autodiff<B>, 2>,
    flat: Tensor<Autodiff<B>, 1, Int>,
) -> Tensor<Autodiff<B>, 2> {
    let total = x.dims()[0];
    let xp: Prim<B> = x.into_primitive().tensor();
    let fi: Tensor<B, 1, Int> = Tensor::from_primitive(flat.into_primitive());
    let xi: Tensor<B, 2> = inner(xp.primitive.clone());
    let y = xi.select(0, fi.clone());
    let state = || RowsState {
        flat: fi.into_primitive(),
        total,
    };
    let y = finish(SelectRows, [&xp], state, raw(y));
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// A row placement's backward step: parents `[rows, fill]`.
#[derive(Debug)]
struct PlaceRows;

impl<B: Backend> Backward<B, 2> for PlaceRows {
    type State = RowsState<B>;

    fn backward(self, ops: Ops<RowsState<B>, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [pr, pf] = ops.parents;
        let dy: Tensor<B, 2> = inner(grads.consume::<B>(&ops.node));
        let flat = Tensor::from_primitive(ops.state.flat);
        let d_rows = dy.clone().select(0, flat);
        if let Some(p) = pf {
            // Every position not holding a row holds `fill`: Σ over all less Σ over the rows.
            let d_fill = col_sums(dy) - col_sums(d_rows.clone());
            grads.register::<B>(p.id, raw(d_fill));
        }
        if let Some(p) = pr {
            grads.register::<B>(p.id, raw(d_rows));
        }
    }
}

/// [`place_rows_with`] under autodiff: `rows` (`[m, d]`) at rows `flat` of `[total, d]`, `fill`
/// (`[d]`) elsewhere. Backward: a gather of the rows' gradients and column sums for `fill`'s,
/// where Burn's gradient of the select is a scatter-add with repeated indices (5.5 ms on an
/// H100 for the CAN decoder's mask tokens).
pub fn place_rows<B: Backend>(
    rows: Tensor<Autodiff<B>, 2>,
    fill: Tensor<Autodiff<B>, 1>,
    flat: Tensor<Autodiff<B>, 1, Int>,
    total: usize,
) -> Tensor<Autodiff<B>, 2> {
    let (rp, fp): (Prim<B>, Prim<B>) = (
        rows.into_primitive().tensor(),
        fill.into_primitive().tensor(),
    );
    let fi: Tensor<B, 1, Int> = Tensor::from_primitive(flat.into_primitive());
    let (ri, li): (Tensor<B, 2>, Tensor<B, 1>) =
        (inner(rp.primitive.clone()), inner(fp.primitive.clone()));
    let d = li.dims()[0];
    let y = place_rows_with(ri, li.reshape([1, d]), fi.clone(), total);
    let state = || RowsState {
        flat: fi.into_primitive(),
        total,
    };
    let y = finish(PlaceRows, [&rp, &fp], state, raw(y));
    Tensor::from_primitive(TensorPrimitive::Float(y))
}
