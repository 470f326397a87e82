//! Fused ops for the CPU backend: Linear, GELU, LayerNorm and multi-head self-attention, each
//! one kernel forward and one backward instead of Burn's chains of elementwise tensor ops.
//!
//! Every function here takes and returns tensors of any backend `B`. On the CPU backends
//! ([`Cpu`](crate::backend::Cpu) and [`CpuTrain`](crate::backend::CpuTrain), f32 tensors) it
//! runs the fused kernels of [`kernels`], registering its own backward step with Burn's
//! autodiff; on any other backend (CUDA, wgpu) or dtype it computes the same function with
//! Burn's tensor ops ([`reference`]), LayerNorm, attention and GELU on the CUDA and wgpu
//! training backends with their own backward steps in tensor ops ([`tensor_ad`]). All paths
//! compute the same values (tested in `runtime/tests/ops.rs`, and on wgpu against the CPU in
//! `runtime/tests/wgpu.rs`). [`fused_enabled`] says when the kernels run: by default in
//! optimised builds only; `CANC_FUSED_OPS=0` or `=1` in the environment decides otherwise, e.g.
//! to compare the two paths in one binary.
//!
//! Why: under `Autodiff<Flex>`, Burn 0.21 runs LayerNorm as ~10 tracked ops, attention as
//! permute copies, batched matmuls and a 6-op softmax, and GELU through scalar `libm::erff`,
//! each op allocating its output; these were about half of the CAN step on two cores. Linear
//! runs as a matmul whose output Burn zero-fills and then copies into a re-aligned buffer,
//! then a broadcast bias add, and in backward a row-sum reduction: the fused one writes the
//! bias and the product into one buffer and computes all three gradients in one step.

pub mod cube;
#[cfg(any(feature = "cuda", feature = "wgpu"))]
mod cube_kernels;
pub mod gemm;
pub mod inplace;
pub mod kernels;
pub mod reference;
pub mod tensor_ad;

use crate::backend::{Cpu, CpuTrain};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::nn::LayerNorm;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Shape, Tensor, TensorData, TensorMetadata, TensorPrimitive};
use kernels::AttnShape;
use std::any::{Any, TypeId};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

/// On a CubeCL training backend (CUDA's or wgpu's, whichever features are on) with the fused
/// ops enabled, returns `$body` evaluated with `$inner` naming the backend inside the autodiff
/// wrapper; otherwise falls through.
macro_rules! on_cube_train {
    ($b:ty, $inner:ident => $body:expr) => {
        #[cfg(feature = "cuda")]
        if fused_enabled() && same::<$b, crate::backend::GpuTrain>() {
            #[allow(dead_code)]
            type $inner = crate::backend::Gpu;
            return $body;
        }
        #[cfg(feature = "wgpu")]
        if fused_enabled() && same::<$b, crate::backend::WgpuTrain>() {
            #[allow(dead_code)]
            type $inner = crate::backend::Wgpu;
            return $body;
        }
    };
}

/// `x·w + b` on `[N, D_in]` rows (as [`burn::tensor::module::linear`], `w` being
/// `[D_in, D_out]` like Burn's `Linear` weight).
pub fn linear<B: Backend>(
    x: Tensor<B, 2>,
    w: Tensor<B, 2>,
    b: Option<Tensor<B, 1>>,
) -> Tensor<B, 2> {
    if same::<B, CpuTrain>() {
        return back(ad::linear(back(x), back(w), b.map(back)));
    }
    if same::<B, Cpu>() {
        let (xp, wp) = (
            back::<_, Tensor<Cpu, 2>>(x).into_primitive().tensor(),
            back::<_, Tensor<Cpu, 2>>(w).into_primitive().tensor(),
        );
        let bp = b.map(|b| back::<_, Tensor<Cpu, 1>>(b).into_primitive().tensor());
        let y = match flex_linear(&xp, &wp, bp.as_ref()) {
            Some((y, _, _)) => float::<2>(y),
            None => burn::tensor::module::linear(float::<2>(xp), float(wp), bp.map(float)),
        };
        return back(y);
    }
    // Under autodiff on CUDA and wgpu, the bias through `add_bias` (its gradient by canc's
    // column sum).
    on_cube_train!(B, G => match b {
        Some(b) => add_bias(x.matmul(w), b),
        None => x.matmul(w),
    });
    burn::tensor::module::linear(x, w, b)
}

/// Rows `flat` (distinct) of `x` (`[total, d]`); under autodiff on CUDA and wgpu its gradient is
/// a gather ([`tensor_ad::select_rows`]) instead of Burn's scatter-add.
pub fn select_rows<B: Backend>(
    x: Tensor<B, 2>,
    flat: Tensor<B, 1, burn::tensor::Int>,
) -> Tensor<B, 2> {
    on_cube_train!(B, G => back(tensor_ad::select_rows::<G>(back(x), back(flat))));
    x.select(0, flat)
}

/// `[total, d]` with row `r` of `rows` (`[m, d]`) at row `flat[r]` (distinct) and `fill` (`[d]`)
/// everywhere else; on CUDA and wgpu through canc's inverse of `flat` and, under autodiff, a
/// backward step of a gather and column sums ([`tensor_ad::place_rows`]).
pub fn place_rows<B: Backend>(
    rows: Tensor<B, 2>,
    fill: Tensor<B, 1>,
    flat: Tensor<B, 1, burn::tensor::Int>,
    total: usize,
) -> Tensor<B, 2> {
    on_cube_train!(B, G => back(tensor_ad::place_rows::<G>(back(rows), back(fill), back(flat), total)));
    let d = fill.dims()[0];
    tensor_ad::place_rows_with(rows, fill.reshape([1, d]), flat, total)
}

/// `h + b` for a bias `b` broadcast over the rows of `h`; under autodiff on CUDA and wgpu its
/// gradient `db` is the column sums by canc's kernel ([`tensor_ad::add_bias`]).
pub fn add_bias<B: Backend>(h: Tensor<B, 2>, b: Tensor<B, 1>) -> Tensor<B, 2> {
    on_cube_train!(B, G => back(tensor_ad::add_bias::<G>(back(h), back(b))));
    h + b.unsqueeze_dim(0)
}

/// `x·Φ(x)` (exact GELU, as `burn::tensor::activation::gelu`, with the exact gradient on every
/// backend).
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if same::<B, CpuTrain>() {
        return back(ad::gelu(back::<_, Tensor<CpuTrain, D>>(x)));
    }
    if same::<B, Cpu>() {
        let x = back::<_, Tensor<Cpu, D>>(x);
        let p = x.into_primitive().tensor();
        let y = match p.dtype() {
            DType::F32 => {
                let c = p.to_contiguous();
                float::<D>(flex(kernels::gelu(slice(&c)), c.shape()))
            }
            _ => burn::tensor::activation::gelu(float::<D>(p)),
        };
        return back(y);
    }
    on_cube_train!(B, G => back(tensor_ad::gelu::<G, D>(back(x))));
    // A CubeCL backend without autodiff (an EMA teacher, evaluation): canc's kernel alone.
    if on_cube_inner::<B>() {
        let dims = x.dims();
        let flat = x.reshape([dims.iter().product::<usize>()]);
        return match cube::gelu(&flat) {
            Some((y, _)) => y.reshape(dims),
            None => reference::gelu(flat).reshape(dims),
        };
    }
    // Other backends: the tensor-op form, whose gradient is exact (see there).
    reference::gelu(x)
}

/// `ln` applied to the last dimension of `x` (as [`LayerNorm::forward`]); `eps` must be the
/// epsilon `ln` was configured with (Burn keeps it private).
pub fn layer_norm<B: Backend, const D: usize>(
    ln: &LayerNorm<B>,
    eps: f64,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    let beta = ln.beta.as_ref().map(|b| b.val());
    layer_norm_with(x, ln.gamma.val(), beta, eps)
}

/// LayerNorm over the last dimension of `x`: `(x − mean)/√(var + eps)·gamma + beta`, biased
/// variance (Burn's and PyTorch's LayerNorm).
pub fn layer_norm_with<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    beta: Option<Tensor<B, 1>>,
    eps: f64,
) -> Tensor<B, D> {
    if same::<B, CpuTrain>() {
        return back(ad::layer_norm::<D>(
            back(x),
            back(gamma),
            beta.map(back),
            eps,
        ));
    }
    if same::<B, Cpu>() {
        let (x, g) = (
            back::<_, Tensor<Cpu, D>>(x).into_primitive().tensor(),
            back::<_, Tensor<Cpu, 1>>(gamma).into_primitive().tensor(),
        );
        let b = beta.map(|b| back::<_, Tensor<Cpu, 1>>(b).into_primitive().tensor());
        let y = match flex_layer_norm(&x, &g, b.as_ref(), eps) {
            Some((y, _, _)) => float(y),
            None => reference::layer_norm(float::<D>(x), float(g), b.map(float), eps),
        };
        return back(y);
    }
    on_cube_train!(B, G => back(tensor_ad::layer_norm::<G, D>(
        back(x),
        back(gamma),
        beta.map(back),
        eps
    )));
    if on_cube_inner::<B>()
        && let Some(b) = &beta
    {
        let dims = x.dims();
        let d = dims[D - 1];
        let x2 = x
            .clone()
            .reshape([dims.iter().product::<usize>() / d.max(1), d]);
        if let Some((y, _, _)) = cube::layer_norm(&x2, &gamma, b, eps) {
            return y.reshape(dims);
        }
    }
    reference::layer_norm(x, gamma, beta, eps)
}

/// Exact GELU of `h + b` (`h` `[rows, width]`, `b` `[width]` broadcast over the rows: a
/// Linear's bias), as `gelu(h + b)`; on CUDA and wgpu the add and the activation are one launch
/// ([`cube::bias_gelu`]).
pub fn bias_gelu<B: Backend>(h: Tensor<B, 2>, b: Tensor<B, 1>) -> Tensor<B, 2> {
    on_cube_train!(B, G => back(tensor_ad::bias_gelu::<G>(back(h), back(b))));
    if on_cube_inner::<B>()
        && let Some([y, _, _]) = cube::bias_gelu(&h, &b)
    {
        return y;
    }
    gelu(h + b.unsqueeze::<2>())
}

/// The residual add `r + (h + b)` (`r`, `h` `[rows, width]`, `b` `[width]` broadcast over the
/// rows: a Linear's bias); on CUDA and wgpu one launch ([`cube::bias_residual`]).
pub fn bias_residual<B: Backend>(
    r: Tensor<B, 2>,
    h: Tensor<B, 2>,
    b: Tensor<B, 1>,
) -> Tensor<B, 2> {
    on_cube_train!(B, G => back(tensor_ad::bias_residual::<G>(back(r), back(h), back(b))));
    if on_cube_inner::<B>()
        && let Some(y) = cube::bias_residual(&r, &h, &b)
    {
        return y;
    }
    r + (h + b.unsqueeze::<2>())
}

/// BatchNorm's training forward over the batch of `x` (`[n, c]`): the batch's statistics,
/// the affine `(γ, β)` if given, then ReLU if `relu`, and the `running` (mean, variance) moved
/// by `momentum` towards the batch's mean and unbiased variance. Where canc's GPU kernels run
/// (CUDA or wgpu, f32; with or without autodiff) that is one launch forward and one backward,
/// returned as `Some((y, running mean, running variance))`; elsewhere `None`, and the caller
/// composes Burn's ops ([`crate::nn::BatchNorm1d`]).
pub fn batch_norm_train<B: Backend>(
    x: &Tensor<B, 2>,
    affine: cube::Affine<'_, B>,
    running: (&Tensor<B, 1>, &Tensor<B, 1>),
    eps: f64,
    momentum: f64,
    relu: bool,
) -> Option<(Tensor<B, 2>, Tensor<B, 1>, Tensor<B, 1>)> {
    on_cube_train!(B, G => {
        type T<const D: usize> = Tensor<burn::backend::Autodiff<G>, D>;
        let down = |t: &Tensor<B, 1>| back::<_, T<1>>(t.clone());
        let affine = affine.map(|(g, b)| (down(g), down(b)));
        let (rm, rv) = (down(running.0).inner(), down(running.1).inner());
        tensor_ad::batch_norm::<G>(
            &back::<_, T<2>>(x.clone()),
            affine.as_ref().map(|(g, b)| (g, b)),
            (&rm, &rv),
            eps,
            momentum,
            relu,
        )
        .map(|(y, rm, rv)| {
            let up = |t: Tensor<G, 1>| back::<_, Tensor<B, 1>>(T::<1>::from_inner(t));
            (back(y), up(rm), up(rv))
        })
    });
    if on_cube_inner::<B>() {
        return cube::batch_norm(x, affine, running, eps, momentum, relu)
            .map(|o| (o.y, o.running_mean, o.running_var));
    }
    None
}

/// MAE's per-patch target normalisation of the rows of `x` (`[rows, d]`) with canc's GPU
/// kernel, where it runs and `x` needs no gradient (a target made from the data, as in every
/// spec); `None` otherwise, and the caller composes Burn's ops ([`crate::loss::patch_norm`]).
pub fn patch_norm<B: Backend>(x: &Tensor<B, 2>, eps: f64) -> Option<Tensor<B, 2>> {
    on_cube_train!(B, G => {
        type T<const D: usize> = Tensor<burn::backend::Autodiff<G>, D>;
        tensor_ad::patch_norm::<G>(&back::<_, T<2>>(x.clone()), eps).map(back)
    });
    if on_cube_inner::<B>() {
        return cube::patch_norm(x, eps);
    }
    None
}

/// The L2 normalisation of the rows of `x` (`[rows, d]`, torch's `F.normalize` with `eps`)
/// with canc's GPU kernels (one launch each way), where they run; `None` elsewhere, and the
/// caller composes Burn's ops ([`crate::loss::l2norm`]).
pub fn l2norm<B: Backend>(x: &Tensor<B, 2>, eps: f64) -> Option<Tensor<B, 2>> {
    on_cube_train!(B, G => {
        type T<const D: usize> = Tensor<burn::backend::Autodiff<G>, D>;
        tensor_ad::l2norm::<G>(&back::<_, T<2>>(x.clone()), eps).map(back)
    });
    if on_cube_inner::<B>() {
        return cube::l2norm(x, eps).map(|(y, _)| y);
    }
    None
}

/// A contrastive cross-entropy of cosine logits `s` (`[rows, cols]`, before the temperature;
/// [`cube::Ce`] says which column is each row's positive) with canc's GPU kernels (two
/// launches forward, one backward), where they run; `None` elsewhere, and the caller composes
/// Burn's ops ([`crate::loss::infonce`]).
pub fn contrastive_ce<B: Backend>(s: &Tensor<B, 2>, ce: cube::Ce) -> Option<Tensor<B, 1>> {
    on_cube_train!(B, G => {
        type T<const D: usize> = Tensor<burn::backend::Autodiff<G>, D>;
        tensor_ad::contrastive_ce::<G>(&back::<_, T<2>>(s.clone()), ce).map(back)
    });
    if on_cube_inner::<B>() {
        return cube::contrastive_ce(s, ce).map(|(loss, _)| loss);
    }
    None
}

/// The reconstruction losses' reduction of `pred` against `target` (`[rows, d]`): each row's
/// mean squared error (mean absolute with `l1`), then the mean over the rows where `select`
/// (`[rows]`, 1.0 or 0.0) holds (all rows without it; an empty selection gives 0). `Some` where
/// canc's GPU kernels run (two launches forward, one backward), `None` elsewhere: the caller
/// composes Burn's ops ([`crate::loss::mse`]).
pub fn patch_error<B: Backend>(
    pred: &Tensor<B, 2>,
    target: &Tensor<B, 2>,
    select: Option<&Tensor<B, 1>>,
    l1: bool,
) -> Option<Tensor<B, 1>> {
    on_cube_train!(B, G => {
        type T<const D: usize> = Tensor<burn::backend::Autodiff<G>, D>;
        let select = select.map(|s| back::<_, T<1>>(s.clone()));
        tensor_ad::patch_error::<G>(
            &back::<_, T<2>>(pred.clone()),
            &back::<_, T<2>>(target.clone()),
            select.as_ref(),
            l1,
        )
        .map(back)
    });
    if on_cube_inner::<B>() {
        return cube::patch_error(pred, target, select, l1).map(|(loss, _)| loss);
    }
    None
}

/// Multi-head self-attention `softmax(q·kᵀ/√dh)·v` of a packed `qkv` `[B, T, 3d]` (last
/// dimension laid out `(3, heads, d/heads)`, as timm's qkv Linear) → `[B, T, d]` with the heads
/// concatenated, ready for the output projection.
///
/// # Panics
/// If the last dimension is not a multiple of `3·heads`.
pub fn attention<B: Backend>(qkv: Tensor<B, 3>, heads: usize) -> Tensor<B, 3> {
    let [b, t, w] = qkv.dims();
    assert!(
        heads > 0 && w.is_multiple_of(3 * heads),
        "attention: width {w} is not 3 × a multiple of {heads} heads"
    );
    let s = AttnShape {
        b,
        t,
        h: heads,
        dh: w / 3 / heads,
    };
    if same::<B, CpuTrain>() {
        return back(ad::attention(back(qkv), s));
    }
    if same::<B, Cpu>() {
        let p = back::<_, Tensor<Cpu, 3>>(qkv).into_primitive().tensor();
        let y = match p.dtype() {
            DType::F32 => {
                let c = p.to_contiguous();
                float(flex(
                    kernels::attention(slice(&c), s).0,
                    [b, t, s.d()].into(),
                ))
            }
            _ => reference::attention(float(p), heads),
        };
        return back(y);
    }
    on_cube_train!(B, G => back(tensor_ad::attention::<G>(back(qkv), heads)));
    if on_cube_inner::<B>() {
        return tensor_ad::attention_forward(qkv, heads).0;
    }
    reference::attention(qkv, heads)
}

/// Whether [`attention`] runs the fused f32 CPU kernel for backend `B` (which then takes f32
/// input only).
pub fn fused_attention<B: Backend>() -> bool {
    same::<B, CpuTrain>() || same::<B, Cpu>()
}

/// One AdamW step of a parameter tensor, Burn's `AdamW` arithmetic with the scalars of `s`:
/// `(weights, first moment, second moment)` after the step from the weights `p`, gradient `g`
/// and the moments before it (`None` on the tensor's first step, for which `s` is
/// [`inplace::AdamWStep::new`] at time 1).
/// On the CPU backend with f32 tensors one pass rewrites the weights and moments in place
/// ([`inplace::adamw`]); on CUDA and wgpu after the first step canc's kernel does it in one
/// launch ([`cube::adamw`]); elsewhere Burn's ops compute it (bitwise the same values as the
/// CPU's).
pub fn adamw_update<B: Backend, const D: usize>(
    p: Tensor<B, D>,
    g: Tensor<B, D>,
    moments: Option<(Tensor<B, D>, Tensor<B, D>)>,
    s: &inplace::AdamWStep,
) -> (Tensor<B, D>, Tensor<B, D>, Tensor<B, D>) {
    if same::<B, Cpu>() {
        let prim = |t: Tensor<B, D>| back::<_, Tensor<Cpu, D>>(t).into_primitive().tensor();
        let out = |t: FlexTensor| back::<_, Tensor<B, D>>(float::<D>(t));
        let (pp, gp) = (prim(p), prim(g));
        let mp = moments.map(|(a, b)| (prim(a), prim(b)));
        let f32s = pp.dtype() == DType::F32
            && gp.dtype() == DType::F32
            && mp
                .as_ref()
                .is_none_or(|(a, b)| a.dtype() == DType::F32 && b.dtype() == DType::F32);
        let shape = pp.shape();
        let n = shape.num_elements();
        let same_len = gp.shape().num_elements() == n
            && mp.as_ref().is_none_or(|(a, b)| {
                a.shape().num_elements() == n && b.shape().num_elements() == n
            });
        if f32s && same_len {
            let gc = gp.to_contiguous();
            let mut w = owned(pp);
            let (mut m1, mut m2) = match mp {
                Some((a, b)) => (owned(a), owned(b)),
                None => (
                    FlexTensor::zeros(shape.clone(), DType::F32),
                    FlexTensor::zeros(shape.clone(), DType::F32),
                ),
            };
            inplace::adamw(
                &mut w.storage_mut::<f32>()[..n],
                slice(&gc),
                &mut m1.storage_mut::<f32>()[..n],
                &mut m2.storage_mut::<f32>()[..n],
                s,
            );
            return (out(w), out(m1), out(m2));
        }
        return reference::adamw(out(pp), out(gp), mp.map(|(a, b)| (out(a), out(b))), s);
    }
    if let Some((m1, m2)) = moments.as_ref().filter(|_| !s.first) {
        let shape = p.shape();
        let flat = |t: &Tensor<B, D>| t.clone().reshape([shape.num_elements()]);
        if let Some([w, a, b]) = cube::adamw([&flat(&p), &flat(&g), &flat(m1), &flat(m2)], s) {
            let back = |t: Tensor<B, 1>| t.reshape(shape.clone());
            return (back(w), back(a), back(b));
        }
    }
    reference::adamw(p, g, moments, s)
}

/// The EMA step of a teacher's parameter tensor `t` towards the matching source parameter `s`
/// (flattened): `t·m + s·(1 − m)`. On the CPU backend with f32 tensors one pass rewrites `t`
/// in place ([`inplace::ema`]); elsewhere Burn's three ops compute it (bitwise the same).
pub fn ema_update<B: Backend, const D: usize>(
    t: Tensor<B, D>,
    s: Tensor<B, 1>,
    m: f64,
) -> Tensor<B, D> {
    let shape = t.shape();
    if same::<B, Cpu>() && shape.num_elements() == s.shape().num_elements() {
        let tp = back::<_, Tensor<Cpu, D>>(t).into_primitive().tensor();
        let sp = back::<_, Tensor<Cpu, 1>>(s).into_primitive().tensor();
        if tp.dtype() == DType::F32 && sp.dtype() == DType::F32 {
            let n = shape.num_elements();
            let sc = sp.to_contiguous();
            let mut w = owned(tp);
            inplace::ema(
                &mut w.storage_mut::<f32>()[..n],
                slice(&sc),
                m as f32,
                (1.0 - m) as f32,
            );
            return back(float::<D>(w));
        }
        let (t, s) = (back(float::<D>(tp)), back(float::<1>(sp)));
        return reference::ema(t, s, m);
    }
    reference::ema(t, s, m)
}

/// `t` as a contiguous tensor at offset 0 whose buffer is exactly its elements: `t` itself when
/// it is one (then [`FlexTensor::storage_mut`] rewrites it in place if no other tensor shares
/// the buffer), a copy otherwise.
fn owned(t: FlexTensor) -> FlexTensor {
    let exact = t.is_contiguous()
        && t.layout().start_offset() == 0
        && t.bytes().len() == t.shape().num_elements() * t.dtype().size();
    if exact { t } else { t.to_contiguous() }
}

/// Whether canc's GPU kernels ([`cube`]) run for backend `B`: CUDA's or wgpu's, with or without
/// autodiff, the fused ops on.
pub fn gpu_kernels<B: Backend>() -> bool {
    on_cube_train!(B, G => cube::enabled());
    on_cube_inner::<B>()
}

/// Whether `B` is a CubeCL backend without autodiff on which canc's kernels run
/// ([`cube::runs_on`]) and the fused ops are on: the forward-only path of an EMA teacher and of
/// evaluation on a GPU.
fn on_cube_inner<B: Backend>() -> bool {
    fused_enabled() && cube::runs_on::<B>()
}

/// Whether `A` and `B` are the same type and the fused kernels are on ([`fused_enabled`]).
fn same<A: Any, B: Any>() -> bool {
    TypeId::of::<A>() == TypeId::of::<B>() && fused_enabled()
}

/// The process-wide choice of [`set_fused`]: 0 = default, 1 = on, 2 = off.
static FUSED: AtomicU8 = AtomicU8::new(0);

/// Forces the fused kernels on (`Some(true)`) or off (`Some(false)`) for the whole process, or
/// restores the default (`None`, see [`fused_enabled`]).
pub fn set_fused(on: Option<bool>) {
    FUSED.store(
        match on {
            None => 0,
            Some(true) => 1,
            Some(false) => 2,
        },
        Ordering::Relaxed,
    );
}

/// Whether the ops here run their fused kernels on the CPU backends. Unless [`set_fused`]
/// decided: `CANC_FUSED_OPS=1` / `=0` in the environment turns them on / off; without it they
/// are on in optimised builds and off in debug builds (`debug_assertions`), where the kernels
/// are compiled without optimisation and run about 10× slower than Burn's optimised ops (the
/// runtime's training tests took 580 s instead of 49 s). `runtime/tests/ops.rs` turns them on.
pub fn fused_enabled() -> bool {
    static ENV: OnceLock<Option<bool>> = OnceLock::new();
    match FUSED.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => ENV
            .get_or_init(|| crate::backend::env_switch("CANC_FUSED_OPS"))
            .unwrap_or(!cfg!(debug_assertions)),
    }
}

/// `t` as type `U`, which the caller has checked with [`same`] to be `T` itself.
fn back<T: Any, U: Any>(t: T) -> U {
    let boxed: Box<dyn Any> = Box::new(t);
    *boxed
        .downcast::<U>()
        .unwrap_or_else(|_| unreachable!("back: the types were checked to be the same"))
}

/// The contiguous f32 data of `t` (which [`FlexTensor::to_contiguous`] returned).
fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .unwrap_or_else(|| unreachable!("slice: a contiguous f32 tensor"))
}

/// A contiguous f32 tensor of `shape` holding `data`.
fn flex(data: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, shape))
}

/// A CPU tensor of a primitive.
fn float<const D: usize>(p: FlexTensor) -> Tensor<Cpu, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

/// The fused LayerNorm forward on CPU primitives: `(y, mean, 1/σ)`; `None` unless all are f32.
fn flex_layer_norm(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: Option<&FlexTensor>,
    eps: f64,
) -> Option<(FlexTensor, Vec<f32>, Vec<f32>)> {
    let all_f32 = x.dtype() == DType::F32
        && gamma.dtype() == DType::F32
        && beta.is_none_or(|b| b.dtype() == DType::F32);
    if !all_f32 {
        return None;
    }
    let shape = x.shape();
    let d = shape[shape.num_dims() - 1];
    let xc = x.to_contiguous();
    let gc = gamma.to_contiguous();
    let bc = beta.map(FlexTensor::to_contiguous);
    let (y, mean, rstd) = kernels::layer_norm(
        slice(&xc),
        slice(&gc),
        bc.as_ref().map(slice),
        d,
        eps as f32,
    );
    Some((flex(y, shape), mean, rstd))
}

/// The fused Linear forward on CPU primitives: `(y, x, w)` with `x` and `w` contiguous (the
/// backward's state); `None` unless all are f32 and the shapes agree.
fn flex_linear(
    x: &FlexTensor,
    w: &FlexTensor,
    b: Option<&FlexTensor>,
) -> Option<(FlexTensor, FlexTensor, FlexTensor)> {
    let all_f32 = x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && b.is_none_or(|b| b.dtype() == DType::F32);
    let (xs, ws) = (x.shape(), w.shape());
    let (m, k, n) = (xs[0], xs[1], ws[1]);
    if !all_f32 || ws[0] != k || b.is_some_and(|b| b.shape()[0] != n) {
        return None;
    }
    let (xc, wc) = (x.to_contiguous(), w.to_contiguous());
    let bc = b.map(FlexTensor::to_contiguous);
    let y = gemm::linear(slice(&xc), slice(&wc), bc.as_ref().map(slice), m, k, n);
    Some((flex(y, [m, n].into()), xc, wc))
}

/// `y` (computed on the inner backend) as the output of the fused op `op` over `parents`
/// under autodiff: with `op` as its backward step and `state()` kept for it when a parent is
/// tracked, as a plain value otherwise.
fn finish<B: Backend, const N: usize, O: Backward<B, N>>(
    op: O,
    parents: [&<burn::backend::Autodiff<B> as burn::tensor::backend::BackendTypes>::FloatTensorPrimitive;
        N],
    state: impl FnOnce() -> O::State,
    y: B::FloatTensorPrimitive,
) -> <burn::backend::Autodiff<B> as burn::tensor::backend::BackendTypes>::FloatTensorPrimitive {
    match op
        .prepare::<NoCheckpointing>(parents.map(|p| p.node.clone()))
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state(), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

/// The autodiff (training) versions of the fused ops on `Autodiff<Flex>`.
mod ad {
    use super::*;

    type Prim = <CpuTrain as burn::tensor::backend::BackendTypes>::FloatTensorPrimitive;

    fn prim<const D: usize>(t: Tensor<CpuTrain, D>) -> Prim {
        t.into_primitive().tensor()
    }

    fn wrap<const D: usize>(p: Prim) -> Tensor<CpuTrain, D> {
        Tensor::from_primitive(TensorPrimitive::Float(p))
    }

    /// The state of a Linear backward step: the contiguous input and weight.
    #[derive(Debug, Clone)]
    pub struct LinState {
        x: FlexTensor,
        w: FlexTensor,
    }

    /// The gradients of a Linear step into its (up to three) parents.
    fn linear_grads(ops: Ops<LinState, 3>, grads: &mut Gradients) {
        let Ops {
            parents,
            node,
            state,
        } = ops;
        let dy = grads.consume::<Cpu>(&node).to_contiguous();
        let (xs, ws) = (state.x.shape(), state.w.shape());
        let dims = (xs[0], xs[1], ws[1]);
        let want = [0, 1, 2].map(|i| parents[i].is_some());
        let [dx, dw, db] =
            gemm::linear_backward(slice(&state.x), slice(&state.w), slice(&dy), dims, want);
        let shapes: [Shape; 3] = [xs, ws, [dims.2].into()];
        for ((parent, g), shape) in parents.into_iter().zip([dx, dw, db]).zip(shapes) {
            if let (Some(p), Some(g)) = (parent, g) {
                grads.register::<Cpu>(p.id, flex(g, shape));
            }
        }
    }

    /// Linear with its own backward step (state: input and weight).
    pub fn linear(
        x: Tensor<CpuTrain, 2>,
        w: Tensor<CpuTrain, 2>,
        b: Option<Tensor<CpuTrain, 1>>,
    ) -> Tensor<CpuTrain, 2> {
        #[derive(Debug)]
        struct LinB;
        impl Backward<Cpu, 3> for LinB {
            type State = LinState;
            fn backward(self, ops: Ops<LinState, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
                linear_grads(ops, grads);
            }
        }
        #[derive(Debug)]
        struct Lin;
        impl Backward<Cpu, 2> for Lin {
            type State = LinState;
            fn backward(self, ops: Ops<LinState, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [px, pw] = ops.parents;
                linear_grads(Ops::new([px, pw, None], ops.node, ops.state), grads);
            }
        }
        let (xp, wp) = (prim(x), prim(w));
        let bp = b.map(prim);
        let fused = flex_linear(
            &xp.primitive,
            &wp.primitive,
            bp.as_ref().map(|b| &b.primitive),
        );
        let Some((y, xc, wc)) = fused else {
            return burn::tensor::module::linear(wrap(xp), wrap(wp), bp.map(wrap));
        };
        let state = || LinState { x: xc, w: wc };
        wrap(match &bp {
            Some(bp) => finish(LinB, [&xp, &wp, bp], state, y),
            None => finish(Lin, [&xp, &wp], state, y),
        })
    }

    /// GELU with its own backward step (state: the input).
    pub fn gelu<const D: usize>(x: Tensor<CpuTrain, D>) -> Tensor<CpuTrain, D> {
        #[derive(Debug)]
        struct Gelu;
        impl Backward<Cpu, 1> for Gelu {
            type State = FlexTensor;
            fn backward(
                self,
                ops: Ops<FlexTensor, 1>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let [parent] = ops.parents;
                let grad = grads.consume::<Cpu>(&ops.node);
                if let Some(parent) = parent {
                    let g = grad.to_contiguous();
                    let dx = kernels::gelu_backward(slice(&ops.state), slice(&g));
                    grads.register::<Cpu>(parent.id, flex(dx, g.shape()));
                }
            }
        }
        let x = prim(x);
        if x.primitive.dtype() != DType::F32 {
            return wrap(prim(burn::tensor::activation::gelu(wrap::<D>(x))));
        }
        let xc = x.primitive.to_contiguous();
        let y = flex(kernels::gelu(slice(&xc)), xc.shape());
        wrap(finish(Gelu, [&x], || xc, y))
    }

    /// The state of a LayerNorm backward step.
    #[derive(Debug, Clone)]
    pub struct LnState {
        x: FlexTensor,
        gamma: FlexTensor,
        mean: Vec<f32>,
        rstd: Vec<f32>,
    }

    /// LayerNorm with its own backward step (state: input, gamma, per-row mean and 1/σ).
    pub fn layer_norm<const D: usize>(
        x: Tensor<CpuTrain, D>,
        gamma: Tensor<CpuTrain, 1>,
        beta: Option<Tensor<CpuTrain, 1>>,
        eps: f64,
    ) -> Tensor<CpuTrain, D> {
        #[derive(Debug)]
        struct Ln;
        impl Backward<Cpu, 3> for Ln {
            type State = LnState;
            fn backward(self, ops: Ops<LnState, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [px, pg, pb] = ops.parents;
                let dy = grads.consume::<Cpu>(&ops.node).to_contiguous();
                let s = ops.state;
                let shape = s.x.shape();
                let d = shape[shape.num_dims() - 1];
                let (dx, dg, db) = kernels::layer_norm_backward(
                    slice(&s.x),
                    &s.mean,
                    &s.rstd,
                    slice(&s.gamma),
                    slice(&dy),
                    d,
                );
                if let Some(p) = px {
                    grads.register::<Cpu>(p.id, flex(dx, shape));
                }
                if let Some(p) = pg {
                    grads.register::<Cpu>(p.id, flex(dg, [d].into()));
                }
                if let Some(p) = pb {
                    grads.register::<Cpu>(p.id, flex(db, [d].into()));
                }
            }
        }
        let (xp, gp) = (prim(x), prim(gamma));
        // Burn's LayerNorm always has a beta; one without takes the composed path.
        let Some(bp) = beta.map(prim) else {
            return reference::layer_norm(wrap::<D>(xp), wrap(gp), None, eps);
        };
        let fused = flex_layer_norm(&xp.primitive, &gp.primitive, Some(&bp.primitive), eps);
        let Some((y, mean, rstd)) = fused else {
            return reference::layer_norm(wrap::<D>(xp), wrap(gp), Some(wrap(bp)), eps);
        };
        let state = || LnState {
            x: xp.primitive.to_contiguous(),
            gamma: gp.primitive.to_contiguous(),
            mean,
            rstd,
        };
        wrap(finish(Ln, [&xp, &gp, &bp], state, y))
    }

    /// The state of an attention backward step.
    #[derive(Debug, Clone)]
    pub struct AttnState {
        qkv: FlexTensor,
        probs: std::sync::Arc<Vec<f32>>,
        shape: AttnShape,
    }

    /// Attention with its own backward step (state: the packed qkv and the probabilities).
    pub fn attention(qkv: Tensor<CpuTrain, 3>, s: AttnShape) -> Tensor<CpuTrain, 3> {
        #[derive(Debug)]
        struct Attn;
        impl Backward<Cpu, 1> for Attn {
            type State = AttnState;
            fn backward(self, ops: Ops<AttnState, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [parent] = ops.parents;
                let dout = grads.consume::<Cpu>(&ops.node).to_contiguous();
                if let Some(parent) = parent {
                    let st = ops.state;
                    let dqkv = kernels::attention_backward(
                        slice(&st.qkv),
                        &st.probs,
                        slice(&dout),
                        st.shape,
                    );
                    grads.register::<Cpu>(parent.id, flex(dqkv, st.qkv.shape()));
                }
            }
        }
        let x = prim(qkv);
        if x.primitive.dtype() != DType::F32 {
            return reference::attention(wrap(x), s.h);
        }
        let xc = x.primitive.to_contiguous();
        let (out, probs) = kernels::attention(slice(&xc), s);
        let y = flex(out, [s.b, s.t, s.d()].into());
        let state = || AttnState {
            qkv: xc,
            probs: std::sync::Arc::new(probs),
            shape: s,
        };
        wrap(finish(Attn, [&x], state, y))
    }
}
