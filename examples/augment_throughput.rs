//! Measures how fast the data pipeline feeds training: the CAN spec's two-view augmentation of
//! Fashion-MNIST at 256 images per step, inline, then through the background prefetcher to a
//! consumer that simulates a training step.
//!
//! ```text
//! cargo run --release --example augment_throughput [-- STEP_MS...]   (default: 0 20 50 100)
//! ```
//!
//! A simulated step either sleeps (the device works while the CPU is free, as with a GPU) or
//! spins one core (a CPU step competing with augmentation for cores; real CPU training uses all
//! of them, so this is the optimistic case).

use std::time::{Duration, Instant};

use canc_runtime::data::{self, prefetch};

/// Steps measured per configuration.
const STEPS: u64 = 20;
/// Images per step.
const BATCH: usize = 256;
/// Prefetch depth.
const DEPTH: usize = 2;

/// How the consumer spends its step.
#[derive(Clone, Copy)]
enum Step {
    Sleep,
    Spin,
}

fn simulate(kind: Step, d: Duration) {
    match kind {
        Step::Sleep => std::thread::sleep(d),
        Step::Spin => {
            let t = Instant::now();
            while t.elapsed() < d {
                std::hint::spin_loop();
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let step_ms: Vec<u64> = match std::env::args()
        .skip(1)
        .map(|a| a.parse::<u64>())
        .collect::<Result<Vec<_>, _>>()?
    {
        v if v.is_empty() => vec![0, 20, 50, 100],
        v => v,
    };
    let spec = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/can.canspec");
    let res = canc_compiler::resolve_path(&spec, &[]);
    if res.has_errors() {
        return Err(format!("{} does not compile", spec.display()).into());
    }
    let plan = res.plans[0].clone();
    let t = Instant::now();
    let ds = data::load(&plan.data, None)?;
    println!(
        "loaded {} images {}x{}x{} in {:.2} s; {} rayon threads",
        ds.n,
        ds.channels,
        ds.size,
        ds.size,
        t.elapsed().as_secs_f64(),
        rayon::current_num_threads()
    );
    let per_epoch = (ds.n / BATCH) as u64;
    let bp = prefetch::BatchPlan::from_plan(&plan, BATCH, 1, per_epoch);
    let views = bp.view_steps.len();

    // Inline: make_batch for STEPS steps (after one warm-up step).
    bp.step(&ds, 0)?;
    let t = Instant::now();
    for s in 1..=STEPS {
        bp.step(&ds, s)?;
    }
    let inline = t.elapsed().as_secs_f64();
    let per_step = inline / STEPS as f64;
    let ips = (STEPS as usize * BATCH) as f64 / inline;
    println!(
        "inline make_batch, batch {BATCH}, {views} views: {:.1} ms/step, {ips:.0} images/s \
         ({:.0} augmented views/s)",
        per_step * 1e3,
        ips * views as f64
    );
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let t = Instant::now();
    one.install(|| -> Result<(), data::DataError> {
        for s in 1..=5 {
            bp.step(&ds, s)?;
        }
        Ok(())
    })?;
    let single = t.elapsed().as_secs_f64() / 5.0;
    println!(
        "  1 thread: {:.1} ms/step, {:.0} images/s (parallel speed-up {:.2}x)",
        single * 1e3,
        BATCH as f64 / single,
        single / per_step
    );

    // Prefetched: the consumer simulates a step of `ms` after receiving each batch.
    println!("prefetch depth {DEPTH}, {STEPS} steps; consumer step simulated by sleep / spin:");
    for &ms in &step_ms {
        for (kind, name) in [(Step::Sleep, "sleep"), (Step::Spin, "spin ")] {
            let d = Duration::from_millis(ms);
            for depth in [0, DEPTH] {
                let t = Instant::now();
                let wait = prefetch::prefetch(&ds, &bp, 1..STEPS + 1, depth, |it| {
                    while let Some((b, _)) = it.next_timed() {
                        b?;
                        simulate(kind, d);
                    }
                    Ok::<_, data::DataError>(it.total_wait())
                })?;
                let wall = t.elapsed().as_secs_f64();
                println!(
                    "  step {ms:>4} ms {name} depth {depth}: {:>6.1} ms/step, waited {:>5.1} ms/step \
                     ({:>3.0}% of wall), {:>5.0} images/s",
                    wall / STEPS as f64 * 1e3,
                    wait / STEPS as f64 * 1e3,
                    100.0 * wait / wall,
                    (STEPS as usize * BATCH) as f64 / wall
                );
            }
        }
    }
    Ok(())
}
