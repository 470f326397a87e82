//! `canc run`: compile a spec, load its data, train through the runtime, write the run
//! directory (spec, resolved spec, plan, metrics).

use burn::tensor::backend::AutodiffBackend;
use canc_compiler::Plan;
use canc_compiler::resolved::RValue;
use canc_runtime::backend::{DeviceSpec, OnBackend, dispatch};
use canc_runtime::data;
use canc_runtime::train::{self, RunOptions, TrainError};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// What `canc run` was asked to do.
pub struct RunArgs {
    /// The spec file.
    pub spec: PathBuf,
    /// The plan of the chosen variant.
    pub plan: Plan,
    /// The resolved spec (RON), written into the run directory.
    pub resolved_ron: String,
    /// Run directory.
    pub out: PathBuf,
    /// Data directory overriding the spec's.
    pub data: Option<PathBuf>,
    /// Device.
    pub device: DeviceSpec,
    /// Steps to run (None: the plan's total).
    pub steps: Option<u64>,
    /// Epochs to run (converted to steps).
    pub epochs: Option<u64>,
    /// A few steps on a few hundred images.
    pub smoke: bool,
}

/// What `--smoke` sets (before the user's own `--set`s): 256 images, batch 32 (8 steps per
/// epoch), 30 steps with a 3-step warm-up, the spec's base learning rate.
pub const SMOKE_SETTINGS: &[&str] = &[
    "data.limit=256",
    "train.batch=32",
    "schedule.warmup=3 steps",
    "optimizer.lr_scaling=none",
];
/// Steps of a smoke run.
const SMOKE_STEPS: u64 = 30;

/// Runs training; returns the process exit code.
pub fn run(args: RunArgs) -> ExitCode {
    match run_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) -> Result<(), String> {
    let p = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, &p))
        .map_err(|e| format!("cannot write `{}`: {e}", p.display()))
}

fn run_inner(args: RunArgs) -> Result<(), String> {
    let mut plan = args.plan;
    if let Some(d) = &args.data {
        plan.data
            .config
            .insert("path".into(), RValue::Str(d.display().to_string()));
    }
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create `{}`: {e}", args.out.display()))?;
    let spec_text = std::fs::read_to_string(&args.spec)
        .map_err(|e| format!("cannot read `{}`: {e}", args.spec.display()))?;
    write(&args.out, "spec.canspec", &spec_text)?;
    write(&args.out, "resolved.ron", &args.resolved_ron)?;
    write(&args.out, "plan.ron", &plan.to_ron())?;
    write(&args.out, "graph.dot", &canc_compiler::dot::to_dot(&plan))?;

    if let Some(p) = plan.train.get("precision").and_then(RValue::as_str)
        && p != "f32"
    {
        eprintln!(
            "warning: `train.precision = {p}` is not implemented by the runtime yet; training in f32"
        );
    }
    let t0 = std::time::Instant::now();
    let ds = data::load(&plan.data, None).map_err(|e| e.to_string())?;
    eprintln!(
        "    Loaded {} images ({}x{}x{}) in {:.2} s",
        ds.n,
        ds.channels,
        ds.size,
        ds.size,
        t0.elapsed().as_secs_f64()
    );
    let batch = plan
        .train
        .get("batch")
        .and_then(RValue::as_i64)
        .unwrap_or(256) as usize;
    let per_epoch = (ds.n / batch.max(1)) as u64;
    let steps = match (args.steps, args.epochs) {
        (Some(s), _) => s,
        (None, Some(e)) => e * per_epoch,
        (None, None) if args.smoke => SMOKE_STEPS,
        (None, None) => {
            let epochs = plan
                .train
                .get("epochs")
                .and_then(RValue::as_i64)
                .unwrap_or(1) as u64;
            epochs * per_epoch
        }
    };
    let opts = RunOptions {
        steps,
        batch,
        out: Some(args.out.clone()),
        log_every: if args.smoke { 1 } else { 10 },
    };
    eprintln!(
        "    Training `{}` on {} for {steps} steps of {batch} images",
        plan.spec, args.device
    );
    let work = Train {
        plan,
        ds: &ds,
        opts: &opts,
    };
    let logs = dispatch(args.device, work)
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if let (Some(first), Some(last)) = (logs.first(), logs.last()) {
        eprintln!(
            "    Finished {} steps: loss {:.4} -> {:.4}; metrics in {}",
            logs.len(),
            first.loss,
            last.loss,
            args.out.join("metrics.jsonl").display()
        );
    }
    Ok(())
}

/// Builds the plan's program on the chosen backend and trains it.
struct Train<'a> {
    plan: Plan,
    ds: &'a data::Dataset,
    opts: &'a RunOptions,
}

impl OnBackend for Train<'_> {
    type Output = Result<Vec<train::StepLog>, TrainError>;

    fn run<B: AutodiffBackend>(self, device: &B::Device) -> Self::Output {
        let mut program = canc_runtime::exec::Program::<B>::new(self.plan, device)?;
        train::train(&mut program, self.ds, self.opts, device)
    }
}
