//! The training loop: batches from the data pipeline, the plan's forward pass, backward,
//! AdamW with the plan's parameter groups and schedule, EMA updates, metrics.

use crate::data::{self, Dataset};
use crate::exec::{self, Batch, ExecError, Program};
use crate::schedule::{LrSchedule, ema_momentum};
use burn::module::Module;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer, Sgd, SgdConfig};
use burn::tensor::ElementConversion;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};
use canc_compiler::ir::Op;
use canc_compiler::plan::Plan;
use canc_compiler::resolved::RValue;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Errors of a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Data could not be read.
    #[error(transparent)]
    Data(#[from] data::DataError),
    /// The plan could not be executed.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// A loss became NaN or infinite.
    #[error("step {step}: loss term `{term}` is {value} (not finite); stopping")]
    NonFinite {
        /// The step.
        step: u64,
        /// The term.
        term: String,
        /// Its value.
        value: f64,
    },
    /// The device cannot be used.
    #[error("{0}")]
    Device(String),
    /// Writing metrics failed.
    #[error("cannot write `{0}`: {1}")]
    Io(PathBuf, std::io::Error),
    /// The data set has fewer images than one batch.
    #[error("the data set has {images} images, fewer than one batch of {batch}")]
    TooFewImages {
        /// Images available.
        images: usize,
        /// Batch size.
        batch: usize,
    },
}

/// Options of one run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Optimizer steps to run.
    pub steps: u64,
    /// Images per step.
    pub batch: usize,
    /// Where `metrics.jsonl` goes (none: not written).
    pub out: Option<PathBuf>,
    /// Print a line every this many steps (0: never).
    pub log_every: u64,
}

/// What one step measured.
#[derive(Debug, Clone)]
pub struct StepLog {
    /// Step index (0-based).
    pub step: u64,
    /// Weighted total.
    pub loss: f64,
    /// Each term's value.
    pub terms: Vec<(String, f64)>,
    /// Learning rate used.
    pub lr: f64,
    /// Wall time of the step, seconds.
    pub seconds: f64,
}

type Adam<B> = OptimizerAdaptor<AdamW, exec::Nets<B>, B>;
type Sgd_<B> = OptimizerAdaptor<Sgd<<B as AutodiffBackend>::InnerBackend>, exec::Nets<B>, B>;

/// The optimizer a plan's settings describe, as two parameter groups: with weight decay, and
/// without (biases, norms, position/CLS/mask tokens).
enum Opt<B: AutodiffBackend> {
    AdamW(Adam<B>, Adam<B>),
    Sgd(Sgd_<B>, Sgd_<B>),
}

impl<B: AutodiffBackend> Opt<B> {
    fn step(
        &mut self,
        lr: f64,
        model: exec::Nets<B>,
        decay: GradientsParams,
        plain: GradientsParams,
    ) -> exec::Nets<B> {
        match self {
            Opt::AdamW(a, b) => {
                let m = a.step(lr, model, decay);
                b.step(lr, m, plain)
            }
            Opt::Sgd(a, b) => {
                let m = a.step(lr, model, decay);
                b.step(lr, m, plain)
            }
        }
    }
}

fn f(plan: &Plan, k: &str, d: f64) -> f64 {
    plan.optim
        .config
        .get(k)
        .and_then(RValue::as_f64)
        .unwrap_or(d)
}

fn optimizers<B: AutodiffBackend>(plan: &Plan) -> Opt<B> {
    let wd = f(plan, "weight_decay", 0.0);
    if plan.optim.optimizer == "sgd" {
        let m = f(plan, "momentum", 0.9);
        let nesterov = plan.optim.config.get("nesterov") == Some(&RValue::Bool(true));
        let mk = |wd: f64| {
            SgdConfig::new()
                .with_weight_decay((wd > 0.0).then(|| WeightDecayConfig::new(wd as f32)))
                .with_momentum(Some(
                    MomentumConfig::new()
                        .with_momentum(m)
                        .with_nesterov(nesterov),
                ))
                .init::<B, exec::Nets<B>>()
        };
        return Opt::Sgd(mk(wd), mk(0.0));
    }
    let betas: Vec<f64> = match plan.optim.config.get("betas") {
        Some(RValue::List(xs)) => xs.iter().filter_map(RValue::as_f64).collect(),
        _ => vec![0.9, 0.999],
    };
    let mk = |wd: f64| {
        AdamWConfig::new()
            .with_beta_1(betas.first().copied().unwrap_or(0.9) as f32)
            .with_beta_2(betas.get(1).copied().unwrap_or(0.999) as f32)
            .with_epsilon(f(plan, "eps", 1e-8) as f32)
            .with_weight_decay(wd as f32)
            .init::<B, exec::Nets<B>>()
    };
    Opt::AdamW(mk(wd), mk(0.0))
}

/// Converts a data batch to tensors on `device`.
pub fn to_tensors<B: AutodiffBackend>(b: data::Batch, device: &B::Device) -> Batch<B> {
    let n = b.labels.len();
    let views = b
        .views
        .into_iter()
        .map(|(name, px, c, s)| {
            let bsz = px.len() / (c * s * s).max(1);
            let t = Tensor::<B, 4>::from_data(TensorData::new(px, [bsz, c, s, s]), device);
            (name, t)
        })
        .collect::<HashMap<_, _>>();
    let labels = (n > 0).then(|| {
        let l: Vec<i64> = b.labels.iter().map(|&x| i64::from(x)).collect();
        Tensor::<B, 1, Int>::from_data(TensorData::new(l, [n]), device)
    });
    Batch { views, labels }
}

/// The view steps of a plan: (step name, view, `from` step).
pub fn view_steps(plan: &Plan) -> Vec<(String, String, Option<String>)> {
    plan.steps
        .iter()
        .filter_map(|s| match &s.op {
            Op::View { view } => Some((
                s.name.clone(),
                view.clone(),
                s.inputs.first().map(|i| i.value.clone()),
            )),
            _ => None,
        })
        .collect()
}

/// Trains `program` on `ds` for `opts.steps` steps; returns every step's log.
pub fn train<B: AutodiffBackend>(
    program: &mut Program<B>,
    ds: &Dataset,
    opts: &RunOptions,
    device: &B::Device,
) -> Result<Vec<StepLog>, TrainError> {
    let plan = program.plan.clone();
    let seed = plan.train.get("seed").and_then(RValue::as_i64).unwrap_or(0) as u64;
    if ds.n < opts.batch {
        return Err(TrainError::TooFewImages {
            images: ds.n,
            batch: opts.batch,
        });
    }
    let per_epoch = (ds.n / opts.batch) as u64;
    let sched = LrSchedule::from_plan(&plan.optim, opts.steps);
    let views = view_steps(&plan);
    let mut opt = optimizers::<B>(&plan);
    let no_decay = exec::no_decay_ids::<B, _>(&program.model);
    let mut metrics = match &opts.out {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| TrainError::Io(dir.clone(), e))?;
            let p = dir.join("metrics.jsonl");
            Some((
                std::fs::File::create(&p).map_err(|e| TrainError::Io(p.clone(), e))?,
                p,
            ))
        }
        None => None,
    };
    let mut logs = Vec::new();
    let mut order: Vec<usize> = Vec::new();
    for step in 0..opts.steps {
        let t0 = Instant::now();
        let epoch = step / per_epoch;
        let within = (step % per_epoch) as usize;
        if within == 0 {
            order = data::epoch_order(ds.n, seed, epoch);
        }
        let idx = &order[within * opts.batch..(within + 1) * opts.batch];
        let b = data::make_batch(ds, idx, &plan.views, &views, seed, epoch, step)?;
        let batch = to_tensors::<B>(b, device);
        let mut rng = exec::step_rng(seed, step);
        let fwd = program.forward(&batch, &mut rng)?;
        let mut terms = Vec::new();
        for (name, t) in &fwd.terms {
            let v = f64::from(t.clone().into_scalar().elem::<f32>());
            if !v.is_finite() {
                return Err(TrainError::NonFinite {
                    step,
                    term: name.clone(),
                    value: v,
                });
            }
            terms.push((name.clone(), v));
        }
        let loss = f64::from(fwd.total.clone().into_scalar().elem::<f32>());
        let grads = fwd.total.backward();
        let mut g_decay = GradientsParams::from_grads(grads, &program.model);
        let g_plain = split(&mut g_decay, &no_decay, &program.model);
        let lr = sched.at(step);
        let model = std::mem::replace(&mut program.model, exec::Nets { nets: Vec::new() });
        program.model = opt.step(lr, model, g_decay, g_plain);
        let total_steps = opts.steps;
        let roles: HashMap<String, _> = plan
            .networks
            .iter()
            .map(|n| (n.name.clone(), n.role.clone()))
            .collect();
        program.update_teachers(|name| {
            roles
                .get(name)
                .and_then(|r| ema_momentum(r, step, total_steps))
                .unwrap_or(1.0)
        });
        let log = StepLog {
            step,
            loss,
            terms,
            lr,
            seconds: t0.elapsed().as_secs_f64(),
        };
        if let Some((file, path)) = &mut metrics {
            let mut obj = serde_json::Map::new();
            obj.insert("step".into(), step.into());
            obj.insert("loss".into(), loss.into());
            for (k, v) in &log.terms {
                obj.insert(k.clone(), (*v).into());
            }
            obj.insert("lr".into(), lr.into());
            obj.insert("seconds".into(), log.seconds.into());
            writeln!(file, "{}", serde_json::Value::Object(obj))
                .map_err(|e| TrainError::Io(path.clone(), e))?;
        }
        if opts.log_every > 0 && (step % opts.log_every == 0 || step + 1 == opts.steps) {
            let terms: Vec<String> = log
                .terms
                .iter()
                .map(|(k, v)| format!("{k} {v:.4}"))
                .collect();
            eprintln!(
                "step {:>5}  loss {:.4}  ({})  lr {:.2e}  {:.0} ms",
                step,
                loss,
                terms.join(", "),
                lr,
                log.seconds * 1e3
            );
        }
        logs.push(log);
    }
    Ok(logs)
}

/// Moves the gradients of `ids` out of `grads` into a new set.
fn split<B: AutodiffBackend>(
    grads: &mut GradientsParams,
    ids: &[burn::module::ParamId],
    model: &exec::Nets<B>,
) -> GradientsParams {
    struct Mover<'a> {
        from: &'a mut GradientsParams,
        to: GradientsParams,
        ids: &'a [burn::module::ParamId],
    }
    impl<B: AutodiffBackend> burn::module::ModuleVisitor<B> for Mover<'_> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
            if self.ids.contains(&param.id)
                && let Some(g) = self.from.remove::<B::InnerBackend, D>(param.id)
            {
                self.to.register::<B::InnerBackend, D>(param.id, g);
            }
        }
    }
    let mut m = Mover {
        from: grads,
        to: GradientsParams::new(),
        ids,
    };
    model.visit(&mut m);
    m.to
}

/// Trains with the plan's batch capped at `batch`, for `steps` steps, writing into `out`.
pub fn smoke<B: AutodiffBackend>(
    plan: Plan,
    ds: &Dataset,
    steps: u64,
    batch: usize,
    out: Option<&Path>,
    device: &B::Device,
) -> Result<Vec<StepLog>, TrainError> {
    let mut program = Program::<B>::new(plan, device)?;
    let opts = RunOptions {
        steps,
        batch,
        out: out.map(Path::to_path_buf),
        log_every: 1,
    };
    train(&mut program, ds, &opts, device)
}
