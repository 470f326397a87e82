//! AdamW over all of a parameter group at once ("multi-tensor", as PyTorch's `foreach` AdamW).
//!
//! Burn's `OptimizerAdaptor<AdamW>` updates one parameter tensor at a time: 15 element-wise ops
//! per tensor (14 without weight decay), on a GPU as many kernel launches (CAN: 116 tensors,
//! 1,663 ops per step). [`FlatAdamW`] lays the group's gradients and weights end to end in one
//! flat buffer (one copy per tensor), runs the same ops once on it, and hands each network its
//! updated weights as views of the result (segments are padded to 128 elements, 512 bytes, so
//! CubeCL's slices are views, not copies): `2·n + 17` ops per group and step (CAN: 265). On
//! the CPU its copies into and out of the flat buffers measured slower (BENCHMARKS.md), and
//! the CPU steps each tensor in place instead ([`crate::adamw::PerTensorAdamW`]; see
//! [`crate::train::RunOptions::flat_adamw`]).
//!
//! The flat weights of one step are the next step's too, without the copies, when every
//! parameter is still the view this optimizer handed out: each is recognised by its autodiff
//! graph node, which a parameter replaced from outside (a loaded checkpoint, another
//! optimizer) does not share. Then a step is `n + 18` ops (CAN: 150).
//!
//! The arithmetic is Burn's AdamW op for op (same order, same f32 scalars), so the weights are
//! bitwise equal to what Burn's optimizer gives; its state is stored as Burn's per-parameter
//! record ([`AdamWRecord`]), so checkpoints written by either resume in the other.

use std::collections::HashMap;
use std::marker::PhantomData;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::{GradAdaptor, OptimizerAdaptor};
use burn::optim::record::{AdaptorRecord, AdaptorRecordV1};
use burn::optim::{
    AdamWState, AdaptiveMomentumState, GradientsParams, LearningRate, MultiGradientsParams,
    Optimizer,
};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use crate::adamw::PerTensorAdamW;

/// Segment padding in elements: 512 bytes of f32, CubeCL's CUDA memory alignment, below which a
/// slice of a buffer is a copy rather than a view.
const PAD: usize = 128;

/// One parameter group's AdamW (decoupled weight decay), stepped as one flat tensor.
pub struct FlatAdamW<M, B: AutodiffBackend> {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    weight_decay: f32,
    /// The state laid out for the last step's parameters.
    flat: Option<Flat<B::InnerBackend>>,
    /// State of parameters not in that layout: loaded from a record, or left out of a step.
    parked: HashMap<ParamId, AdaptorRecord<PerTensorAdamW, B>>,
    /// The last step's flat weights and the graph node of each parameter it handed out.
    last: Option<Last<B::InnerBackend>>,
    module: PhantomData<M>,
}

/// A step's updated flat weights, and per parameter (in layout order) its id and the autodiff
/// graph node of the view the step handed out.
#[derive(Clone)]
struct Last<B: Backend> {
    weights: Tensor<B, 1>,
    nodes: Vec<(ParamId, Option<u64>)>,
}

/// Where one parameter lies in the flat buffers.
#[derive(Clone, Debug, PartialEq)]
struct Seg {
    id: ParamId,
    shape: Vec<usize>,
    offset: usize,
    /// Steps this parameter has taken (Burn's per-parameter `time`).
    time: usize,
}

impl Seg {
    fn len(&self) -> usize {
        self.shape.iter().product()
    }
}

/// `n` elements rounded up to whole [`PAD`]s.
fn padded(n: usize) -> usize {
    n.div_ceil(PAD) * PAD
}

/// The group's moments, flat, and where each parameter lies in them.
#[derive(Clone)]
struct Flat<B: Backend> {
    segs: Vec<Seg>,
    total: usize,
    moment_1: Tensor<B, 1>,
    moment_2: Tensor<B, 1>,
}

impl<M, B: AutodiffBackend> Clone for FlatAdamW<M, B> {
    fn clone(&self) -> Self {
        Self {
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            weight_decay: self.weight_decay,
            flat: self.flat.clone(),
            parked: self.parked.clone(),
            last: self.last.clone(),
            module: PhantomData,
        }
    }
}

impl<M, B: AutodiffBackend> FlatAdamW<M, B> {
    /// AdamW with these hyper-parameters (as Burn's `AdamWConfig`; no AMSGrad, no cautious
    /// decay).
    pub fn new(beta_1: f32, beta_2: f32, epsilon: f32, weight_decay: f32) -> Self {
        Self {
            beta_1,
            beta_2,
            epsilon,
            weight_decay,
            flat: None,
            parked: HashMap::new(),
            last: None,
            module: PhantomData,
        }
    }
}

impl<M: AutodiffModule<B>, B: AutodiffBackend> FlatAdamW<M, B> {
    /// Brings the state into the layout of `segs` (their times are taken from the state).
    fn lay_out(&mut self, mut segs: Vec<Seg>, total: usize, device: &B::Device) {
        if let Some(f) = &self.flat
            && f.total == total
            && f.segs.len() == segs.len()
            && f.segs
                .iter()
                .zip(&segs)
                .all(|(a, b)| a.id == b.id && a.shape == b.shape)
        {
            return;
        }
        self.park();
        let (mut m1, mut m2) = (Vec::new(), Vec::new());
        for s in &mut segs {
            let state = self.parked.remove(&s.id).and_then(|r| unpark(r, s));
            let (time, a, b) = state.unwrap_or_else(|| {
                let z = Tensor::zeros([s.len()], device);
                (0, z.clone(), z)
            });
            s.time = time;
            m1.push(a);
            m2.push(b);
        }
        self.flat = Some(Flat {
            moment_1: end_to_end(m1, &segs, total, device),
            moment_2: end_to_end(m2, &segs, total, device),
            segs,
            total,
        });
    }

    /// Moves the laid-out state into per-parameter records.
    fn park(&mut self) {
        if let Some(f) = self.flat.take() {
            for s in &f.segs {
                if s.time > 0 {
                    self.parked.insert(s.id, park(&f, s));
                }
            }
        }
    }
}

impl<M: AutodiffModule<B>, B: AutodiffBackend> FlatAdamW<M, B> {
    /// Burn's AdamW (`burn_optim::AdamW::step`), op for op, on a whole group whose parameters
    /// missed different steps (its segments `segs`, their times already advanced, `total`
    /// elements), each segment with its own bias corrections: the weights and both moments
    /// after the step.
    fn missed_steps(
        &self,
        (segs, total): (&[Seg], usize),
        [p, g]: [Tensor<B::InnerBackend, 1>; 2],
        [m1, m2]: [Tensor<B::InnerBackend, 1>; 2],
        lr: LearningRate,
        device: &B::Device,
    ) -> [Tensor<B::InnerBackend, 1>; 3] {
        let (b1, b2) = (self.beta_1, self.beta_2);
        let m = m1.mul_scalar(b1).add(g.clone().mul_scalar(1.0 - b1));
        let v = m2.mul_scalar(b2).add(g.square().mul_scalar(1.0 - b2));
        let per = |beta: f32| {
            let mut c = vec![1f32; total];
            for s in segs {
                c[s.offset..s.offset + s.len()].fill(1f32 - beta.powi(s.time as i32));
            }
            Tensor::<B::InnerBackend, 1>::from_data(TensorData::new(c, [total]), device)
        };
        let (m_hat, v_hat) = (m.clone().div(per(b1)), v.clone().div(per(b2)));
        let delta = m_hat.div(v_hat.sqrt().add_scalar(self.epsilon));
        let decay = lr * f64::from(self.weight_decay);
        let p = if decay == 0.0 {
            p
        } else {
            p.mul_scalar(1.0 - decay)
        };
        [p - delta.mul_scalar(lr), m, v]
    }

    fn step_common(&mut self, lr: LearningRate, module: M, mut grads: GradAdaptor) -> M {
        let mut c = Collect::<B> {
            grads: &mut grads,
            segs: Vec::new(),
            params: Vec::new(),
            grad: Vec::new(),
            nodes: Vec::new(),
            total: 0,
        };
        module.visit(&mut c);
        let Collect {
            segs,
            params,
            grad,
            nodes,
            total,
            ..
        } = c;
        let Some(device) = params.first().map(Tensor::device) else {
            return module;
        };
        // The flat weights and gradients: one copy per tensor, zeros in the padding; the weights
        // as the last step left them where every parameter is still its view.
        let p = match self.last.take() {
            Some(last) if unchanged(&last, &segs, &nodes, total) => last.weights,
            _ => end_to_end(params, &segs, total, &device),
        };
        let g = end_to_end(grad, &segs, total, &device);
        let at: HashMap<ParamId, (usize, usize)> =
            segs.iter().map(|s| (s.id, (s.offset, s.len()))).collect();
        self.lay_out(segs, total, &device);
        let Some(mut f) = self.flat.take() else {
            return module;
        };
        f.segs.iter_mut().for_each(|s| s.time += 1);

        let t0 = f.segs[0].time;
        // The moments move out (and are replaced below), so that the step may reuse their
        // buffers.
        let [p, m, v] = if f.segs.iter().all(|s| s.time == t0) {
            // One AdamW step of the whole group: in place on the CPU, one kernel on a GPU.
            let hyper = (self.beta_1, self.beta_2, self.epsilon, self.weight_decay);
            let s = crate::ops::inplace::AdamWStep::new(hyper, lr, t0);
            let (p, m, v) = crate::ops::adamw_update(p, g, Some((f.moment_1, f.moment_2)), &s);
            [p, m, v]
        } else {
            self.missed_steps(
                (&f.segs, f.total),
                [p, g],
                [f.moment_1, f.moment_2],
                lr,
                &device,
            )
        };
        f.moment_1 = m;
        f.moment_2 = v;
        self.flat = Some(f);
        let mut put = Put {
            at,
            flat: p,
            nodes: HashMap::new(),
        };
        let module = module.map(&mut put);
        let nodes = segs_nodes(&self.flat, &put.nodes);
        self.last = Some(Last {
            weights: put.flat,
            nodes,
        });
        module
    }
}

/// Whether the parameters of this step (`segs`, with their graph `nodes`) are the views that
/// `last` handed out, so that its weights are theirs.
fn unchanged<B: Backend>(
    last: &Last<B>,
    segs: &[Seg],
    nodes: &[Option<u64>],
    total: usize,
) -> bool {
    last.weights.dims()[0] == total
        && last.nodes.len() == segs.len()
        && nodes.len() == segs.len()
        && last
            .nodes
            .iter()
            .zip(segs.iter().zip(nodes))
            .all(|((id, a), (s, b))| *id == s.id && a.is_some() && a == b)
}

/// Per parameter of the layout, in its order, the node [`Put`] gave it.
fn segs_nodes<B: Backend>(
    flat: &Option<Flat<B>>,
    put: &HashMap<ParamId, Option<u64>>,
) -> Vec<(ParamId, Option<u64>)> {
    flat.iter()
        .flat_map(|f| &f.segs)
        .map(|s| (s.id, put.get(&s.id).copied().flatten()))
        .collect()
}

/// The autodiff graph node of `t`, on the training backends canc builds (`None` on others).
fn node_id<B: AutodiffBackend, const D: usize>(t: Tensor<B, D>) -> Option<u64> {
    use burn::tensor::backend::BackendTypes;
    let p: Box<dyn std::any::Any> = Box::new(t.into_primitive().tensor());
    macro_rules! node {
        ($inner:ty) => {{
            type P = <burn::backend::Autodiff<$inner> as BackendTypes>::FloatTensorPrimitive;
            if let Some(a) = p.downcast_ref::<P>() {
                return Some(a.node.id.value);
            }
        }};
    }
    node!(crate::backend::Cpu);
    #[cfg(feature = "cuda")]
    node!(crate::backend::Gpu);
    #[cfg(feature = "wgpu")]
    node!(crate::backend::Wgpu);
    None
}

/// `pieces` (segment `segs[i]`'s values) laid end to end in one tensor of `total` elements, with
/// zeros in each segment's padding.
fn end_to_end<B: Backend>(
    pieces: Vec<Tensor<B, 1>>,
    segs: &[Seg],
    total: usize,
    device: &B::Device,
) -> Tensor<B, 1> {
    // Burn Flex's `slice_assign` copies its whole destination on every call (2.5 ms per call
    // into 3.2 M floats, measured), so on the CPU it is one `cat`, padding included; CubeCL
    // writes eight pieces and their padding per launch.
    if std::any::TypeId::of::<B>() == std::any::TypeId::of::<crate::backend::Cpu>() {
        by_cat(pieces, segs, device)
    } else {
        in_place(pieces, segs, total, device)
    }
}

/// [`end_to_end`] by one `cat`, padding pieces included.
fn by_cat<B: Backend>(pieces: Vec<Tensor<B, 1>>, segs: &[Seg], device: &B::Device) -> Tensor<B, 1> {
    let mut parts = Vec::with_capacity(2 * pieces.len());
    for (s, t) in segs.iter().zip(pieces) {
        parts.push(t);
        let pad = padded(s.len()) - s.len();
        if pad > 0 {
            parts.push(Tensor::zeros([pad], device));
        }
    }
    Tensor::cat(parts, 0)
}

/// [`end_to_end`] by canc's kernel on CUDA and wgpu (a launch per eight pieces), else by
/// writing each piece into a zero-filled buffer.
fn in_place<B: Backend>(
    pieces: Vec<Tensor<B, 1>>,
    segs: &[Seg],
    total: usize,
    device: &B::Device,
) -> Tensor<B, 1> {
    let pads: Vec<usize> = segs.iter().map(|s| padded(s.len())).collect();
    if let Some(flat) = crate::ops::cube::lay_end_to_end(&pieces, &pads, total) {
        return flat;
    }
    let mut flat = Tensor::zeros([total], device);
    for (s, t) in segs.iter().zip(pieces) {
        flat = flat.slice_assign(s.offset..s.offset + s.len(), t);
    }
    flat
}

/// Takes the gradients of a module's parameters, in the module's order, with their weights.
struct Collect<'a, B: AutodiffBackend> {
    grads: &'a mut GradAdaptor,
    segs: Vec<Seg>,
    params: Vec<Tensor<B::InnerBackend, 1>>,
    grad: Vec<Tensor<B::InnerBackend, 1>>,
    /// Each parameter's autodiff graph node ([`node_id`]).
    nodes: Vec<Option<u64>>,
    total: usize,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some((g, _)) = self.grads.remove::<B::InnerBackend, D>(param.id) else {
            return;
        };
        let shape = param.shape().to_vec();
        let n: usize = shape.iter().product();
        self.nodes.push(node_id(param.val()));
        self.params.push(param.val().inner().reshape([n]));
        self.grad.push(g.reshape([n]));
        self.segs.push(Seg {
            id: param.id,
            shape,
            offset: self.total,
            time: 0,
        });
        self.total += padded(n);
    }
}

/// Gives each updated parameter its segment of the flat weights (a view where the backend can).
struct Put<B: Backend> {
    at: HashMap<ParamId, (usize, usize)>,
    flat: Tensor<B, 1>,
    /// The graph node of each parameter handed out ([`node_id`]).
    nodes: HashMap<ParamId, Option<u64>>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Put<B::InnerBackend> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let Some(&(offset, n)) = self.at.get(&param.id) else {
            return param;
        };
        let (id, old, mapper) = param.consume();
        let shape: [usize; D] = old.shape().dims();
        let mut t = Tensor::from_inner(self.flat.clone().slice(offset..offset + n).reshape(shape));
        if old.is_require_grad() {
            t = t.require_grad();
        }
        self.nodes.insert(id, node_id(t.clone()));
        Param::from_mapped_value(id, t, mapper)
    }
}

impl<M: AutodiffModule<B>, B: AutodiffBackend> Optimizer<M, B> for FlatAdamW<M, B> {
    /// Burn's own AdamW record (per parameter), so checkpoints are interchangeable with it.
    type Record = AdamWRecord<M, B>;

    fn step(&mut self, lr: LearningRate, module: M, grads: GradientsParams) -> M {
        self.step_common(lr, module, grads.into())
    }

    fn step_multi(&mut self, lr: LearningRate, module: M, grads: MultiGradientsParams) -> M {
        self.step_common(lr, module, grads.into())
    }

    fn to_record(&self) -> Self::Record {
        let mut r = Self::Record::default();
        for (id, rec) in &self.parked {
            r.insert(*id, rec.clone());
        }
        if let Some(f) = &self.flat {
            for s in f.segs.iter().filter(|s| s.time > 0) {
                r.insert(s.id, park(f, s));
            }
        }
        r
    }

    fn load_record(mut self, record: Self::Record) -> Self {
        self.flat = None;
        self.last = None;
        self.parked = record.into_iter().collect();
        self
    }
}

/// Burn's AdamW state of a module: a record per parameter (what both optimizers store).
pub type AdamWRecord<M, B> = <OptimizerAdaptor<PerTensorAdamW, M, B> as Optimizer<M, B>>::Record;

/// Checks that every parameter state in `record` (e.g. just read from a checkpoint) belongs to
/// a parameter of `module` with the same shape.
pub fn check_record<M: AutodiffModule<B>, B: AutodiffBackend>(
    record: &AdamWRecord<M, B>,
    module: &M,
) -> Result<(), String> {
    let shapes = param_shapes::<B, M>(module);
    for (id, r) in record.iter() {
        match (shapes.get(id), record_shape(r)) {
            (None, _) => return Err(format!("optimizer state for unknown parameter {id}")),
            (Some(want), Some(got)) if *want == got => {}
            (Some(want), got) => {
                return Err(format!(
                    "optimizer state for parameter {id} has shape {got:?}, the parameter {want:?}"
                ));
            }
        }
    }
    Ok(())
}

/// The state of segment `s` of `f` as Burn's per-parameter AdamW record.
fn park<B: AutodiffBackend>(
    f: &Flat<B::InnerBackend>,
    s: &Seg,
) -> AdaptorRecord<PerTensorAdamW, B> {
    let range = s.offset..s.offset + s.len();
    let m1 = f.moment_1.clone().slice(range.clone());
    let m2 = f.moment_2.clone().slice(range);
    macro_rules! rank {
        ($($d:literal => $v:ident),*) => {
            match s.shape.len() {
                $($d => AdaptorRecord::V1(AdaptorRecordV1::$v(AdamWState::new(
                    AdaptiveMomentumState::new(
                        s.time,
                        m1.reshape(dims::<$d>(&s.shape)),
                        m2.reshape(dims::<$d>(&s.shape)),
                    ),
                ))),)*
                _ => AdaptorRecord::V1(AdaptorRecordV1::Rank1(AdamWState::new(
                    AdaptiveMomentumState::new(s.time, m1, m2),
                ))),
            }
        };
    }
    rank!(0 => Rank0, 1 => Rank1, 2 => Rank2, 3 => Rank3, 4 => Rank4, 5 => Rank5, 6 => Rank6, 7 => Rank7, 8 => Rank8)
}

/// The time and flattened moments of a per-parameter record, if its shape is segment `s`'s.
#[allow(clippy::type_complexity)]
fn unpark<B: AutodiffBackend>(
    r: AdaptorRecord<PerTensorAdamW, B>,
    s: &Seg,
) -> Option<(
    usize,
    Tensor<B::InnerBackend, 1>,
    Tensor<B::InnerBackend, 1>,
)> {
    let n = s.len();
    macro_rules! rank {
        ($($v:ident),*) => {
            match r {
                $(AdaptorRecord::V1(AdaptorRecordV1::$v(st)) => {
                    let m = st.momentum;
                    (m.moment_1.shape().to_vec() == s.shape && m.moment_2.shape().to_vec() == s.shape)
                        .then(|| (m.time, m.moment_1.reshape([n]), m.moment_2.reshape([n])))
                })*
            }
        };
    }
    rank!(
        Rank0, Rank1, Rank2, Rank3, Rank4, Rank5, Rank6, Rank7, Rank8
    )
}

fn dims<const D: usize>(shape: &[usize]) -> [usize; D] {
    let mut d = [1; D];
    for (o, s) in d.iter_mut().zip(shape) {
        *o = *s;
    }
    d
}

/// The shape of a per-parameter record's moments.
fn record_shape<B: AutodiffBackend>(r: &AdaptorRecord<PerTensorAdamW, B>) -> Option<Vec<usize>> {
    macro_rules! rank {
        ($($v:ident),*) => {
            match r {
                $(AdaptorRecord::V1(AdaptorRecordV1::$v(st)) => Some(st.momentum.moment_1.shape().to_vec()),)*
            }
        };
    }
    rank!(
        Rank0, Rank1, Rank2, Rank3, Rank4, Rank5, Rank6, Rank7, Rank8
    )
}

/// Every float parameter of `module` by id, with its shape.
fn param_shapes<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
) -> HashMap<ParamId, Vec<usize>> {
    struct Shapes(HashMap<ParamId, Vec<usize>>);
    impl<B: Backend> ModuleVisitor<B> for Shapes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.insert(param.id, param.shape().to_vec());
        }
    }
    let mut v = Shapes(HashMap::new());
    module.visit(&mut v);
    v.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::Distribution;

    type AD = Autodiff<Flex>;

    #[derive(Module, Debug)]
    struct Net<B: Backend> {
        a: Linear<B>,
        b: Linear<B>,
        scale: Param<Tensor<B, 1>>,
    }

    fn net(inp: usize) -> Net<AD> {
        let d = Default::default();
        let n = Net {
            a: LinearConfig::new(inp, 5).init(&d),
            b: LinearConfig::new(5, 3).init(&d),
            scale: Param::from_tensor(Tensor::random([3], Distribution::Normal(1.0, 0.5), &d)),
        };
        // Burn initialises parameters lazily, separately in each clone: initialise them now.
        weights(&n);
        n
    }

    /// Gradients of a small non-linear loss at step `k`'s input.
    fn grads(n: &Net<AD>, k: usize) -> GradientsParams {
        let x = Tensor::<AD, 1, Int>::arange(0..24, &Default::default())
            .float()
            .reshape([6, 4])
            .mul_scalar(0.1 + 0.05 * k as f64)
            .sin();
        let y = n.b.forward(n.a.forward(x).tanh()) * n.scale.val().unsqueeze::<2>();
        let loss = (y.clone() * y).sum() + n.scale.val().sum().mul_scalar(0.3);
        GradientsParams::from_grads(loss.backward(), n)
    }

    fn weights(n: &Net<AD>) -> Vec<Vec<f32>> {
        struct W(Vec<Vec<f32>>);
        impl<B: Backend> ModuleVisitor<B> for W {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
                self.0.push(p.val().into_data().to_vec::<f32>().unwrap());
            }
        }
        let mut w = W(Vec::new());
        n.visit(&mut w);
        w.0
    }

    fn close(a: &[Vec<f32>], b: &[Vec<f32>], tol: f32) -> bool {
        a.iter()
            .flatten()
            .zip(b.iter().flatten())
            .all(|(x, y)| (x - y).abs() <= tol * x.abs().max(1.0))
    }

    /// Burn's AdamW arithmetic a tensor at a time (bitwise Burn's own: `tests/update.rs`).
    fn burn_adamw() -> OptimizerAdaptor<PerTensorAdamW, Net<AD>, AD> {
        PerTensorAdamW::new(0.9, 0.95, 1e-8, 0.05).init()
    }

    fn flat_adamw() -> FlatAdamW<Net<AD>, AD> {
        FlatAdamW::new(0.9, 0.95, 1e-8, 0.05)
    }

    #[test]
    fn weights_are_burns_adamw_bit_for_bit() {
        let (mut burn, mut flat) = (burn_adamw(), flat_adamw());
        let mut a = net(4);
        let mut b = a.clone();
        for k in 0..6 {
            let lr = 1e-2 * (1.0 + k as f64);
            a = burn.step(lr, a.clone(), grads(&a, k));
            b = flat.step(lr, b.clone(), grads(&b, k));
            assert_eq!(weights(&a), weights(&b), "step {k}");
        }
        // The weights moved (the comparison is not of two untouched nets).
        assert!(!close(&weights(&a), &weights(&net(4)), 1e-3));
    }

    #[test]
    fn a_weight_replaced_between_steps_is_read_again() {
        // The flat weights are reused while the parameters are the views a step handed out;
        // a weight changed from outside (here `scale` doubled, as a loaded checkpoint would)
        // must be read again, not overwritten by the last step's.
        let (mut burn, mut flat) = (burn_adamw(), flat_adamw());
        let mut a = net(4);
        let mut b = a.clone();
        for k in 0..5 {
            if k == 3 {
                a.scale = a.scale.map(|t| t.mul_scalar(2.0).detach().require_grad());
                b.scale = b.scale.map(|t| t.mul_scalar(2.0).detach().require_grad());
            }
            a = burn.step(1e-2, a.clone(), grads(&a, k));
            b = flat.step(1e-2, b.clone(), grads(&b, k));
            assert_eq!(weights(&a), weights(&b), "step {k}");
        }
        assert!(flat.last.is_some(), "the last step's weights are kept");
    }

    #[test]
    fn state_round_trips_through_burns_record() {
        // Burn's optimizer for 3 steps, then each continues from the other's record.
        let (mut burn, mut flat) = (burn_adamw(), flat_adamw());
        let mut a = net(4);
        for k in 0..3 {
            a = burn.step(1e-2, a.clone(), grads(&a, k));
        }
        let mut flat_from_burn = flat_adamw().load_record(burn.to_record());
        check_record(&burn.to_record(), &a).unwrap();
        let mut b = a.clone();
        let mut c = a.clone();
        for k in 3..5 {
            a = burn.step(1e-2, a.clone(), grads(&a, k));
            b = flat_from_burn.step(1e-2, b.clone(), grads(&b, k));
        }
        assert_eq!(weights(&a), weights(&b));
        // And the other way: the flat optimizer's record resumes Burn's.
        for k in 0..3 {
            c = flat.step(1e-2, c.clone(), grads(&c, k));
        }
        let mut burn_from_flat = burn_adamw().load_record(flat.to_record());
        let mut d = c.clone();
        for k in 3..5 {
            c = flat.step(1e-2, c.clone(), grads(&c, k));
            d = burn_from_flat.step(1e-2, d.clone(), grads(&d, k));
        }
        assert_eq!(weights(&c), weights(&d));
    }

    #[test]
    fn a_parameter_without_a_gradient_keeps_its_own_step_count() {
        // Step 2 leaves `scale` out: Burn neither moves it nor advances its bias correction.
        let (mut burn, mut flat) = (burn_adamw(), flat_adamw());
        let mut a = net(4);
        let mut b = a.clone();
        for k in 0..5 {
            let (mut ga, mut gb) = (grads(&a, k), grads(&b, k));
            if k == 1 {
                ga.remove::<Flex, 1>(a.scale.id);
                gb.remove::<Flex, 1>(b.scale.id);
            }
            let before = weights(&b);
            a = burn.step(1e-2, a.clone(), ga);
            b = flat.step(1e-2, b.clone(), gb);
            if k == 1 {
                assert_eq!(
                    weights(&b)[4],
                    before[4],
                    "a weight without a gradient moved"
                );
            }
            assert!(close(&weights(&a), &weights(&b), 1e-6), "step {k}");
        }
    }

    #[test]
    fn updated_weights_still_train() {
        let mut flat = flat_adamw();
        let mut n = net(4);
        n = flat.step(1e-2, n.clone(), grads(&n, 0));
        let g = grads(&n, 1);
        assert_eq!(g.len(), 5, "every parameter gets a gradient after the step");
        let w0 = weights(&n);
        n = flat.step(1e-2, n.clone(), g);
        assert!(!close(&weights(&n), &w0, 1e-4));
    }

    #[test]
    fn both_layouts_put_each_piece_at_its_offset_with_zero_padding() {
        let d = Default::default();
        let shapes = [vec![3usize], vec![130], vec![2, 64], vec![1]];
        let (mut segs, mut total) = (Vec::new(), 0);
        for (i, shape) in shapes.iter().enumerate() {
            segs.push(Seg {
                id: ParamId::from(i as u64),
                shape: shape.clone(),
                offset: total,
                time: 0,
            });
            total += padded(shape.iter().product());
        }
        assert_eq!(total, 128 + 256 + 128 + 128);
        let pieces: Vec<Tensor<Flex, 1>> = segs
            .iter()
            .map(|s| Tensor::random([s.len()], Distribution::Uniform(1.0, 2.0), &d))
            .collect();
        let mut want = vec![0f32; total];
        for (s, p) in segs.iter().zip(&pieces) {
            let v = p.clone().into_data().to_vec::<f32>().unwrap();
            want[s.offset..s.offset + s.len()].copy_from_slice(&v);
        }
        let cat = by_cat(pieces.clone(), &segs, &d)
            .into_data()
            .to_vec::<f32>();
        let put = in_place(pieces, &segs, total, &d)
            .into_data()
            .to_vec::<f32>();
        assert_eq!(cat.unwrap(), want);
        assert_eq!(put.unwrap(), want);
    }

    #[test]
    fn a_record_for_other_shapes_is_refused() {
        let mut flat = flat_adamw();
        let n = net(4);
        let _ = flat.step(1e-2, n.clone(), grads(&n, 0));
        let record = flat.to_record();
        assert!(check_record(&record, &n).is_ok());
        let why = check_record(&record, &net(4)).unwrap_err();
        assert!(why.contains("unknown parameter"), "{why}");
        // Same parameter ids, another input width: `a.weight` is 7×5, its state 4×5.
        let mut other = n.clone();
        other.a.weight =
            Param::initialized(n.a.weight.id, Tensor::zeros([7, 5], &Default::default()));
        let why = check_record(&record, &other).unwrap_err();
        assert!(why.contains("shape"), "{why}");
    }
}
