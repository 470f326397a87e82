//! `canc run` and `canc resume`: compile a spec, load its data, train through the runtime in a
//! run directory keyed by the run's identity, with checkpoints, a status file, Ctrl-C handling
//! and exact resume.
//!
//! A run directory holds `spec.canspec`, `resolved.ron`, `plan.ron`, `graph.dot`, `run.json`
//! (the run's identity), `status.json`, `metrics.jsonl`, `loss.png` and `checkpoints/`.

use crate::monitor::Monitor;
use burn::tensor::backend::AutodiffBackend;
use canc_compiler::Plan;
use canc_compiler::resolved::{RValue, ResolvedSpec};
use canc_grammar::ast::Unit;
use canc_runtime::backend::{DeviceSpec, OnBackend, dispatch};
use canc_runtime::checkpoint::{self, Checkpoint, sha256_hex, write_atomic};
use canc_runtime::data;
use canc_runtime::exec::Program;
use canc_runtime::train::{self, Checkpointing, Outcome, RunOptions, TrainError, Trainer};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// What `canc run` was asked to do.
pub struct RunArgs {
    /// The spec file.
    pub spec: PathBuf,
    /// The plan of the chosen variant.
    pub plan: Plan,
    /// The resolved spec of the chosen variant.
    pub resolved: ResolvedSpec,
    /// The run's name (`spec[-variant][-smoke]`); the directory adds the run key.
    pub name: String,
    /// Run directory (default: `runs/<name>-<key>`).
    pub out: Option<PathBuf>,
    /// Data directory overriding the spec's.
    pub data: Option<PathBuf>,
    /// Device.
    pub device: DeviceSpec,
    /// Steps to run (None: the plan's total).
    pub steps: Option<u64>,
    /// Epochs to run (converted to steps).
    pub epochs: Option<u64>,
    /// A few steps on a few hundred images, then a check that resuming reproduces them.
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
/// A smoke run checkpoints this often, and re-runs the steps after the last-but-one checkpoint.
const SMOKE_CHECKPOINT_EVERY: u64 = 10;
/// Exit code after Ctrl-C (128 + SIGINT), as shells expect.
const EXIT_INTERRUPTED: u8 = 130;

/// `run.json`: the identity of a run; the run key hashes all of it but the name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    /// SHA-256 (first 16 hex digits) of the canonical plan, the data fingerprint, canc's
    /// version and the step count.
    pub run_key: String,
    /// `spec[-variant][-smoke]`.
    pub name: String,
    /// The spec file it was started from.
    pub spec: String,
    /// Total optimizer steps.
    pub steps: u64,
    /// Images per step.
    pub batch: usize,
    /// SHA-256 (first 16 hex digits) of the training images and labels.
    pub data_fingerprint: String,
    /// Training images.
    pub images: usize,
    /// canc's version.
    pub canc_version: String,
    /// A smoke run (checks resume at the end).
    pub smoke: bool,
}

/// `status.json`: where the run stands, for scripts and people.
#[derive(Debug, Serialize)]
struct Status<'a> {
    state: &'a str,
    step: u64,
    total: u64,
    message: &'a str,
    checkpoint: Option<String>,
    updated_unix: u64,
    pid: u32,
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn write_status(dir: &Path, state: &str, step: u64, total: u64, message: &str) {
    let ck = checkpoint::latest(dir)
        .ok()
        .map(|p| p.display().to_string());
    let s = Status {
        state,
        step,
        total,
        message,
        checkpoint: ck,
        updated_unix: now_unix(),
        pid: std::process::id(),
    };
    let text = serde_json::to_vec_pretty(&s).unwrap_or_default();
    if let Err(e) = write_atomic(&dir.join("status.json"), &text) {
        eprintln!("warning: {e}");
    }
}

fn write(dir: &Path, name: &str, text: &str) -> Result<(), String> {
    write_atomic(&dir.join(name), text.as_bytes()).map_err(|e| e.to_string())
}

/// SHA-256 of the images and labels (16 hex digits): the data's part of the run key.
fn data_fingerprint(ds: &data::Dataset) -> String {
    let mut bytes = Vec::with_capacity(ds.images.len() + 4 * ds.labels.len() + 32);
    bytes.extend_from_slice(format!("{}x{}x{}:", ds.n, ds.channels, ds.size).as_bytes());
    bytes.extend_from_slice(&ds.images);
    for l in &ds.labels {
        bytes.extend_from_slice(&l.to_le_bytes());
    }
    sha256_hex(&bytes)[..16].to_string()
}

/// The run key: what must be equal for a checkpoint to continue this run exactly.
fn run_key(plan: &Plan, data_fp: &str, steps: u64) -> String {
    let text = format!(
        "{}\ndata {data_fp}\ncanc {}\nsteps {steps}\n",
        plan.to_ron(),
        env!("CARGO_PKG_VERSION")
    );
    sha256_hex(text.as_bytes())[..16].to_string()
}

/// The Ctrl-C flag: set by the first Ctrl-C (the run stops after its step, with a checkpoint);
/// a second Ctrl-C exits at once with 130.
fn stop_flag() -> Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        let installed = ctrlc::set_handler(move || {
            if f.swap(true, Ordering::SeqCst) {
                eprintln!("\ninterrupted again: exiting without a checkpoint");
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
            eprintln!(
                "\ninterrupted: stopping after this step and saving a checkpoint (Ctrl-C again to quit now)"
            );
        });
        if let Err(e) = installed {
            eprintln!("warning: cannot install the Ctrl-C handler: {e}");
        }
        flag
    })
    .clone()
}

/// Runs training; returns the process exit code.
pub fn run(args: RunArgs) -> ExitCode {
    match run_inner(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Continues the run in `dir` from its latest checkpoint, or from the one at step `from`.
pub fn resume(dir: PathBuf, device: DeviceSpec, from: Option<u64>) -> ExitCode {
    match resume_inner(&dir, device, from) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn read_meta(dir: &Path) -> Result<RunMeta, String> {
    let p = dir.join("run.json");
    let text =
        std::fs::read_to_string(&p).map_err(|e| format!("cannot read `{}`: {e}", p.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("`{}` is not a run file: {e}", p.display()))
}

/// Why the run in `dir` is not the one asked for: the semantic diff of the specs, and any other
/// part of the identity that differs.
fn explain_mismatch(
    dir: &Path,
    old: &RunMeta,
    new: &RunMeta,
    resolved: &ResolvedSpec,
    plan: &Plan,
) -> String {
    let mut out = String::new();
    let old_res = std::fs::read_to_string(dir.join("resolved.ron"))
        .ok()
        .and_then(|t| ResolvedSpec::from_ron(&t).ok());
    let old_plan = checkpoint::read_plan(dir).ok();
    match (old_res, old_plan) {
        (Some(r), Some(p)) => {
            let d = canc_compiler::diff::diff((&r, &p), (resolved, plan));
            if !d.trim().is_empty() {
                out.push_str(&format!("spec changes (run → now):\n{d}\n"));
            }
        }
        _ => out.push_str("(the run's resolved spec or plan cannot be read for a diff)\n"),
    }
    if old.steps != new.steps {
        out.push_str(&format!("steps: {} → {}\n", old.steps, new.steps));
    }
    if old.data_fingerprint != new.data_fingerprint {
        out.push_str(&format!(
            "data: {} images ({}) → {} images ({})\n",
            old.images, old.data_fingerprint, new.images, new.data_fingerprint
        ));
    }
    if old.canc_version != new.canc_version {
        out.push_str(&format!(
            "canc version: {} → {}\n",
            old.canc_version, new.canc_version
        ));
    }
    out
}

fn setting_steps(plan: &Plan, key: &str, per_epoch: u64, default: u64) -> u64 {
    match plan.train.get(key) {
        Some(RValue::Quantity(x, Unit::Epochs)) => ((x * per_epoch as f64).round() as u64).max(1),
        Some(RValue::Quantity(x, _)) => (*x as u64).max(1),
        Some(RValue::Int(i)) => (*i).max(1) as u64,
        _ => default,
    }
}

fn time_limit(plan: &Plan) -> Option<std::time::Duration> {
    let secs = match plan.train.get("time_limit")? {
        RValue::Quantity(x, Unit::Seconds) => *x,
        RValue::Quantity(x, Unit::Minutes) => x * 60.0,
        RValue::Quantity(x, Unit::Hours) => x * 3600.0,
        _ => return None,
    };
    (secs > 0.0).then(|| std::time::Duration::from_secs_f64(secs))
}

fn run_inner(args: RunArgs) -> Result<ExitCode, String> {
    let mut plan = args.plan;
    if let Some(d) = &args.data {
        plan.data
            .config
            .insert("path".into(), RValue::Str(d.display().to_string()));
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
        .unwrap_or(256)
        .max(1) as usize;
    let per_epoch = (ds.n / batch) as u64;
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
    let fp = data_fingerprint(&ds);
    let key = run_key(&plan, &fp, steps);
    let meta = RunMeta {
        run_key: key.clone(),
        name: args.name.clone(),
        spec: args.spec.display().to_string(),
        steps,
        batch,
        data_fingerprint: fp,
        images: ds.n,
        canc_version: env!("CARGO_PKG_VERSION").to_string(),
        smoke: args.smoke,
    };
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(format!("{}-{}", args.name, &key[..8])));
    if dir.join("run.json").exists() {
        let old = read_meta(&dir)?;
        if old.run_key != key {
            return Err(format!(
                "`{}` holds another run (key {}, this one {key}); refusing to mix them.\n{}\
                 Pick another --out, or remove the directory to start over.",
                dir.display(),
                old.run_key,
                explain_mismatch(&dir, &old, &meta, &args.resolved, &plan)
            ));
        }
        eprintln!(
            "    Run directory {} exists with this run's key: resuming",
            dir.display()
        );
    } else {
        if dir.exists()
            && std::fs::read_dir(&dir)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false)
        {
            return Err(format!(
                "`{}` exists and is not a canc run directory; pick another --out",
                dir.display()
            ));
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
        let spec_text = std::fs::read_to_string(&args.spec)
            .map_err(|e| format!("cannot read `{}`: {e}", args.spec.display()))?;
        write(&dir, "spec.canspec", &spec_text)?;
        write(&dir, "resolved.ron", &args.resolved.to_ron())?;
        write(&dir, "plan.ron", &plan.to_ron())?;
        write(&dir, "graph.dot", &canc_compiler::dot::to_dot(&plan))?;
        let json = serde_json::to_string_pretty(&meta).unwrap_or_default();
        write(&dir, "run.json", &json)?;
    }
    execute(&dir, plan, &meta, &ds, args.device)
}

fn resume_inner(dir: &Path, device: DeviceSpec, from: Option<u64>) -> Result<ExitCode, String> {
    let meta = read_meta(dir)?;
    let plan = checkpoint::read_plan(dir).map_err(|e| e.to_string())?;
    match from {
        Some(step) => {
            let ck = checkpoint::at_step(dir, step).map_err(|e| e.to_string())?;
            Checkpoint::read(&ck).map_err(|e| e.to_string())?;
            let n = checkpoint::remove_after(dir, step).map_err(|e| e.to_string())?;
            if n > 0 {
                eprintln!("    Removed {n} checkpoint(s) after step {step}");
            }
        }
        None => {
            checkpoint::latest(dir).map_err(|e| e.to_string())?;
        }
    }
    let ds = data::load(&plan.data, None).map_err(|e| e.to_string())?;
    let fp = data_fingerprint(&ds);
    if fp != meta.data_fingerprint {
        return Err(format!(
            "the data of `{}` changed since the run started ({} images, fingerprint {} → {} images, {}); \
             resuming would not continue the same run",
            dir.display(),
            meta.images,
            meta.data_fingerprint,
            ds.n,
            fp
        ));
    }
    let key = run_key(&plan, &fp, meta.steps);
    if key != meta.run_key {
        return Err(format!(
            "`{}` was written by another canc version or its plan.ron was edited (key {} → {key})",
            dir.display(),
            meta.run_key
        ));
    }
    execute(dir, plan, &meta, &ds, device)
}

/// Trains the run in `dir` (fresh or from its latest checkpoint) and reports how it ended.
fn execute(
    dir: &Path,
    plan: Plan,
    meta: &RunMeta,
    ds: &data::Dataset,
    device: DeviceSpec,
) -> Result<ExitCode, String> {
    let per_epoch = (ds.n / meta.batch.max(1)) as u64;
    let every = if meta.smoke {
        SMOKE_CHECKPOINT_EVERY
    } else {
        setting_steps(&plan, "checkpoint_every", per_epoch, per_epoch)
    };
    let keep = plan
        .train
        .get("keep_checkpoints")
        .and_then(RValue::as_i64)
        .unwrap_or(3)
        .max(1) as usize;
    let mut opts = RunOptions::new(meta.steps, meta.batch);
    opts.out = Some(dir.to_path_buf());
    opts.checkpoint = Some(Checkpointing {
        every,
        keep: if meta.smoke { keep.max(3) } else { keep },
        run_key: meta.run_key.clone(),
    });
    opts.stop = Some(stop_flag());
    opts.time_limit = time_limit(&plan);
    if let Some(w) = canc_runtime::backend::precision_warning(&plan, device) {
        eprintln!("warning: {w}");
    }
    eprintln!(
        "    Training `{}` on {device} for {} steps of {} images -> {}",
        plan.spec,
        meta.steps,
        meta.batch,
        dir.display()
    );
    write_status(dir, "running", 0, meta.steps, "");
    let work = Train {
        plan,
        ds,
        opts,
        dir,
        smoke: meta.smoke,
        exact: device == DeviceSpec::Cpu,
    };
    let result = dispatch(device, work).map_err(|e| e.to_string())?;
    let total = meta.steps;
    match result {
        Ok(end) => {
            let step = end.last_step;
            let (state, code, msg) = match end.outcome {
                Outcome::Finished => ("finished", ExitCode::SUCCESS, "all steps ran".to_string()),
                Outcome::Interrupted => (
                    "interrupted",
                    ExitCode::from(EXIT_INTERRUPTED),
                    format!(
                        "stopped by Ctrl-C; continue with `canc resume {}`",
                        dir.display()
                    ),
                ),
                Outcome::TimeLimit => (
                    "time_limit",
                    ExitCode::SUCCESS,
                    format!(
                        "stopped at train.time_limit; continue with `canc resume {}`",
                        dir.display()
                    ),
                ),
            };
            write_status(dir, state, step, total, &msg);
            if let Some(first) = &end.first_loss {
                eprintln!(
                    "    {} at step {step}/{total}: loss {first:.4} -> {:.4}; {msg}",
                    state.replace('_', " "),
                    end.last_loss.unwrap_or(f64::NAN),
                );
            } else {
                eprintln!("    Nothing to do: the run finished at step {step}/{total}");
            }
            if let Some(check) = &end.smoke_check {
                eprintln!("    Smoke check: {check}");
            }
            Ok(code)
        }
        Err(e) => {
            let last = checkpoint::latest(dir)
                .ok()
                .and_then(|p| Checkpoint::read(&p).ok());
            let hint = match (&last, matches!(e, TrainError::NonFinite { .. })) {
                (Some(c), true) => format!(
                    "the last checkpoint (finite weights) is {} (step {}), kept for inspection; \
                     resuming would repeat the same steps: lower the learning rate (or add \
                     clip_grad) in a new run",
                    c.dir.display(),
                    c.state.step,
                ),
                (Some(c), false) => format!(
                    "the last checkpoint is {} (step {}); `canc resume {}` continues from it",
                    c.dir.display(),
                    c.state.step,
                    dir.display()
                ),
                (None, _) => "no checkpoint was written before the failure".to_string(),
            };
            let step = last.as_ref().map_or(0, |c| c.state.step);
            let msg = format!("{e}; {hint}");
            write_status(dir, "failed", step, total, &msg);
            Err(msg)
        }
    }
}

/// What the training on one backend returns.
struct Ended {
    outcome: Outcome,
    last_step: u64,
    first_loss: Option<f64>,
    last_loss: Option<f64>,
    smoke_check: Option<String>,
}

/// Builds the plan's program on the chosen backend, restores the latest checkpoint if any, and
/// trains.
struct Train<'a> {
    plan: Plan,
    ds: &'a data::Dataset,
    opts: RunOptions,
    dir: &'a Path,
    smoke: bool,
    /// Bitwise-deterministic device (CPU): the smoke check requires identical losses.
    exact: bool,
}

impl OnBackend for Train<'_> {
    type Output = Result<Ended, TrainError>;

    fn run<B: AutodiffBackend>(mut self, device: &B::Device) -> Self::Output {
        let mut program = Program::<B>::new(self.plan.clone(), device)?;
        let mut trainer = Trainer::new(&program, self.ds, &self.opts)?;
        if let Ok(latest) = checkpoint::latest(self.dir) {
            let ck = Checkpoint::read(&latest)?;
            if let Some(c) = &self.opts.checkpoint {
                ck.check_key(&c.run_key)?;
            }
            self.opts.start = trainer.restore(&mut program, &ck)?;
            if ck.state.step < self.opts.steps {
                eprintln!(
                    "    Resuming from {} (step {})",
                    ck.dir.display(),
                    ck.state.step
                );
            }
        }
        if self.opts.start >= self.opts.steps {
            return Ok(Ended {
                outcome: Outcome::Finished,
                last_step: self.opts.start,
                first_loss: None,
                last_loss: None,
                smoke_check: None,
            });
        }
        let mut monitor = Monitor::new(
            &self.plan,
            self.dir,
            self.opts.start,
            self.opts.steps,
            trainer.steps_per_epoch(),
            self.opts.batch,
        );
        let end = train::run(
            &mut trainer,
            &mut program,
            self.ds,
            &self.opts,
            device,
            &mut monitor,
        )?;
        monitor.finish();
        let smoke_check = if self.smoke && end.outcome == Outcome::Finished {
            Some(smoke_check::<B>(
                &self.plan, self.ds, &self.opts, self.dir, &end.logs, device, self.exact,
            )?)
        } else {
            None
        };
        Ok(Ended {
            outcome: end.outcome,
            last_step: end.logs.last().map_or(self.opts.start, |l| l.step + 1),
            first_loss: end.logs.first().map(|l| l.loss),
            last_loss: end.logs.last().map(|l| l.loss),
            smoke_check,
        })
    }
}

/// Relative tolerance of the smoke check's loss comparison on GPUs, whose reductions are not
/// bitwise deterministic (measured on an H200: differences in the 7th significant digit).
const GPU_SMOKE_TOLERANCE: f64 = 1e-5;

/// The end of a smoke run: reload the last-but-one checkpoint into a fresh program, re-run the
/// steps after it, and require the same losses as the run logged: bit for bit when `exact`
/// (CPU), within [`GPU_SMOKE_TOLERANCE`] otherwise.
fn smoke_check<B: AutodiffBackend>(
    plan: &Plan,
    ds: &data::Dataset,
    opts: &RunOptions,
    dir: &Path,
    logs: &[train::StepLog],
    device: &B::Device,
    exact: bool,
) -> Result<String, TrainError> {
    let all = checkpoint::list(&dir.join("checkpoints"));
    let Some((step, ck_dir)) = all.iter().rev().nth(1).cloned() else {
        return Ok("skipped: fewer than two checkpoints".into());
    };
    let ck = Checkpoint::read(&ck_dir)?;
    let mut program = Program::<B>::new(plan.clone(), device)?;
    let mut again = RunOptions::new(opts.steps, opts.batch);
    again.start = step;
    let mut trainer = Trainer::new(&program, ds, &again)?;
    trainer.restore(&mut program, &ck)?;
    let rerun = train::run(
        &mut trainer,
        &mut program,
        ds,
        &again,
        device,
        &mut train::Quiet,
    )?;
    let want: Vec<f64> = logs
        .iter()
        .filter(|l| l.step >= step)
        .map(|l| l.loss)
        .collect();
    let got: Vec<f64> = rerun.logs.iter().map(|l| l.loss).collect();
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
        .fold(0.0, f64::max);
    let same = got.len() == want.len()
        && if exact {
            got == want
        } else {
            worst <= GPU_SMOKE_TOLERANCE
        };
    if !same {
        return Err(TrainError::Checkpoint(checkpoint::CheckpointError::Plan {
            dir: dir.to_path_buf(),
            why: format!(
                "smoke check: resuming from step {step} did not reproduce the run: losses \
                 {got:?} vs {want:?}"
            ),
        }));
    }
    Ok(if exact {
        format!(
            "reloaded the checkpoint at step {step} and re-ran {} steps: identical losses",
            got.len()
        )
    } else {
        format!(
            "reloaded the checkpoint at step {step} and re-ran {} steps: losses agree to \
             {worst:.1e} (relative; GPU reductions are not bitwise deterministic)",
            got.len()
        )
    })
}
