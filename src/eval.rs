//! `canc eval`: evaluate a run's encoder (latest checkpoint) or a baseline (raw pixels, the
//! randomly initialised encoder of a spec) with the pinned kNN and linear-probe protocols;
//! print a table and write `<dir>/eval/<protocol>.json`.

use burn::tensor::backend::AutodiffBackend;
use canc_compiler::Plan;
use canc_compiler::resolved::RValue;
use canc_runtime::backend::{DeviceSpec, OnBackend, dispatch};
use canc_runtime::eval::{self, Baseline, EvalResult, EvalSpec, FeatureSet};
use canc_runtime::exec::Program;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// Which protocols to run.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// Weighted kNN (cosine, k and T from the spec).
    Knn,
    /// Linear probe (recipe from the spec).
    Linear,
    /// Both.
    All,
}

/// A baseline on the command line.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BaselineArg {
    /// Normalised raw pixels.
    Raw,
    /// The spec's encoder at initialisation (its seed), untrained.
    Random,
}

/// What is evaluated.
pub enum Source {
    /// A run directory: its `plan.ron` and latest checkpoint.
    Run(PathBuf),
    /// A baseline for a compiled spec.
    Baseline(BaselineArg, Box<Plan>),
}

/// What `canc eval` was asked to do.
pub struct EvalArgs {
    /// What is evaluated.
    pub source: Source,
    /// Protocols.
    pub protocol: Protocol,
    /// Device for feature extraction.
    pub device: DeviceSpec,
    /// Keep the first N images of each split.
    pub limit: Option<usize>,
    /// Data location overriding the plan's.
    pub data: Option<PathBuf>,
    /// Where results go (default: the run directory; `runs/baseline-<kind>-<spec>` for a
    /// baseline).
    pub out: Option<PathBuf>,
}

/// Runs the evaluation; returns the process exit code.
pub fn eval(args: EvalArgs) -> ExitCode {
    let device = args.device;
    match dispatch(device, Work(args)).map_err(|e| e.to_string()) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) | Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Builds the program of the run in `run_dir` with its latest checkpoint's weights; returns it
/// with the checkpoint's step.
pub fn load_program<B: AutodiffBackend>(
    run_dir: &Path,
    device: &B::Device,
) -> Result<(Program<B>, u64), String> {
    canc_runtime::checkpoint::load_latest::<B>(run_dir, device).map_err(|e| e.to_string())
}

struct Work(EvalArgs);

impl OnBackend for Work {
    type Output = Result<(), String>;

    fn run<B: AutodiffBackend>(self, device: &B::Device) -> Self::Output {
        run::<B>(self.0, device)
    }
}

fn run<B: AutodiffBackend>(args: EvalArgs, device: &B::Device) -> Result<(), String> {
    let e = |e: eval::EvalError| e.to_string();
    let t0 = Instant::now();
    let baseline = args.source_kind();
    // The plan, the program (for a run), the checkpoint step, where results go.
    let (mut plan, program, step, out, what) = match args.source {
        Source::Run(dir) => {
            let (program, step) = load_program::<B>(&dir, device)?;
            let plan = program.plan.clone();
            let what = format!("{} at step {step}", dir.display());
            let out = args.out.clone().unwrap_or(dir);
            (plan, Some(program), Some(step), out, what)
        }
        Source::Baseline(kind, plan) => {
            let name = match kind {
                BaselineArg::Raw => "raw",
                BaselineArg::Random => "random",
            };
            let out = args.out.clone().unwrap_or_else(|| {
                PathBuf::from("runs").join(format!("baseline-{name}-{}", plan.spec))
            });
            let what = format!("baseline `{name}` of spec `{}`", plan.spec);
            (*plan, None, None, out, what)
        }
    };
    if let Some(d) = &args.data {
        plan.data
            .config
            .insert("path".into(), RValue::Str(d.display().to_string()));
    }
    let spec = EvalSpec::from_plan(&plan).map_err(e)?;
    let (train, test) = eval::load_splits(&plan, &spec, args.limit).map_err(e)?;
    eprintln!(
        "    Evaluating {what}: {} {} / {} {} images",
        train.n,
        spec.train_split(),
        test.n,
        spec.split
    );
    let t_feat = Instant::now();
    let set: FeatureSet = match (&program, baseline) {
        (Some(p), _) => eval::program_features(p, &train, &test, train.n, test.n).map_err(e)?,
        (None, Some(kind)) => kind
            .features::<B>(&plan, &train, &test, device)
            .map_err(e)?,
        (None, None) => return Err("nothing to evaluate".into()),
    };
    let feat_s = t_feat.elapsed().as_secs_f64();
    let (n, d) = (set.test.n, set.test.d);
    let indicators = (d <= 1024).then(|| {
        (
            eval::rankme(&set.test.data, n, d),
            eval::embedding_std(&set.test.data, n, d),
        )
    });
    let collapse = match indicators {
        Some((rank, std)) => format!(
            "; RankMe {rank:.1} of {d}, std/dim {std:.4} (1/sqrt(d) = {:.4})",
            1.0 / (d as f64).sqrt()
        ),
        None => String::new(),
    };
    eprintln!(
        "    Features `{}` ({d} dims) in {feat_s:.1} s{collapse}",
        set.name
    );
    let mut results: Vec<EvalResult> = Vec::new();
    if matches!(args.protocol, Protocol::Knn | Protocol::All) {
        results.push(eval::run_knn(&set, &spec.knn).map_err(e)?);
    }
    if matches!(args.protocol, Protocol::Linear | Protocol::All) {
        results.push(eval::run_linear(&set, &spec.linear).map_err(e)?);
    }
    println!(
        "{:<8} {:<22} {:>7} {:>7} {:>5} {:>9} {:>8}  params",
        "protocol", "features", "train", "test", "dim", "accuracy", "seconds"
    );
    for r in &mut results {
        r.step = step;
        r.rankme = indicators.map(|x| x.0);
        r.emb_std = indicators.map(|x| x.1);
        println!(
            "{:<8} {:<22} {:>7} {:>7} {:>5} {:>8.2}% {:>8.1}  {}",
            r.protocol,
            r.features,
            r.train_n,
            r.test_n,
            r.dim,
            100.0 * r.accuracy,
            r.seconds,
            r.params
        );
        let path = eval::write_result(&out, r).map_err(e)?;
        eprintln!("    Wrote {}", path.display());
    }
    eprintln!("    Done in {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}

impl EvalArgs {
    fn source_kind(&self) -> Option<Baseline> {
        match &self.source {
            Source::Run(_) => None,
            Source::Baseline(BaselineArg::Raw, _) => Some(Baseline::RawPixels),
            Source::Baseline(BaselineArg::Random, _) => Some(Baseline::RandomInit),
        }
    }
}
