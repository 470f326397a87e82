//! `canc bench`: warm-up steps, then timed training steps of a spec; images/s, ms per step split
//! into data / forward / backward / optimizer, achieved FLOP/s from the compiler's own count,
//! MFU against the device's nominal peak ([`crate::peak`]), and peak memory.

use burn::tensor::backend::AutodiffBackend;
use canc_compiler::Plan;
use canc_compiler::cost;
use canc_runtime::backend::{DeviceSpec, OnBackend, dispatch};
use canc_runtime::data;
use canc_runtime::exec::Program;
use canc_runtime::train::{Phases, RunOptions, StepLog, TrainError, Trainer};
use std::path::PathBuf;
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
    /// The device's peak TFLOP/s for MFU, overriding the nominal figure.
    pub peak_tflops: Option<f64>,
    /// Write CubeCL's per-kernel profile here (CUDA only; see
    /// [`canc_runtime::cubecl_config`]).
    pub kernel_profile: Option<PathBuf>,
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

/// Whether each phase ends by waiting for the device ([`RunOptions::sync_phases`]): yes, so a
/// phase's time is its own work, as the PyTorch reference measures it.
const SYNC_PHASES: bool = true;

/// Asks CubeCL for the per-kernel profile in `file`, or says why it cannot be had.
fn kernel_profile(file: &std::path::Path, device: DeviceSpec) -> Result<(), String> {
    if device == DeviceSpec::Cpu {
        return Err(
            "--kernel-profile profiles GPU kernels: add --device cuda or --device wgpu".into(),
        );
    }
    canc_runtime::cubecl_config::profile_kernels_to(file.to_path_buf())
        .map_err(|e| format!("--kernel-profile: {e}"))?;
    // Fail now, not after the run, if the file cannot be written.
    std::fs::write(file, "").map_err(|e| format!("cannot write `{}`: {e}", file.display()))?;
    eprintln!(
        "note: --kernel-profile: every kernel waits for the device, so these step times are \
         not throughput; the profile is in `{}`",
        file.display()
    );
    Ok(())
}

/// `total` training steps of `plan`, each measured, on the chosen backend.
struct Measure<'a> {
    plan: Plan,
    ds: &'a data::Dataset,
    batch: usize,
    total: u64,
    /// The first `warmup` steps are untimed (for the progress lines).
    warmup: u64,
    /// Read the GPU memory this process holds after the steps.
    gpu: bool,
    /// CubeCL's kernel profile, whose tables written before the first timed step are the
    /// warm-up's (and set-up's).
    profile: Option<PathBuf>,
}

impl OnBackend for Measure<'_> {
    /// The step logs, the GPU memory held after them (MiB), the optimizer that ran, the
    /// network calls per forward pass and how many kernel-profile tables precede the timed steps.
    type Output = Result<(Vec<StepLog>, Option<f64>, &'static str, usize, usize), TrainError>;

    fn run<B: AutodiffBackend>(self, device: &B::Device) -> Self::Output {
        let mut program = Program::<B>::new(self.plan, device)?;
        let mut opts = RunOptions::new(self.total, self.batch);
        opts.sync_phases = SYNC_PHASES;
        let mut trainer = Trainer::new(&program, self.ds, &opts)?;
        let mut logs = Vec::with_capacity(self.total as usize);
        let mut warm_tables = 0;
        for s in 0..self.total {
            if let (true, Some(file)) = (s == self.warmup, &self.profile) {
                // Everything queued so far finishes (and is logged) before the timed steps.
                canc_runtime::train::sync::<B>(device, s)?;
                let text = crate::kernel_profile::read_settled(file).unwrap_or_default();
                warm_tables = crate::kernel_profile::tables(&text).len();
            }
            let log = trainer.step(&mut program, self.ds, s, device)?;
            // On stderr, so that a slow warm-up (a GPU backend's kernel compilation) shows
            // where it is; `--json` keeps stdout to the one object.
            let phase = if s < self.warmup { "warm-up" } else { "timed" };
            eprintln!(
                "  step {}/{} ({phase}) {:.1} ms",
                s + 1,
                self.total,
                log.seconds * 1e3
            );
            logs.push(log);
        }
        // (while the program's buffers are still held)
        let gpu_mib = if self.gpu {
            crate::peak::gpu_memory_mib()
        } else {
            None
        };
        Ok((
            logs,
            gpu_mib,
            trainer.optimizer(),
            program.network_calls(),
            warm_tables,
        ))
    }
}

fn bench_inner(args: BenchArgs) -> Result<(), String> {
    let plan = args.plan;
    if let Some(w) = canc_runtime::backend::precision_warning(&plan, args.device) {
        eprintln!("warning: {w}");
    }
    if let Some(file) = &args.kernel_profile {
        kernel_profile(file, args.device)?;
    }
    let batch = cost::plan_batch(&plan) as usize;
    let ds = data::load(&plan.data, None).map_err(|e| e.to_string())?;
    let total = args.warmup + args.steps;
    let work = Measure {
        plan: plan.clone(),
        ds: &ds,
        batch,
        total,
        warmup: args.warmup,
        gpu: args.device != DeviceSpec::Cpu,
        profile: args.kernel_profile.clone(),
    };
    let (logs, gpu_mib, optimizer, calls, warm_tables) = dispatch(args.device, work)
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
    // bf16 autocast runs the matrix products on tensor cores: MFU against that peak.
    let precision = match canc_runtime::exec::matmul_dtype(&plan) {
        Ok(Some(_)) => "bf16",
        _ => "f32",
    };
    let peak = match (args.peak_tflops, args.device) {
        (Some(tf), _) => Some(crate::peak::Peak {
            flops: tf * 1e12,
            source: "--peak-tflops".into(),
        }),
        (None, DeviceSpec::Cpu) => crate::peak::cpu_peak(threads),
        (None, DeviceSpec::Cuda(i)) => {
            crate::peak::gpu_name(i).and_then(|name| crate::peak::gpu_peak_for(&name, precision))
        }
        // No table of peaks for wgpu's adapters: `--peak-tflops` gives one.
        (None, DeviceSpec::Wgpu(_)) => None,
    };
    let achieved = flops / mean;
    let mfu = peak.as_ref().map(|p| achieved / p.flops);
    let kernels = match &args.kernel_profile {
        Some(file) => {
            let text = crate::kernel_profile::read_settled(file)
                .map_err(|e| format!("cannot read the kernel profile `{}`: {e}", file.display()))?;
            let tables = crate::kernel_profile::tables(&text);
            let timed = tables.get(warm_tables..).unwrap_or_default();
            Some(crate::kernel_profile::summarise(timed, args.steps, 15))
        }
        None => None,
    };
    let host_mib = crate::peak::host_peak_mib();
    if args.json {
        let obj = serde_json::json!({
            "spec": plan.spec, "device": args.device.to_string(), "batch": batch,
            "precision": precision,
            "steps": args.steps, "warmup": args.warmup, "threads": threads,
            "sync_phases": SYNC_PHASES, "optimizer": optimizer, "network_calls": calls,
            "ms_per_step_mean": mean * 1e3, "ms_per_step_median": median * 1e3,
            "images_per_s": batch as f64 / mean,
            "data_ms": ph.data * 1e3, "forward_ms": ph.forward * 1e3,
            "backward_ms": ph.backward * 1e3, "optimizer_ms": ph.optimizer * 1e3,
            "train_flop_per_step": flops, "achieved_tflops": achieved / 1e12,
            "peak_tflops": peak.as_ref().map(|p| p.flops / 1e12),
            "peak_source": peak.as_ref().map(|p| p.source.clone()), "mfu": mfu,
            "host_peak_mib": host_mib, "gpu_memory_mib": gpu_mib,
            "kernel_profile": args.kernel_profile, "kernels": kernels,
        });
        println!("{obj}");
        return Ok(());
    }
    println!(
        "bench `{}` on {} ({} threads): batch {batch}, {} timed steps after {} warm-up",
        plan.spec, args.device, threads, args.steps, args.warmup
    );
    println!("  optimizer {optimizer}, {calls} network calls per step");
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
        achieved / 1e9
    );
    if canc_runtime::profile::enabled() {
        println!("  forward steps (CANC_PROFILE=1; ms per training step, warm-up included):");
        let n = total.max(1) as f64;
        for (label, took, _) in canc_runtime::profile::take() {
            println!("    {:>8.1}  {label}", took.as_secs_f64() * 1e3 / n);
        }
    }
    match (&peak, mfu) {
        (Some(p), Some(m)) => println!("  MFU {:.1}% of {}", 100.0 * m, p.source),
        _ => println!("  MFU unknown: no nominal peak for this device (give --peak-tflops)"),
    }
    if let Some(m) = host_mib {
        println!("  peak host memory {m:.0} MiB (resident, dataset included)");
    }
    if let Some(m) = gpu_mib {
        println!("  GPU memory held {m:.0} MiB (nvidia-smi, after the timed steps)");
    }
    if let Some(k) = &kernels {
        println!(
            "  kernels (CubeCL profile, {} timed steps): {:.0} launches and {:.2} ms of device \
             time per step, {} different kernels",
            k.steps, k.kernels_per_step, k.device_ms_per_step, k.distinct_kernels
        );
        let launches: Vec<String> = k.tables.iter().map(|(n, _)| n.to_string()).collect();
        if launches.len() <= 16 {
            println!(
                "  launches per wait for the device (phases in order): {}",
                launches.join(", ")
            );
        }
        println!("  most device time per step:");
        for t in &k.top {
            println!(
                "    {:>9.3} ms {:>8.1}×  {}",
                t.device_ms, t.launches, t.name
            );
        }
    }
    Ok(())
}
