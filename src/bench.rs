//! `canc bench`: warm-up steps, then timed training steps of a spec; images/s, ms per step split
//! into data / forward / backward / optimizer, and achieved FLOP/s from the compiler's own count.

use burn::tensor::backend::AutodiffBackend;
use canc_compiler::Plan;
use canc_compiler::cost;
use canc_runtime::backend::{DeviceSpec, OnBackend, dispatch};
use canc_runtime::data;
use canc_runtime::exec::Program;
use canc_runtime::train::{Phases, RunOptions, StepLog, TrainError, Trainer};
use std::process::ExitCode;

/// What to measure.
pub struct BenchArgs {
    /// The compiled plan (batch already overridden if asked).
    pub plan: Plan,
    /// Device.
    pub device: DeviceSpec,
    /// Timed steps.
    pub steps: u64,
    /// Untimed warm-up steps.
    pub warmup: u64,
    /// Print JSON instead of a table.
    pub json: bool,
}

/// Runs the benchmark; returns the exit code.
pub fn bench(args: BenchArgs) -> ExitCode {
    match bench_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// `total` training steps of `plan`, each measured, on the chosen backend.
struct Measure<'a> {
    plan: Plan,
    ds: &'a data::Dataset,
    batch: usize,
    total: u64,
}

impl OnBackend for Measure<'_> {
    type Output = Result<Vec<StepLog>, TrainError>;

    fn run<B: AutodiffBackend>(self, device: &B::Device) -> Self::Output {
        let mut program = Program::<B>::new(self.plan, device)?;
        let opts = RunOptions::new(self.total, self.batch);
        let mut trainer = Trainer::new(&program, self.ds, &opts)?;
        (0..self.total)
            .map(|s| trainer.step(&mut program, self.ds, s, device))
            .collect()
    }
}

fn bench_inner(args: BenchArgs) -> Result<(), String> {
    let plan = args.plan;
    let batch = cost::plan_batch(&plan) as usize;
    let ds = data::load(&plan.data, None).map_err(|e| e.to_string())?;
    let total = args.warmup + args.steps;
    let work = Measure {
        plan: plan.clone(),
        ds: &ds,
        batch,
        total,
    };
    let logs = dispatch(args.device, work)
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let timed = &logs[args.warmup as usize..];
    let n = timed.len().max(1) as f64;
    let mut ph = Phases::default();
    let mut secs = Vec::new();
    for l in timed {
        ph.data += l.phases.data / n;
        ph.forward += l.phases.forward / n;
        ph.backward += l.phases.backward / n;
        ph.optimizer += l.phases.optimizer / n;
        secs.push(l.seconds);
    }
    secs.sort_by(f64::total_cmp);
    let mean = secs.iter().sum::<f64>() / n;
    let median = secs.get(secs.len() / 2).copied().unwrap_or(0.0);
    let flops = cost::step_cost_at(&plan, batch as u64).train_flops_per_image() * batch as f64;
    let threads = rayon::current_num_threads();
    if args.json {
        let obj = serde_json::json!({
            "spec": plan.spec, "device": args.device.to_string(), "batch": batch,
            "steps": args.steps, "warmup": args.warmup, "threads": threads,
            "ms_per_step_mean": mean * 1e3, "ms_per_step_median": median * 1e3,
            "images_per_s": batch as f64 / mean,
            "data_ms": ph.data * 1e3, "forward_ms": ph.forward * 1e3,
            "backward_ms": ph.backward * 1e3, "optimizer_ms": ph.optimizer * 1e3,
            "train_flop_per_step": flops, "achieved_tflops": flops / mean / 1e12,
        });
        println!("{obj}");
        return Ok(());
    }
    println!(
        "bench `{}` on {} ({} threads): batch {batch}, {} timed steps after {} warm-up",
        plan.spec, args.device, threads, args.steps, args.warmup
    );
    println!(
        "  {:.1} images/s   {:.1} ms/step mean, {:.1} median",
        batch as f64 / mean,
        mean * 1e3,
        median * 1e3
    );
    for (k, v) in ph.named() {
        println!(
            "  {k:<10} {:>9.1} ms  {:>5.1}%",
            v * 1e3,
            100.0 * v / mean.max(1e-12)
        );
    }
    println!(
        "  model FLOPs {:.2} GFLOP/step (canc cost), achieved {:.1} GFLOP/s",
        flops / 1e9,
        flops / mean / 1e9
    );
    Ok(())
}
