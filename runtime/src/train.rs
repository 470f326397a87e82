//! The training loop: batches from the data pipeline, the plan's forward pass, backward,
//! AdamW with the plan's parameter groups and schedule, EMA updates, metrics.

use crate::data::prefetch::{BatchPlan, StepBatches, prefetch};
use crate::data::{self, Dataset};
use crate::exec::{self, Batch, ExecError, Program};
use crate::schedule::{LrSchedule, ema_momentum};
use burn::module::Module;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer, Sgd, SgdConfig};
use burn::tensor::ElementConversion;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{FloatDType, Int, Tensor, TensorData};
use canc_compiler::ir::Op;
use canc_compiler::plan::Plan;
use canc_compiler::resolved::RValue;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
    /// Writing metrics failed.
    #[error("cannot write `{0}`: {1}")]
    Io(PathBuf, std::io::Error),
    /// A checkpoint could not be written or read.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// The data set has fewer images than one batch.
    #[error("the data set has {images} images, fewer than one batch of {batch}")]
    TooFewImages {
        /// Images available.
        images: usize,
        /// Batch size.
        batch: usize,
    },
    /// The device reported an error while the step's queued work ran.
    #[error("step {step}: the device failed: {why}")]
    Device {
        /// The step.
        step: u64,
        /// The backend's message.
        why: String,
    },
}

/// Options of one run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Optimizer steps of the whole run (the schedule's length).
    pub steps: u64,
    /// Images per step.
    pub batch: usize,
    /// Where `metrics.jsonl` goes (none: not written).
    pub out: Option<PathBuf>,
    /// Print a line every this many steps (0: never).
    pub log_every: u64,
    /// The first step to run (after a resume: the checkpoint's step).
    pub start: u64,
    /// Checkpointing, if any (needs `out`).
    pub checkpoint: Option<Checkpointing>,
    /// Set (by a Ctrl-C handler) to stop after the current step, with a checkpoint.
    pub stop: Option<Arc<AtomicBool>>,
    /// Stop, with a checkpoint, after this much wall time.
    pub time_limit: Option<Duration>,
    /// Steps of batches a background thread prepares ahead (0: built inline).
    pub prefetch: usize,
    /// Wait for the device's queued work at the end of each phase of a step, so that each
    /// phase's time is its own work (GPU backends run asynchronously: without it a phase's time
    /// is when its work was queued, and the wait lands in whichever phase next reads a value).
    /// What `canc bench` does, as the PyTorch reference does; a no-op on the CPU.
    pub sync_phases: bool,
    /// AdamW on each parameter group as one flat tensor ([`crate::optim::FlatAdamW`]) or a
    /// tensor at a time ([`crate::adamw::PerTensorAdamW`]); `None`: `CANC_FLAT_ADAMW`, else
    /// flat on GPUs only. Both give the same weights and checkpoints.
    pub flat_adamw: Option<bool>,
}

impl RunOptions {
    /// `steps` steps of `batch` images from step 0, no files, no checkpoints.
    pub fn new(steps: u64, batch: usize) -> Self {
        RunOptions {
            steps,
            batch,
            out: None,
            log_every: 0,
            start: 0,
            checkpoint: None,
            stop: None,
            time_limit: None,
            prefetch: 2,
            sync_phases: false,
            flat_adamw: None,
        }
    }
}

/// When and how checkpoints are written.
#[derive(Debug, Clone)]
pub struct Checkpointing {
    /// Every this many steps (and at the end, on a stop, at the time limit).
    pub every: u64,
    /// Checkpoints kept (the newest).
    pub keep: usize,
    /// The run key recorded in each checkpoint and checked on resume.
    pub run_key: String,
}

/// How a run ended (errors aside).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every step ran.
    Finished,
    /// The stop flag was set (Ctrl-C); a checkpoint was written if checkpointing is on.
    Interrupted,
    /// `time_limit` passed; a checkpoint was written if checkpointing is on.
    TimeLimit,
}

/// What a run produced.
#[derive(Debug)]
pub struct RunEnd {
    /// How it ended.
    pub outcome: Outcome,
    /// The logs of the steps run (from `start`).
    pub logs: Vec<StepLog>,
    /// The newest checkpoint written by this run, if any.
    pub checkpoint: Option<PathBuf>,
}

/// Hooks the caller gets during a run (progress display, evaluation monitors, plots).
pub trait Observer<B: AutodiffBackend> {
    /// After each step, once its metrics line is written.
    fn on_step(&mut self, _log: &StepLog) {}
    /// After the last step of each epoch, before its metrics line is written: extra metrics
    /// (name, value) to add to that line, such as an online kNN accuracy.
    fn on_epoch_end(&mut self, _epoch: u64, _program: &Program<B>) -> Vec<(String, f64)> {
        Vec::new()
    }
    /// After a checkpoint is written.
    fn on_checkpoint(&mut self, _step: u64, _dir: &Path) {}
}

/// An observer that does nothing.
pub struct Quiet;

impl<B: AutodiffBackend> Observer<B> for Quiet {}

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
    /// Where the time went.
    pub phases: Phases,
    /// Further metrics of this step (epoch-end monitors such as `knn`).
    pub extra: Vec<(String, f64)>,
}

type Adam<B> = OptimizerAdaptor<crate::adamw::PerTensorAdamW, exec::Nets<B>, B>;
type FlatAdam<B> = crate::optim::FlatAdamW<exec::Nets<B>, B>;
type Sgd_<B> = OptimizerAdaptor<Sgd<<B as AutodiffBackend>::InnerBackend>, exec::Nets<B>, B>;

/// The optimizer a plan's settings describe, as two parameter groups: with weight decay, and
/// without (biases, norms, position/CLS/mask tokens).
enum Opt<B: AutodiffBackend> {
    /// AdamW a parameter tensor at a time, in place on the CPU (the CPU's default: see
    /// [`flat_adamw`]).
    AdamW(Adam<B>, Adam<B>),
    /// The same AdamW on each group as one flat tensor (GPUs' default).
    FlatAdamW(FlatAdam<B>, FlatAdam<B>),
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
        /// `a` on the decay group's gradients, then `b` on the others'.
        fn both<B: AutodiffBackend, O: Optimizer<exec::Nets<B>, B>>(
            (a, b): (&mut O, &mut O),
            lr: f64,
            model: exec::Nets<B>,
            decay: GradientsParams,
            plain: GradientsParams,
        ) -> exec::Nets<B> {
            let m = a.step(lr, model, decay);
            b.step(lr, m, plain)
        }
        match self {
            Opt::AdamW(a, b) => both((a, b), lr, model, decay, plain),
            Opt::FlatAdamW(a, b) => both((a, b), lr, model, decay, plain),
            Opt::Sgd(a, b) => both((a, b), lr, model, decay, plain),
        }
    }
}

/// The state of both optimizer groups, as one record: the AdamW pair or the SGD pair.
pub type OptRecord<B> = (
    Option<<Adam<B> as Optimizer<exec::Nets<B>, B>>::Record>,
    Option<<Adam<B> as Optimizer<exec::Nets<B>, B>>::Record>,
    Option<<Sgd_<B> as Optimizer<exec::Nets<B>, B>>::Record>,
    Option<<Sgd_<B> as Optimizer<exec::Nets<B>, B>>::Record>,
);

impl<B: AutodiffBackend> Opt<B> {
    /// A stand-in while the real optimizer is moved out (holds no state).
    fn placeholder() -> Self {
        Opt::Sgd(
            SgdConfig::new().init::<B, exec::Nets<B>>(),
            SgdConfig::new().init::<B, exec::Nets<B>>(),
        )
    }

    fn record(&self) -> OptRecord<B> {
        match self {
            Opt::AdamW(a, b) => (Some(a.to_record()), Some(b.to_record()), None, None),
            Opt::FlatAdamW(a, b) => (Some(a.to_record()), Some(b.to_record()), None, None),
            Opt::Sgd(a, b) => (None, None, Some(a.to_record()), Some(b.to_record())),
        }
    }

    /// Loads `r` for the networks `model`: AdamW state must match their parameters.
    fn load(self, r: OptRecord<B>, model: &exec::Nets<B>) -> Result<Self, String> {
        match (self, r) {
            (Opt::AdamW(a, b), (Some(ra), Some(rb), None, None)) => {
                crate::optim::check_record(&ra, model)?;
                crate::optim::check_record(&rb, model)?;
                Ok(Opt::AdamW(a.load_record(ra), b.load_record(rb)))
            }
            (Opt::FlatAdamW(a, b), (Some(ra), Some(rb), None, None)) => {
                crate::optim::check_record(&ra, model)?;
                crate::optim::check_record(&rb, model)?;
                Ok(Opt::FlatAdamW(a.load_record(ra), b.load_record(rb)))
            }
            (Opt::Sgd(a, b), (None, None, Some(ra), Some(rb))) => {
                Ok(Opt::Sgd(a.load_record(ra), b.load_record(rb)))
            }
            _ => Err("the checkpoint's optimizer is not the plan's".into()),
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

fn optimizers<B: AutodiffBackend>(plan: &Plan, flat: Option<bool>) -> Opt<B> {
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
    let (b1, b2) = (
        betas.first().copied().unwrap_or(0.9) as f32,
        betas.get(1).copied().unwrap_or(0.999) as f32,
    );
    let eps = f(plan, "eps", 1e-8) as f32;
    if flat.unwrap_or_else(flat_adamw::<B>) {
        let mk = |wd: f64| FlatAdam::<B>::new(b1, b2, eps, wd as f32);
        return Opt::FlatAdamW(mk(wd), mk(0.0));
    }
    let mk = |wd: f64| crate::adamw::PerTensorAdamW::new(b1, b2, eps, wd as f32).init();
    Opt::AdamW(mk(wd), mk(0.0))
}

/// Whether AdamW steps each parameter group as one flat tensor ([`crate::optim::FlatAdamW`])
/// when [`RunOptions::flat_adamw`] does not say: `CANC_FLAT_ADAMW=1` / `=0` in the environment
/// decides; without it, on GPUs (CAN: 48 kernel launches per step against about 1,660) and not
/// on the CPU, where the flat buffers' extra passes over memory measured slower (optimizer phase
/// 39–44 ms vs 16–17 ms per CAN step, batch 64, for Burn's per-tensor AdamW; canc's in-place one
/// is faster still). Both give bitwise-identical weights and the same checkpoint record. With
/// Burn's kernel fusion (`--features cuda-fusion`) the default is per tensor too: fusion merges
/// the per-tensor updates' element-wise ops across tensors (CAN: 74 launches in the optimizer
/// phase, counted on wgpu with fusion) while the flat layout kept one copy per tensor (242).
fn flat_adamw<B: AutodiffBackend>() -> bool {
    use crate::backend::{env_switch, is_gpu, kernel_fusion};
    env_switch("CANC_FLAT_ADAMW").unwrap_or_else(|| is_gpu::<B>() && !kernel_fusion::<B>())
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
    let mut trainer = Trainer::new(program, ds, opts)?;
    Ok(run(&mut trainer, program, ds, opts, device, &mut Quiet)?.logs)
}

/// Opens `dir/metrics.jsonl` for a run starting at `start`: created afresh at step 0; on a
/// resume, the lines of steps at or after `start` (written after the checkpoint, before the
/// interruption) are dropped, as is a partial last line, so the file reads as one run.
fn open_metrics(dir: &Path, start: u64) -> Result<(std::fs::File, PathBuf), TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::Io(dir.to_path_buf(), e))?;
    let p = dir.join("metrics.jsonl");
    let err = |e| TrainError::Io(p.clone(), e);
    if start > 0 {
        let old = std::fs::read_to_string(&p).unwrap_or_default();
        let kept: String = old
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v.get("step").and_then(serde_json::Value::as_u64))
                    .is_some_and(|s| s < start)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        crate::checkpoint::write_atomic(&p, kept.as_bytes())?;
        let f = std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .map_err(err)?;
        return Ok((f, p));
    }
    let f = std::fs::File::create(&p).map_err(err)?;
    Ok((f, p))
}

/// Runs steps `opts.start..opts.steps` of `trainer` on `program`: metrics lines, epoch-end
/// hooks, checkpoints every `opts.checkpoint.every` steps and at the end, and a clean stop (with
/// a checkpoint) when `opts.stop` is set or `opts.time_limit` passes. A non-finite loss returns
/// [`TrainError::NonFinite`] before the optimizer touches the weights, so the last checkpoint
/// stays the last good state.
pub fn run<B: AutodiffBackend>(
    trainer: &mut Trainer<B>,
    program: &mut Program<B>,
    ds: &Dataset,
    opts: &RunOptions,
    device: &B::Device,
    observer: &mut dyn Observer<B>,
) -> Result<RunEnd, TrainError> {
    let began = Instant::now();
    let mut metrics = match &opts.out {
        Some(dir) => Some(open_metrics(dir, opts.start)?),
        None => None,
    };
    let ckpt = match (&opts.checkpoint, &opts.out) {
        (Some(c), Some(dir)) => Some((c, dir)),
        _ => None,
    };
    let mut logs = Vec::new();
    let mut last_ckpt = None;
    let mut outcome = Outcome::Finished;
    let bp = trainer.batches.clone();
    prefetch(ds, &bp, opts.start..opts.steps, opts.prefetch, |queue| {
        while let Some((batches, wait)) = queue.next_timed() {
            let batches = batches?;
            let step = batches.step;
            let mut log = trainer.step_with(program, batches, wait, device)?;
            if (step + 1) % trainer.per_epoch == 0 {
                let epoch = (step + 1) / trainer.per_epoch - 1;
                log.extra.extend(observer.on_epoch_end(epoch, program));
            }
            if let Some((file, path)) = &mut metrics {
                writeln!(file, "{}", log.to_json()).map_err(|e| TrainError::Io(path.clone(), e))?;
            }
            if opts.log_every > 0 && (step % opts.log_every == 0 || step + 1 == opts.steps) {
                eprintln!("{}", log.line());
            }
            observer.on_step(&log);
            let done = step + 1;
            if opts.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
                outcome = Outcome::Interrupted;
            } else if opts.time_limit.is_some_and(|t| began.elapsed() >= t) {
                outcome = Outcome::TimeLimit;
            }
            let stopping = outcome != Outcome::Finished;
            let loss = log.loss;
            logs.push(log);
            if let Some((c, dir)) = ckpt
                && (done % c.every.max(1) == 0 || done == opts.steps || stopping)
            {
                if let Some((file, path)) = &mut metrics {
                    file.sync_data()
                        .map_err(|e| TrainError::Io(path.clone(), e))?;
                }
                if let Some(name) = first_non_finite_param(program) {
                    return Err(TrainError::NonFinite {
                        step,
                        term: format!("parameter `{name}` after the update"),
                        value: f64::NAN,
                    });
                }
                let files = crate::checkpoint::encode(program, trainer.optimizer_record())?;
                let d = crate::checkpoint::save(
                    dir,
                    done,
                    opts.steps,
                    &c.run_key,
                    Some(loss),
                    files,
                    c.keep,
                )?;
                observer.on_checkpoint(done, &d);
                last_ckpt = Some(d);
            }
            if stopping {
                break;
            }
        }
        Ok::<(), TrainError>(())
    })?;
    Ok(RunEnd {
        outcome,
        logs,
        checkpoint: last_ckpt,
    })
}

impl StepLog {
    /// One `metrics.jsonl` object: step, loss, one field per term, lr and timings.
    pub fn to_json(&self) -> serde_json::Value {
        let mut obj = serde_json::Map::new();
        obj.insert("step".into(), self.step.into());
        obj.insert("loss".into(), self.loss.into());
        for (k, v) in &self.terms {
            obj.insert(k.clone(), (*v).into());
        }
        obj.insert("lr".into(), self.lr.into());
        obj.insert("seconds".into(), self.seconds.into());
        for (k, v) in self.phases.named() {
            obj.insert(format!("{k}_s"), v.into());
        }
        for (k, v) in &self.extra {
            obj.insert(k.clone(), (*v).into());
        }
        serde_json::Value::Object(obj)
    }

    /// A human progress line.
    pub fn line(&self) -> String {
        let terms: Vec<String> = self
            .terms
            .iter()
            .map(|(k, v)| format!("{k} {v:.4}"))
            .collect();
        format!(
            "step {:>5}  loss {:.4}  ({})  lr {:.2e}  {:.0} ms",
            self.step,
            self.loss,
            terms.join(", "),
            self.lr,
            self.seconds * 1e3
        )
    }
}

/// Seconds spent in each phase of one step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Phases {
    /// Decoding and augmenting the batch, and copying it to the device.
    pub data: f64,
    /// The plan's forward pass.
    pub forward: f64,
    /// Backpropagation, and the one read of the step's loss values that follows it (on a
    /// GPU without [`RunOptions::sync_phases`], that read is where the step waits for the
    /// device).
    pub backward: f64,
    /// Clipping, optimizer step and EMA update.
    pub optimizer: f64,
}

impl Phases {
    /// `(name, seconds)` pairs.
    pub fn named(&self) -> [(&'static str, f64); 4] {
        [
            ("data", self.data),
            ("forward", self.forward),
            ("backward", self.backward),
            ("optimizer", self.optimizer),
        ]
    }
}

/// The state of a run between steps: optimizer, schedule, how batches are cut.
pub struct Trainer<B: AutodiffBackend> {
    opt: Opt<B>,
    no_decay: Vec<burn::module::ParamId>,
    sched: LrSchedule,
    batches: BatchPlan,
    seed: u64,
    per_epoch: u64,
    accum: usize,
    clip: Option<f64>,
    total: u64,
    roles: HashMap<String, canc_compiler::plan::Role>,
    /// Collapse indicators every this many steps (the spec's `train.log_every`; 0: never).
    collapse_every: u64,
    /// See [`RunOptions::sync_phases`].
    sync_phases: bool,
}

impl<B: AutodiffBackend> Trainer<B> {
    /// Prepares a run of `opts.steps` steps of `program` over `ds`.
    pub fn new(program: &Program<B>, ds: &Dataset, opts: &RunOptions) -> Result<Self, TrainError> {
        let plan = &program.plan;
        if ds.n < opts.batch {
            return Err(TrainError::TooFewImages {
                images: ds.n,
                batch: opts.batch,
            });
        }
        let accum = plan
            .train
            .get("accum")
            .and_then(RValue::as_i64)
            .unwrap_or(1)
            .max(1) as usize;
        let accum = if opts.batch.is_multiple_of(accum) {
            accum
        } else {
            1
        };
        let per_epoch = (ds.n / opts.batch) as u64;
        Ok(Trainer {
            opt: optimizers::<B>(plan, opts.flat_adamw),
            no_decay: exec::no_decay_ids::<B, _>(&program.model),
            sched: LrSchedule::from_plan(&plan.optim, opts.steps),
            batches: BatchPlan::from_plan(plan, opts.batch, accum, per_epoch),
            seed: plan.train.get("seed").and_then(RValue::as_i64).unwrap_or(0) as u64,
            per_epoch,
            accum,
            clip: plan.optim.config.get("clip_grad").and_then(RValue::as_f64),
            total: opts.steps,
            roles: plan
                .networks
                .iter()
                .map(|n| (n.name.clone(), n.role.clone()))
                .collect(),
            collapse_every: match plan.train.get("log_every") {
                Some(RValue::Quantity(x, _)) => *x as u64,
                Some(RValue::Int(i)) => (*i).max(0) as u64,
                _ => 10,
            },
            sync_phases: opts.sync_phases,
        })
    }

    /// Which optimizer steps the weights: `adamw (flat)`, `adamw (per tensor)` or `sgd`.
    pub fn optimizer(&self) -> &'static str {
        match self.opt {
            Opt::AdamW(..) => "adamw (per tensor)",
            Opt::FlatAdamW(..) => "adamw (flat)",
            Opt::Sgd(..) => "sgd",
        }
    }

    /// The optimizer state of both parameter groups, for a checkpoint.
    pub fn optimizer_record(&self) -> OptRecord<B> {
        self.opt.record()
    }

    /// Continues from checkpoint `ck`: loads its networks and EMA teachers into `program`, its
    /// optimizer state into this trainer, and re-derives the parameter groups (loading gives the
    /// parameters the checkpoint's ids). Returns the step to start from.
    pub fn restore(
        &mut self,
        program: &mut Program<B>,
        ck: &crate::checkpoint::Checkpoint,
    ) -> Result<u64, crate::checkpoint::CheckpointError> {
        let rec = ck.restore::<B, OptRecord<B>>(program)?;
        let opt = std::mem::replace(&mut self.opt, Opt::placeholder());
        self.opt = opt.load(rec, &program.model).map_err(|why| {
            crate::checkpoint::CheckpointError::Corrupt {
                dir: ck.dir.clone(),
                why,
            }
        })?;
        self.no_decay = exec::no_decay_ids::<B, _>(&program.model);
        Ok(ck.state.step)
    }

    /// Optimizer steps per epoch.
    pub fn steps_per_epoch(&self) -> u64 {
        self.per_epoch
    }

    /// Runs optimizer step `step`, building its batches inline: see [`Trainer::step_with`].
    pub fn step(
        &mut self,
        program: &mut Program<B>,
        ds: &Dataset,
        step: u64,
        device: &B::Device,
    ) -> Result<StepLog, TrainError> {
        let t = Instant::now();
        let batches = self.batches.step(ds, step)?;
        let built = t.elapsed().as_secs_f64();
        self.step_with(program, batches, built, device)
    }

    /// Runs one optimizer step on `batches` (its `accum` micro-batches): forward and backward of
    /// each, gradient clipping, the optimizer on both parameter groups, the EMA update. `wait`
    /// is the time spent waiting for the batches, reported as the data phase.
    pub fn step_with(
        &mut self,
        program: &mut Program<B>,
        batches: StepBatches,
        wait: f64,
        device: &B::Device,
    ) -> Result<StepLog, TrainError> {
        // On the CPU backend every op of the step is a rayon loop: run the step on a worker.
        // GPU backends keep the caller's thread (their streams follow the calling thread).
        if std::any::TypeId::of::<B>() == std::any::TypeId::of::<crate::backend::CpuTrain>() {
            crate::pool::on_worker(|| self.step_body(program, batches, wait, device))
        } else {
            self.step_body(program, batches, wait, device)
        }
    }

    /// The body of [`Trainer::step_with`].
    fn step_body(
        &mut self,
        program: &mut Program<B>,
        batches: StepBatches,
        wait: f64,
        device: &B::Device,
    ) -> Result<StepLog, TrainError> {
        let t0 = Instant::now();
        let step = batches.step;
        let mut ph = Phases {
            data: wait,
            ..Phases::default()
        };
        let mut rng = exec::step_rng(self.seed, step);
        let mut acc = GradientsAccumulator::<exec::Nets<B>>::new();
        let mut names: Vec<String> = Vec::new();
        // Every loss value of the step (each micro-batch's terms, then its total), read from
        // the device at once after the last backward is queued: one wait per step, not one
        // per value, and the device runs the forward while the host queues the backward.
        let mut values: Vec<Tensor<B::InnerBackend, 1>> = Vec::new();
        let mut extra = Vec::new();
        for b in batches.micro {
            let t = Instant::now();
            let batch = to_tensors::<B>(b, device);
            self.wait_for(device, step)?;
            ph.data += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let fwd = program.forward(&batch, &mut rng)?;
            if extra.is_empty()
                && self.collapse_every > 0
                && (step.is_multiple_of(self.collapse_every) || step + 1 == self.total)
                && let Some(z) = &fwd.embedding
            {
                extra = collapse_indicators(z);
            }
            if names.is_empty() {
                names = fwd.terms.iter().map(|(n, _)| n.clone()).collect();
            }
            for v in fwd.terms.iter().map(|(_, v)| v).chain([&fwd.total]) {
                values.push(v.clone().inner().cast(FloatDType::F32).reshape([1]));
            }
            self.wait_for(device, step)?;
            ph.forward += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let total = if self.accum > 1 {
                fwd.total.div_scalar(self.accum as f64)
            } else {
                fwd.total
            };
            let grads = GradientsParams::from_grads(total.backward(), &program.model);
            acc.accumulate(&program.model, grads);
            self.wait_for(device, step)?;
            ph.backward += t.elapsed().as_secs_f64();
        }
        // Reading waits for the backward: its time counts there.
        let t = Instant::now();
        let values = read_f32(values).map_err(|why| TrainError::Device { step, why })?;
        ph.backward += t.elapsed().as_secs_f64();
        let (loss, terms) = step_losses(&names, &values, self.accum, step)?;
        let t = Instant::now();
        let mut g_decay = acc.grads();
        if let Some(max) = self.clip {
            clip_global_norm(&mut g_decay, &program.model, max);
        }
        let g_plain = split(&mut g_decay, &self.no_decay, &program.model);
        let lr = self.sched.at(step);
        let model = std::mem::replace(&mut program.model, exec::Nets { nets: Vec::new() });
        program.model = self.opt.step(lr, model, g_decay, g_plain);
        let (roles, total) = (&self.roles, self.total);
        program.update_teachers(|name| {
            roles
                .get(name)
                .and_then(|r| ema_momentum(r, step, total))
                .unwrap_or(1.0)
        });
        self.wait_for(device, step)?;
        ph.optimizer += t.elapsed().as_secs_f64();
        Ok(StepLog {
            step,
            loss,
            terms,
            lr,
            seconds: t0.elapsed().as_secs_f64() + wait,
            phases: ph,
            extra,
        })
    }

    /// With [`RunOptions::sync_phases`], waits until the device has run all queued work.
    fn wait_for(&self, device: &B::Device, step: u64) -> Result<(), TrainError> {
        if !self.sync_phases {
            return Ok(());
        }
        sync::<B>(device, step)
    }
}

/// Waits for everything queued on `device` to finish; a device error (a lost GPU, a failed
/// kernel) becomes [`TrainError::Device`] at `step`.
pub fn sync<B: Backend>(device: &B::Device, step: u64) -> Result<(), TrainError> {
    B::sync(device).map_err(|e| TrainError::Device {
        step,
        why: e.to_string().replace('\n', " "),
    })
}

/// The values of `scalars` (one element each), read from the device in one transfer.
fn read_f32<B: Backend>(scalars: Vec<Tensor<B, 1>>) -> Result<Vec<f32>, String> {
    if scalars.is_empty() {
        return Ok(Vec::new());
    }
    Tensor::cat(scalars, 0)
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| format!("cannot read the step's losses: {e:?}"))
}

/// The step's loss and terms, averaged over its micro-batches, from `values`: for each
/// micro-batch its terms (named `names`) then its total. The first value that is not finite, in
/// that order, stops the run before the optimizer touches the weights.
fn step_losses(
    names: &[String],
    values: &[f32],
    accum: usize,
    step: u64,
) -> Result<(f64, Vec<(String, f64)>), TrainError> {
    let mut terms: Vec<(String, f64)> = names.iter().map(|n| (n.clone(), 0.0)).collect();
    let mut loss = 0.0;
    for micro in values.chunks(names.len() + 1) {
        for (i, &v) in micro.iter().enumerate() {
            let v = f64::from(v);
            let name = names.get(i).map_or("loss", String::as_str);
            if !v.is_finite() {
                return Err(TrainError::NonFinite {
                    step,
                    term: name.to_string(),
                    value: v,
                });
            }
            match terms.get_mut(i) {
                Some(t) => t.1 += v / accum as f64,
                None => loss += v / accum as f64,
            }
        }
    }
    Ok((loss, terms))
}

/// `rankme` and `emb_std` of a batch of embeddings (`b × d`): the effective rank (at most
/// `min(b, d)`) and the mean per-dimension std of the L2-normalised rows (about `1/√d` when
/// spread out, 0 when collapsed). See [`crate::eval::rankme`].
fn collapse_indicators<B: Backend>(z: &Tensor<B, 2>) -> Vec<(String, f64)> {
    let [n, d] = z.dims();
    let Ok(v) = z.clone().into_data().convert::<f32>().into_vec::<f32>() else {
        return Vec::new();
    };
    vec![
        ("rankme".into(), crate::eval::rankme(&v, n, d)),
        ("emb_std".into(), crate::eval::embedding_std(&v, n, d)),
    ]
}

/// The path of the first trainable parameter holding a NaN or infinity, if any: a checkpoint is
/// only written of finite weights.
fn first_non_finite_param<B: AutodiffBackend>(program: &Program<B>) -> Option<String> {
    struct V {
        path: Vec<String>,
        bad: Option<String>,
    }
    impl<B: AutodiffBackend> burn::module::ModuleVisitor<B> for V {
        fn enter_module(&mut self, name: &str, _c: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _c: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
            if self.bad.is_none() {
                let finite = param
                    .val()
                    .inner()
                    .is_finite()
                    .bool_not()
                    .any()
                    .into_scalar();
                if finite.elem::<bool>() {
                    self.bad = Some(self.path.join("."));
                }
            }
        }
    }
    let mut v = V {
        path: Vec::new(),
        bad: None,
    };
    program.model.visit(&mut v);
    v.bad
}

/// Scales every gradient by `min(1, max / (‖g‖ + 1e-6))`, `‖g‖` the global L2 norm over all
/// parameters (PyTorch's `clip_grad_norm_`). The norm and the factor stay on the device: no
/// wait for the device, at the price of one multiply per gradient even when nothing is clipped.
fn clip_global_norm<B: AutodiffBackend, M: Module<B>>(
    grads: &mut GradientsParams,
    model: &M,
    max: f64,
) {
    struct SumSq<'a, B: Backend>(&'a GradientsParams, Option<Tensor<B, 1>>);
    impl<B: AutodiffBackend> burn::module::ModuleVisitor<B> for SumSq<'_, B::InnerBackend> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
            if let Some(g) = self.0.get::<B::InnerBackend, D>(param.id) {
                let s = g.square().sum();
                self.1 = Some(match self.1.take() {
                    Some(acc) => acc + s,
                    None => s,
                });
            }
        }
    }
    struct Scale<'a, B: Backend>(&'a mut GradientsParams, Tensor<B, 1>);
    impl<B: AutodiffBackend> burn::module::ModuleVisitor<B> for Scale<'_, B::InnerBackend> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
            if let Some(g) = self.0.remove::<B::InnerBackend, D>(param.id) {
                let factor = self.1.clone().unsqueeze::<D>();
                self.0.register::<B::InnerBackend, D>(param.id, g * factor);
            }
        }
    }
    let mut sq = SumSq(grads, None);
    model.visit(&mut sq);
    let Some(sq) = sq.1 else {
        return;
    };
    let factor = sq
        .sqrt()
        .add_scalar(1e-6)
        .recip()
        .mul_scalar(max)
        .clamp_max(1.0);
    model.visit(&mut Scale(grads, factor));
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::{Linear, LinearConfig};

    type AD = Autodiff<Flex>;

    fn vals<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    #[test]
    fn reads_every_scalar_in_order() {
        let dev = Default::default();
        let xs = [1.5f32, -2.0, 7.25]
            .map(|v| Tensor::<Flex, 1>::from_data([v], &dev))
            .to_vec();
        assert_eq!(read_f32(xs).unwrap(), vec![1.5, -2.0, 7.25]);
        assert!(read_f32::<Flex>(Vec::new()).unwrap().is_empty());
    }

    /// Two micro-batches of terms `a`, `b` and their totals: terms and loss are the means over
    /// micro-batches.
    #[test]
    fn step_losses_average_micro_batches() {
        let names = vec!["a".to_string(), "b".to_string()];
        let values = [1.0, 2.0, 5.0, 3.0, 4.0, 11.0];
        let (loss, terms) = step_losses(&names, &values, 2, 9).unwrap();
        assert_eq!(loss, 8.0);
        assert_eq!(terms, vec![("a".into(), 2.0), ("b".into(), 3.0)]);
    }

    /// The first value that is not finite names its term (or `loss` for a total).
    #[test]
    fn step_losses_name_the_first_non_finite_value() {
        let names = vec!["a".to_string(), "b".to_string()];
        let err = step_losses(&names, &[1.0, 2.0, 3.0, 1.0, f32::NAN, f32::INFINITY], 2, 4);
        assert!(
            matches!(err, Err(TrainError::NonFinite { step: 4, ref term, .. }) if term == "b"),
            "{err:?}"
        );
        let err = step_losses(&names, &[1.0, 2.0, f32::INFINITY], 1, 5);
        assert!(
            matches!(err, Err(TrainError::NonFinite { step: 5, ref term, value }) if term == "loss" && value.is_infinite()),
            "{err:?}"
        );
    }

    /// A 2→1 Linear with gradients set by hand: weight (3, 4), bias (12): ‖g‖ = 13.
    fn clipped(max: f64) -> (Vec<f32>, Vec<f32>) {
        let dev = Default::default();
        let lin: Linear<AD> = LinearConfig::new(2, 1).init(&dev);
        let mut grads = GradientsParams::new();
        let w = Tensor::<Flex, 2>::from_data([[3.0], [4.0]], &dev);
        let b = Tensor::<Flex, 1>::from_data([12.0], &dev);
        grads.register::<Flex, 2>(lin.weight.id, w);
        let bias = lin.bias.as_ref().unwrap();
        grads.register::<Flex, 1>(bias.id, b);
        clip_global_norm(&mut grads, &lin, max);
        (
            vals(grads.get::<Flex, 2>(lin.weight.id).unwrap()),
            vals(grads.get::<Flex, 1>(bias.id).unwrap()),
        )
    }

    #[test]
    fn clipping_scales_to_the_global_norm() {
        // ‖g‖ = 13 > 6.5: every gradient scaled by 6.5 / (13 + 1e-6).
        let (w, b) = clipped(6.5);
        let f = 6.5 / (13.0 + 1e-6);
        for (got, want) in w.iter().chain(&b).zip([3.0 * f, 4.0 * f, 12.0 * f]) {
            assert!((f64::from(*got) - want).abs() < 1e-5, "{got} vs {want}");
        }
        // Within the bound: unchanged.
        assert_eq!(clipped(100.0), (vec![3.0, 4.0], vec![12.0]));
    }
}
