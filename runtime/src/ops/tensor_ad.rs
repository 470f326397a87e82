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

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};

type Prim<B> = <Autodiff<B> as burn::tensor::backend::BackendTypes>::FloatTensorPrimitive;

fn inner<B: Backend, const D: usize>(p: B::FloatTensorPrimitive) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

fn raw<B: Backend, const D: usize>(t: Tensor<B, D>) -> B::FloatTensorPrimitive {
    t.into_primitive().tensor()
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
        if let Some(p) = pg {
            let dg = (dy.clone() * xhat.clone()).sum_dim(0).reshape([d]);
            grads.register::<B>(p.id, raw(dg));
        }
        if let Some(p) = pb {
            grads.register::<B>(p.id, raw(dy.clone().sum_dim(0).reshape([d])));
        }
        if let Some(p) = px {
            let g = dy * inner::<B, 1>(s.gamma).unsqueeze::<2>();
            let m1 = g.clone().mean_dim(1);
            let m2 = (g.clone() * xhat.clone()).mean_dim(1);
            let dx = (g - m1 - xhat * m2) * inner::<B, 2>(s.rstd);
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

    let y = match Ln
        .prepare::<NoCheckpointing>([xp.node.clone(), gp.node.clone(), bp.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = LnState {
                xhat: raw(xhat),
                rstd: raw(rstd),
                gamma: raw(g),
            };
            prep.finish(state, raw(y))
        }
        OpsKind::UnTracked(prep) => prep.finish(raw(y)),
    };
    Tensor::<Autodiff<B>, 2>::from_primitive(TensorPrimitive::Float(y)).reshape(dims)
}
