//! The plan interpreter: walks a plan's steps in order over a table of values, calling the
//! networks and losses the steps name. Nothing here knows a method: CAN, MAE, SimCLR, MoCo v3
//! and CMAE differ only in their plans.

use crate::loss;
use crate::nn::{self, Network};
use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{FloatDType, Int, Tensor, TensorData};
use canc_compiler::ir::{Dist, MaskStrategy, NetKind, Op, PoolMode, Port, Selection};
use canc_compiler::plan::{Plan, Role, Step};
use canc_compiler::shape::Fact;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;
use std::collections::HashMap;

/// Errors while executing a plan.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// A network could not be built from the plan.
    #[error("network `{0}`: {1}")]
    Build(String, String),
    /// A step read a value of the wrong kind (a compiler/runtime disagreement).
    #[error("step `{step}`: {what}")]
    Step {
        /// The step.
        step: String,
        /// What went wrong.
        what: String,
    },
    /// The batch lacks a view or labels a step needs.
    #[error("the batch has no input for step `{0}`")]
    MissingInput(String),
    /// `train.precision` names a precision the runtime does not train in.
    #[error(
        "train.precision = {0} is not supported: f16 needs loss scaling, which canc does not \
         implement; use bf16 (f32's range, no scaling needed) or f32"
    )]
    Precision(String),
}

/// The dtype of the transformer blocks' matrix products for `plan`'s `train.precision`:
/// `None` for f32, bf16 for bf16 (autocast, f32 master weights); f16 is refused.
pub fn matmul_dtype(plan: &Plan) -> Result<Option<FloatDType>, ExecError> {
    match plan.train.get("precision").and_then(|v| v.as_str()) {
        None | Some("f32") => Ok(None),
        Some("bf16") => Ok(Some(FloatDType::BF16)),
        Some(other) => Err(ExecError::Precision(other.to_string())),
    }
}

/// The trainable networks of a plan, in plan order (EMA networks are not here).
#[derive(Module, Debug)]
pub struct Nets<B: Backend> {
    /// One per trained or untrained (non-EMA) network of the plan.
    pub nets: Vec<Network<B>>,
}

/// A compiled program: the plan, its trainable networks and its EMA teachers.
#[derive(Debug)]
pub struct Program<B: AutodiffBackend> {
    /// The plan.
    pub plan: Plan,
    /// Trainable networks.
    pub model: Nets<B>,
    /// Network name → index into `model.nets`.
    pub index: HashMap<String, usize>,
    /// EMA teachers (no autodiff): name, index of the source in `model.nets`, the copy.
    pub teachers: Vec<(String, usize, Network<B::InnerBackend>)>,
    /// Where the networks live; masks and noise are created here.
    pub device: B::Device,
    /// Run the plan's batched calls as one call each, or one by one: [`batch_calls`] decides
    /// the default.
    pub batch_calls: bool,
}

/// One input batch: the images of each view step ([B, C, S, S], normalised) and the labels.
pub struct Batch<B: Backend> {
    /// View step name → images.
    pub views: HashMap<String, Tensor<B, 4>>,
    /// Labels, if the data has them.
    pub labels: Option<Tensor<B, 1, Int>>,
}

/// A value of the plan's table.
#[derive(Debug, Clone)]
enum Value<B: Backend> {
    Image(Tensor<B, 4>),
    Tokens(Tensor<B, 3>),
    Emb(Tensor<B, 2>),
    Mask {
        keep: Tensor<B, 2, Int>,
        mask: Tensor<B, 2>,
    },
    Sigma(Tensor<B, 1>),
    Labels(Tensor<B, 1, Int>),
    Scalar(Tensor<B, 1>),
}

/// The result of one forward pass.
pub struct Forward<B: Backend> {
    /// Σ weight · term.
    pub total: Tensor<B, 1>,
    /// Each objective term's value, in objective order.
    pub terms: Vec<(String, Tensor<B, 1>)>,
    /// The first embedding an embedding loss (InfoNCE, SupCon, cosine) compares, in plan
    /// order, detached: the projector's (or predictor's) output whose collapse the run
    /// monitors. None when the plan has no such loss.
    pub embedding: Option<Tensor<B, 2>>,
}

impl<B: AutodiffBackend> Program<B> {
    /// Builds every network of `plan` on `device`; EMA teachers start as copies of their
    /// sources.
    pub fn new(plan: Plan, device: &B::Device) -> Result<Self, ExecError> {
        // Initial weights come from the backend's global RNG: seed it from the spec, and hold a
        // lock so that programs built concurrently (tests, sweeps) do not interleave their draws.
        static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
        let seed = plan
            .train
            .get("seed")
            .and_then(canc_compiler::resolved::RValue::as_i64)
            .unwrap_or(0) as u64;
        B::seed(device, seed);
        let matmul = matmul_dtype(&plan)?;
        let mut nets = Vec::new();
        let mut index = HashMap::new();
        for n in &plan.networks {
            if matches!(n.role, Role::Ema { .. }) {
                continue;
            }
            let mut net = nn::build::<B>(n, device)
                .map_err(|e| ExecError::Build(n.name.clone(), e.to_string()))?;
            net.set_matmul(matmul);
            index.insert(n.name.clone(), nets.len());
            nets.push(net);
        }
        let model = Nets { nets };
        // Burn initialises parameters lazily, at first use: force it now, under the lock.
        model.visit(&mut Collect::<B>(Vec::new()));
        let mut teachers = Vec::new();
        for n in &plan.networks {
            if let Role::Ema { source, .. } = &n.role {
                // (after `model` is initialised: `valid()` copies the initialised weights)
                let &src = index.get(source).ok_or_else(|| {
                    ExecError::Build(n.name.clone(), format!("EMA source `{source}` not built"))
                })?;
                teachers.push((n.name.clone(), src, model.nets[src].valid()));
            }
        }
        Ok(Program {
            plan,
            model,
            index,
            teachers,
            device: device.clone(),
            batch_calls: batch_calls::<B>(),
        })
    }

    /// Moves every teacher towards its source: `t ← m·t + (1 − m)·s`, for `momentum(name)`.
    pub fn update_teachers(&mut self, momentum: impl Fn(&str) -> f64) {
        // Each teacher is moved out and back rather than cloned, so that on the CPU its
        // weights are rewritten in place (a clone would share, and so copy, every buffer).
        let teachers = std::mem::take(&mut self.teachers);
        for (name, src, teacher) in teachers {
            let mut collect = Collect::<B::InnerBackend>(Vec::new());
            self.model.nets[src].valid().visit(&mut collect);
            let m = momentum(&name);
            let teacher = match many(&teacher, &collect.0, m) {
                Some(updated) => teacher.map(&mut Put(updated.into_iter())),
                None => teacher.map(&mut Ema {
                    source: collect.0.into_iter(),
                    m,
                }),
            };
            self.teachers.push((name, src, teacher));
        }
    }

    /// Network calls one forward pass makes: each batch group counts once when
    /// [`Program::batch_calls`] is on.
    pub fn network_calls(&self) -> usize {
        let calls = self
            .plan
            .steps
            .iter()
            .filter(|s| matches!(s.op, Op::Call { .. }));
        let merged: usize = if self.batch_calls {
            self.plan.batch_groups().iter().map(|g| g.len() - 1).sum()
        } else {
            0
        };
        calls.count() - merged
    }

    /// Runs the plan's forward pass on `batch`, drawing masks and noise from `rng`.
    pub fn forward(&self, batch: &Batch<B>, rng: &mut StdRng) -> Result<Forward<B>, ExecError> {
        forward(self, batch, rng)
    }
}

/// Flattened float parameters in visiting order.
struct Collect<B: Backend>(Vec<Tensor<B, 1>>);

impl<B: Backend> ModuleVisitor<B> for Collect<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(param.val().flatten(0, D - 1));
    }
}

/// The EMA step of every parameter of `teacher` towards `source` (flat, in [`Collect`]'s
/// order) by canc's multi-tensor kernel, on the backends that have it (CUDA, wgpu). Elsewhere
/// `None`, and [`Ema`] steps each tensor (in place on the CPU, which a collected copy of the
/// teacher's values would prevent).
fn many<B: Backend>(
    teacher: &Network<B>,
    source: &[Tensor<B, 1>],
    m: f64,
) -> Option<Vec<Tensor<B, 1>>> {
    if !crate::ops::cube::runs_on::<B>() {
        return None;
    }
    let mut t = Collect::<B>(Vec::new());
    teacher.visit(&mut t);
    crate::ops::cube::ema_many(&t.0, source, m)
}

/// Gives each float parameter, in [`Collect`]'s order, the next of these flat values.
struct Put<B: Backend>(std::vec::IntoIter<Tensor<B, 1>>);

impl<B: Backend> ModuleMapper<B> for Put<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let Some(v) = self.0.next() else {
            return param;
        };
        param.map(|t| v.reshape(t.shape()))
    }
}

/// Applies the EMA update to each float parameter, in the same order as [`Collect`].
struct Ema<B: Backend> {
    source: std::vec::IntoIter<Tensor<B, 1>>,
    m: f64,
}

impl<B: Backend> ModuleMapper<B> for Ema<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let Some(src) = self.source.next() else {
            return param;
        };
        let m = self.m;
        param.map(|t| crate::ops::ema_update(t, src, m))
    }
}

/// Whether a program runs the plan's batched calls as one call each: `CANC_BATCH_CALLS=1` /
/// `=0` in the environment decides; without it, on GPUs (a step launches each layer's kernels
/// once for all the views) and not on the CPU, where the stacked activations measured slower
/// (BENCHMARKS.md). Both compute the same values.
pub fn batch_calls<B: Backend>() -> bool {
    crate::backend::gpu_default::<B>("CANC_BATCH_CALLS")
}

fn err(step: &Step, what: impl Into<String>) -> ExecError {
    ExecError::Step {
        step: step.name.clone(),
        what: what.into(),
    }
}

fn sample(d: &Dist, rng: &mut StdRng) -> f64 {
    match *d {
        Dist::Const(x) => x,
        Dist::Uniform(a, b) => a + (b - a) * rng.random::<f64>(),
        Dist::LogUniform(a, b) => (a.ln() + (b.ln() - a.ln()) * rng.random::<f64>()).exp(),
        Dist::Normal(m, s) => m + s * rng.sample::<f64, _>(StandardNormal),
    }
}

/// `add_noise`'s draws for `images` images of `per` values each: a noise level per image from
/// `sigma`, then `per` values `sigma · eps`, eps ~ N(0, 1) (ziggurat sampling, in f32: about
/// a tenth of the time of the f64 Box–Muller it replaced, which took ~10 ms of host time per
/// view of 256 Fashion-MNIST images, on a GPU too). Deterministic given `rng`.
pub fn draw_noise(
    images: usize,
    per: usize,
    sigma: &Dist,
    rng: &mut StdRng,
) -> (Vec<f32>, Vec<f32>) {
    let sig: Vec<f32> = (0..images).map(|_| sample(sigma, rng) as f32).collect();
    let mut eps = Vec::with_capacity(images * per);
    for &s in &sig {
        eps.extend((0..per).map(|_| s * rng.sample::<f32, _>(StandardNormal)));
    }
    (sig, eps)
}

fn forward<B: AutodiffBackend>(
    p: &Program<B>,
    batch: &Batch<B>,
    rng: &mut StdRng,
) -> Result<Forward<B>, ExecError> {
    let device = p.device.clone();
    let mut values: HashMap<String, Value<B>> = HashMap::new();
    // Batched calls' inputs and outputs as stacked, by their member value names: a group whose
    // inputs are another group's outputs in the same order reads them without a cat.
    let mut stacked: HashMap<Vec<String>, Value<B>> = HashMap::new();
    let mut embedding = None;
    for step in &p.plan.steps {
        let get = |port: Port| -> Result<&Value<B>, ExecError> {
            let i = step
                .inputs
                .iter()
                .find(|i| i.port == port)
                .ok_or_else(|| err(step, format!("no input {port}")))?;
            values
                .get(&i.value)
                .ok_or_else(|| err(step, format!("`{}` not computed", i.value)))
        };
        // The first embedding an embedding loss compares: the one the collapse indicators watch.
        if embedding.is_none()
            && matches!(
                step.op,
                Op::InfoNce { .. } | Op::InfoNceQk { .. } | Op::SupCon { .. } | Op::Cosine
            )
            && let Value::Emb(a) = get(Port::Arg(0))?
        {
            embedding = Some(a.clone().detach());
        }
        let started = crate::profile::enabled().then(std::time::Instant::now);
        if let (Some(group), true) = (step.batch, p.batch_calls) {
            if !values.contains_key(&step.name) {
                let members: Vec<&Step> = p
                    .plan
                    .steps
                    .iter()
                    .filter(|s| s.batch == Some(group))
                    .collect();
                let out = run_group(p, &members, &values, &mut stacked)?;
                if let Some(t0) = started {
                    crate::profile::record(
                        &format!("{} = batched call ×{}", step.name, members.len()),
                        t0.elapsed(),
                    );
                }
                values.extend(out);
            }
            continue;
        }
        let out: Vec<(String, Value<B>)> = match &step.op {
            Op::View { .. } => {
                let x = batch
                    .views
                    .get(&step.name)
                    .ok_or_else(|| ExecError::MissingInput(step.name.clone()))?;
                vec![(step.name.clone(), Value::Image(x.clone()))]
            }
            Op::Labels => {
                let l = batch
                    .labels
                    .clone()
                    .ok_or_else(|| ExecError::MissingInput(step.name.clone()))?;
                vec![(step.name.clone(), Value::Labels(l))]
            }
            Op::AddNoise { sigma } => {
                let Value::Image(x) = get(Port::Arg(0))? else {
                    return Err(err(step, "add_noise needs images"));
                };
                let [b, c, h, w] = x.dims();
                let (sig, eps) = draw_noise(b, c * h * w, sigma, rng);
                let noise = Tensor::<B, 4>::from_data(TensorData::new(eps, [b, c, h, w]), &device);
                let sigma = Tensor::<B, 1>::from_data(TensorData::new(sig, [b]), &device);
                vec![
                    (step.name.clone(), Value::Image(x.clone() + noise.clone())),
                    (format!("{}.noise", step.name), Value::Image(noise)),
                    (format!("{}.sigma", step.name), Value::Sigma(sigma)),
                ]
            }
            Op::Mask {
                strategy, block, ..
            } => {
                let Fact::Mask { grid, masked } = step.out else {
                    return Err(err(step, "mask step without a mask type"));
                };
                let b = batch_size(batch);
                let (grid, kept) = (grid as usize, (grid - masked) as usize);
                let (keep, mask) = match strategy {
                    MaskStrategy::Random => nn::mask::random_keep::<B>(b, grid, kept, rng, &device),
                    MaskStrategy::Block => {
                        let side = (grid as f64).sqrt().round() as usize;
                        nn::mask::block_keep::<B>(b, side, kept, *block as usize, rng, &device)
                    }
                };
                vec![(step.name.clone(), Value::Mask { keep, mask })]
            }
            Op::Patchify { patch } => {
                let Value::Image(x) = get(Port::Arg(0))? else {
                    return Err(err(step, "patchify needs images"));
                };
                vec![(
                    step.name.clone(),
                    Value::Tokens(loss::patchify(x.clone(), *patch as usize)),
                )]
            }
            Op::PatchNorm { eps } => {
                let Value::Tokens(x) = get(Port::Arg(0))? else {
                    return Err(err(step, "patch_norm needs patches"));
                };
                vec![(
                    step.name.clone(),
                    Value::Tokens(loss::patch_norm(x.clone(), *eps)),
                )]
            }
            Op::Pool { mode } => {
                let Value::Tokens(x) = get(Port::Arg(0))? else {
                    return Err(err(step, "pool needs tokens"));
                };
                let cls = matches!(
                    step.inputs.first().and_then(|i| fact_of(&p.plan, &i.value)),
                    Some(Fact::Tokens { cls: true, .. })
                );
                let [b, n, d] = x.dims();
                let pooled = match mode {
                    PoolMode::Cls => x.clone().slice([0..b, 0..1, 0..d]),
                    PoolMode::MeanAll => x.clone().mean_dim(1),
                    PoolMode::Mean if cls => x.clone().slice([0..b, 1..n, 0..d]).mean_dim(1),
                    PoolMode::Mean => x.clone().mean_dim(1),
                };
                vec![(step.name.clone(), Value::Emb(pooled.reshape([b, d])))]
            }
            Op::StopGrad => {
                let v = match get(Port::Arg(0))?.clone() {
                    Value::Image(t) => Value::Image(t.detach()),
                    Value::Tokens(t) => Value::Tokens(t.detach()),
                    Value::Emb(t) => Value::Emb(t.detach()),
                    other => other,
                };
                vec![(step.name.clone(), v)]
            }
            Op::L2Norm => {
                let v = match get(Port::Arg(0))? {
                    Value::Tokens(t) => Value::Tokens(loss::l2norm(t.clone())),
                    Value::Emb(t) => Value::Emb(loss::l2norm(t.clone())),
                    _ => return Err(err(step, "l2norm needs tokens or embeddings")),
                };
                vec![(step.name.clone(), v)]
            }
            Op::Call { .. } => {
                let args = step
                    .inputs
                    .iter()
                    .map(|i| Ok((i.port.clone(), get(i.port.clone())?.clone())))
                    .collect::<Result<Vec<_>, ExecError>>()?;
                vec![(step.name.clone(), run_call(p, step, args)?)]
            }
            Op::InfoNce {
                temperature,
                sum_views,
            } => {
                let (a, b) = two_emb(step, get(Port::Arg(0))?, get(Port::Arg(1))?)?;
                vec![(
                    step.name.clone(),
                    Value::Scalar(loss::infonce(a, b, *temperature, *sum_views)),
                )]
            }
            Op::InfoNceQk {
                temperature,
                scale_2tau,
            } => {
                let (a, b) = two_emb(step, get(Port::Arg(0))?, get(Port::Arg(1))?)?;
                vec![(
                    step.name.clone(),
                    Value::Scalar(loss::infonce_qk(a, b, *temperature, *scale_2tau)),
                )]
            }
            Op::SupCon {
                temperature,
                base_temperature,
            } => {
                let (a, b) = two_emb(step, get(Port::Arg(0))?, get(Port::Arg(1))?)?;
                let Value::Labels(l) = get(Port::Kw("labels"))? else {
                    return Err(err(step, "supcon needs labels"));
                };
                vec![(
                    step.name.clone(),
                    Value::Scalar(loss::supcon(
                        a,
                        b,
                        l.clone(),
                        *temperature,
                        *base_temperature,
                    )),
                )]
            }
            Op::Cosine => {
                let (a, b) = two_emb(step, get(Port::Arg(0))?, get(Port::Arg(1))?)?;
                vec![(step.name.clone(), Value::Scalar(loss::cosine(a, b)))]
            }
            Op::Mse { on } | Op::L1 { on } => {
                let l1 = matches!(step.op, Op::L1 { .. });
                let select = match on {
                    Selection::All => None,
                    sel => match get(Port::Kw("on"))? {
                        Value::Mask { mask, .. } if *sel == Selection::Masked => Some(mask.clone()),
                        Value::Mask { mask, .. } => Some(mask.clone().neg().add_scalar(1.0)),
                        _ => return Err(err(step, "`on` is not a mask")),
                    },
                };
                let v = match (get(Port::Arg(0))?, get(Port::Arg(1))?) {
                    (Value::Tokens(a), Value::Tokens(b)) if l1 => {
                        loss::l1(a.clone(), b.clone(), select)
                    }
                    (Value::Tokens(a), Value::Tokens(b)) => loss::mse(a.clone(), b.clone(), select),
                    (Value::Emb(a), Value::Emb(b)) => loss::mse_embedding(a.clone(), b.clone()),
                    _ => return Err(err(step, "mse/l1 inputs do not match")),
                };
                vec![(step.name.clone(), Value::Scalar(v))]
            }
            Op::Mean | Op::Sum => {
                let mut acc: Option<Tensor<B, 1>> = None;
                let mut n = 0usize;
                for i in &step.inputs {
                    let Some(Value::Scalar(s)) = values.get(&i.value) else {
                        return Err(err(step, format!("`{}` is not a loss", i.value)));
                    };
                    acc = Some(match acc {
                        Some(a) => a + s.clone(),
                        None => s.clone(),
                    });
                    n += 1;
                }
                let mut v = acc.ok_or_else(|| err(step, "no inputs"))?;
                if matches!(step.op, Op::Mean) {
                    v = v.div_scalar(n as f64);
                }
                vec![(step.name.clone(), Value::Scalar(v))]
            }
        };
        if let Some(t0) = started {
            let op = format!("{:?}", step.op);
            let op = op.split([' ', '{', '(']).next().unwrap_or_default();
            crate::profile::record(&format!("{} = {op}", step.name), t0.elapsed());
        }
        values.extend(out);
    }
    let mut terms = Vec::new();
    let mut total: Option<Tensor<B, 1>> = None;
    for (name, w) in &p.plan.objective.terms {
        let Some(Value::Scalar(v)) = values.get(name) else {
            return Err(ExecError::Step {
                step: name.clone(),
                what: "objective term is not a computed loss".into(),
            });
        };
        let weighted = v.clone().mul_scalar(*w);
        total = Some(match total {
            Some(t) => t + weighted,
            None => weighted,
        });
        terms.push((name.clone(), v.clone()));
    }
    let total = total.ok_or_else(|| ExecError::Step {
        step: "objective".into(),
        what: "no terms".into(),
    })?;
    Ok(Forward {
        total,
        terms,
        embedding,
    })
}

fn batch_size<B: Backend>(batch: &Batch<B>) -> usize {
    batch
        .views
        .values()
        .next()
        .map(|t| t.dims()[0])
        .or_else(|| batch.labels.as_ref().map(|l| l.dims()[0]))
        .unwrap_or(0)
}

/// The type the plan gives a value name.
fn fact_of(plan: &Plan, value: &str) -> Option<Fact> {
    plan.step(value).map(|s| s.out.clone())
}

fn two_emb<B: Backend>(
    step: &Step,
    a: &Value<B>,
    b: &Value<B>,
) -> Result<(Tensor<B, 2>, Tensor<B, 2>), ExecError> {
    match (a, b) {
        (Value::Emb(a), Value::Emb(b)) => Ok((a.clone(), b.clone())),
        _ => Err(err(step, "expects two embeddings")),
    }
}

fn call<B: Backend>(
    net: &Network<B>,
    kind: NetKind,
    x: Value<B>,
    keep: Option<Tensor<B, 2, Int>>,
    sigma: Option<Tensor<B, 1>>,
) -> Result<Value<B>, String> {
    Ok(match (net, kind, x) {
        (Network::Vit(v), NetKind::Vit, Value::Image(x)) => Value::Tokens(v.forward(x, keep)),
        (Network::Decoder(d), NetKind::VitDecoder, Value::Tokens(t)) => {
            Value::Tokens(d.forward(t, keep, sigma))
        }
        (Network::Mlp(m), NetKind::Mlp, Value::Emb(x)) => Value::Emb(m.forward(x)),
        _ => return Err("network called with an input of the wrong kind".into()),
    })
}

/// Calls an EMA teacher (no autodiff) on an autodiff value; the result carries no gradient.
fn call_inner<B: AutodiffBackend>(
    net: &Network<B::InnerBackend>,
    kind: NetKind,
    x: Value<B>,
    keep: Option<Tensor<B, 2, Int>>,
    sigma: Option<Tensor<B, 1>>,
) -> Result<Value<B>, String> {
    let keep = keep.map(|k| k.inner());
    let sigma = sigma.map(|s| s.inner());
    let x = match x {
        Value::Image(t) => Value::Image(t.inner()),
        Value::Tokens(t) => Value::Tokens(t.inner()),
        Value::Emb(t) => Value::Emb(t.inner()),
        _ => return Err("EMA network called with a non-tensor".into()),
    };
    // An EMA MLP normalises with batch statistics, as the online one does (MoCo v3 / BYOL run
    // the momentum encoder's BatchNorm in training mode); Burn's non-autodiff default would
    // use running statistics.
    let out = match (net, kind, x) {
        (Network::Mlp(m), NetKind::Mlp, Value::Emb(x)) => Value::Emb(m.forward_mode(x, true)),
        (net, kind, x) => call(net, kind, x, keep, sigma)?,
    };
    Ok(match out {
        Value::Tokens(t) => Value::Tokens(Tensor::from_inner(t)),
        Value::Emb(t) => Value::Emb(Tensor::from_inner(t)),
        _ => return Err("unexpected EMA output".into()),
    })
}

/// Runs one call step on its inputs (port and value, in the step's port order).
fn run_call<B: AutodiffBackend>(
    p: &Program<B>,
    step: &Step,
    args: Vec<(Port, Value<B>)>,
) -> Result<Value<B>, ExecError> {
    let Op::Call {
        network, kind, ema, ..
    } = &step.op
    else {
        return Err(err(step, "not a network call"));
    };
    let mut x = None;
    let (mut keep, mut sigma) = (None, None);
    for (port, v) in args {
        match (port, v) {
            (Port::Arg(0), v) => x = Some(v),
            (Port::Kw("mask"), Value::Mask { keep: k, .. }) => keep = Some(k),
            (Port::Kw("mask"), _) => return Err(err(step, "mask input is not a mask")),
            (Port::Kw("cond"), Value::Sigma(s)) => sigma = Some(s),
            (Port::Kw("cond"), _) => return Err(err(step, "cond input is not sigma")),
            (port, _) => return Err(err(step, format!("unexpected input {port}"))),
        }
    }
    let x = x.ok_or_else(|| err(step, "no input"))?;
    if *ema {
        let (_, _, teacher) = p
            .teachers
            .iter()
            .find(|(n, _, _)| n == network)
            .ok_or_else(|| err(step, format!("no EMA network `{network}`")))?;
        call_inner::<B>(teacher, *kind, x, keep, sigma).map_err(|e| err(step, e))
    } else {
        let &i = p
            .index
            .get(network)
            .ok_or_else(|| err(step, format!("no network `{network}`")))?;
        call(&p.model.nets[i], *kind, x, keep, sigma).map_err(|e| err(step, e))
    }
}

/// Runs a batch group's calls as one: each input stacked along the batch dimension (or read
/// from `stacked` when an earlier group produced exactly it), one call, the output split back
/// into the members' values. Member inputs match port by port (the compiler's grouping rule).
fn run_group<B: AutodiffBackend>(
    p: &Program<B>,
    members: &[&Step],
    values: &HashMap<String, Value<B>>,
    stacked: &mut HashMap<Vec<String>, Value<B>>,
) -> Result<Vec<(String, Value<B>)>, ExecError> {
    let first = members.first().ok_or(ExecError::Step {
        step: "batch group".into(),
        what: "no members".into(),
    })?;
    let mut args = Vec::new();
    let mut sizes = Vec::new();
    for (k, input) in first.inputs.iter().enumerate() {
        let names = members
            .iter()
            .map(|m| match m.inputs.get(k) {
                Some(i) if i.port == input.port => Ok(i.value.clone()),
                _ => Err(err(m, "batched with a call of different inputs")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let parts = names
            .iter()
            .map(|n| {
                values
                    .get(n)
                    .cloned()
                    .ok_or_else(|| err(first, format!("`{n}` not computed")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if input.port == Port::Arg(0) {
            sizes = parts.iter().map(Value::batch_len).collect();
        }
        let v = match stacked.get(&names) {
            Some(v) => v.clone(),
            None => {
                let v = Value::cat(parts).map_err(|e| err(first, e))?;
                stacked.insert(names, v.clone());
                v
            }
        };
        args.push((input.port.clone(), v));
    }
    let out = run_call(p, first, args)?;
    let parts = out.clone().split(&sizes).map_err(|e| err(first, e))?;
    let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    stacked.insert(names.clone(), out);
    Ok(names.into_iter().zip(parts).collect())
}

impl<B: Backend> Value<B> {
    /// Images (or rows) in the batch.
    fn batch_len(&self) -> usize {
        match self {
            Value::Image(t) => t.dims()[0],
            Value::Tokens(t) => t.dims()[0],
            Value::Emb(t) => t.dims()[0],
            Value::Mask { keep, .. } => keep.dims()[0],
            Value::Sigma(t) | Value::Scalar(t) => t.dims()[0],
            Value::Labels(t) => t.dims()[0],
        }
    }

    /// Values of one kind stacked along the batch dimension.
    fn cat(parts: Vec<Value<B>>) -> Result<Value<B>, String> {
        macro_rules! stack {
            ($variant:ident) => {{
                let ts = parts
                    .into_iter()
                    .map(|v| match v {
                        Value::$variant(t) => Ok(t),
                        _ => Err("batched inputs of different kinds".to_string()),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Value::$variant(Tensor::cat(ts, 0))
            }};
        }
        Ok(match parts.first() {
            Some(Value::Image(_)) => stack!(Image),
            Some(Value::Tokens(_)) => stack!(Tokens),
            Some(Value::Emb(_)) => stack!(Emb),
            Some(Value::Sigma(_)) => stack!(Sigma),
            Some(Value::Mask { .. }) => {
                let (mut keeps, mut masks) = (Vec::new(), Vec::new());
                for v in parts {
                    let Value::Mask { keep, mask } = v else {
                        return Err("batched inputs of different kinds".into());
                    };
                    keeps.push(keep);
                    masks.push(mask);
                }
                Value::Mask {
                    keep: Tensor::cat(keeps, 0),
                    mask: Tensor::cat(masks, 0),
                }
            }
            _ => return Err("these values are not batched".into()),
        })
    }

    /// A network output split back along the batch dimension into parts of `sizes` images.
    fn split(self, sizes: &[usize]) -> Result<Vec<Value<B>>, String> {
        let total: usize = sizes.iter().sum();
        if total != self.batch_len() {
            return Err(format!(
                "batched output has {} rows, its calls {total}",
                self.batch_len()
            ));
        }
        let mut out = Vec::with_capacity(sizes.len());
        let mut at = 0;
        for &n in sizes {
            out.push(match &self {
                Value::Tokens(t) => Value::Tokens(t.clone().narrow(0, at, n)),
                Value::Emb(t) => Value::Emb(t.clone().narrow(0, at, n)),
                Value::Image(t) => Value::Image(t.clone().narrow(0, at, n)),
                _ => return Err("a network returned a value that cannot be split".into()),
            });
            at += n;
        }
        Ok(out)
    }
}

/// A seeded RNG for step `step` of a run with `seed`, independent of the data RNG.
pub fn step_rng(seed: u64, step: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED)
}

/// Every float parameter of `module` with its dotted path (`nets.0.Vit.blocks.1.attn.qkv.weight`:
/// fields, enum variants and vector indices), its id and its shape, in visiting order.
pub fn named_params<B: Backend, M: Module<B>>(module: &M) -> Vec<(String, ParamId, Vec<usize>)> {
    struct V {
        path: Vec<String>,
        out: Vec<(String, ParamId, Vec<usize>)>,
    }
    impl<B: Backend> ModuleVisitor<B> for V {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let shape = param.val().dims().to_vec();
            self.out.push((self.path.join("."), param.id, shape));
        }
    }
    let mut v = V {
        path: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut v);
    v.out
}

/// The ids of parameters that get no weight decay: rank ≤ 1 (biases, norms, tokens) and
/// position/CLS/mask tokens, the usual rule (timm, MAE).
pub fn no_decay_ids<B: Backend, M: Module<B>>(module: &M) -> Vec<ParamId> {
    named_params::<B, M>(module)
        .into_iter()
        .filter(|(name, _, shape)| {
            shape.len() <= 1
                || name.contains("pos")
                || name.contains("cls")
                || name.contains("mask_token")
        })
        .map(|(_, id, _)| id)
        .collect()
}
