//! Checkpoints: a run stopped part-way and resumed from its checkpoint gives exactly the losses
//! and weights of the uninterrupted run (CPU); corrupt, missing and foreign checkpoints are
//! refused with clear errors; only the newest N are kept; `latest` points at the newest.

use canc_runtime::backend::CpuTrain;
use canc_runtime::checkpoint::{self, Checkpoint, CheckpointError};
use canc_runtime::data;
use canc_runtime::exec::Program;
use canc_runtime::train::{self, Checkpointing, Observer, Outcome, RunOptions, Trainer};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

mod common;
use common::{flat, small};

/// Sets the stop flag after step `at` (as Ctrl-C would).
struct StopAt(u64, Arc<AtomicBool>);
impl<B: burn::tensor::backend::AutodiffBackend> Observer<B> for StopAt {
    fn on_step(&mut self, log: &train::StepLog) {
        if log.step == self.0 {
            self.1.store(true, Ordering::SeqCst);
        }
    }
}

fn opts(dir: &Path, steps: u64, every: u64, keep: usize) -> RunOptions {
    let mut o = RunOptions::new(steps, 16);
    o.out = Some(dir.to_path_buf());
    o.checkpoint = Some(Checkpointing {
        every,
        keep,
        run_key: "test-key".into(),
    });
    o
}

/// The metrics file without its timing fields, one JSON object per line.
fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).expect("json line");
            let o = v.as_object_mut().expect("object");
            o.retain(|k, _| k != "seconds" && !k.ends_with("_s"));
            v
        })
        .collect()
}

/// Runs `spec` 6 steps uninterrupted, and again stopped after step 2 and resumed from its
/// checkpoint in a fresh program and trainer: every later loss, the final weights, the EMA
/// teachers and the metrics file must be identical.
fn resume_is_exact(spec: &str) {
    resume_is_exact_with(spec, [None; 3]);
}

/// [`resume_is_exact`], with `adamw[i]` as [`RunOptions::flat_adamw`] of the uninterrupted run,
/// the stopped run and the resumed run.
fn resume_is_exact_with(spec: &str, adamw: [Option<bool>; 3]) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (full_dir, cut_dir) = (tmp.path().join("full"), tmp.path().join("cut"));
    let plan = small(spec);
    let ds = data::load(&plan.data, None).expect("Fashion-MNIST installed");
    let device = Default::default();

    let mut p = Program::<CpuTrain>::new(plan.clone(), &device).expect("builds");
    let mut o = opts(&full_dir, 6, 100, 3);
    o.flat_adamw = adamw[0];
    let mut t = Trainer::new(&p, &ds, &o).expect("trainer");
    let full = train::run(&mut t, &mut p, &ds, &o, &device, &mut train::Quiet).expect("runs");
    assert_eq!(full.outcome, Outcome::Finished);
    let full_w = flat(&p.model);
    let full_t: Vec<Vec<f32>> = p.teachers.iter().map(|x| flat(&x.2)).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let mut p = Program::<CpuTrain>::new(plan.clone(), &device).expect("builds");
    let mut o = opts(&cut_dir, 6, 100, 3);
    o.stop = Some(stop.clone());
    o.flat_adamw = adamw[1];
    let mut t = Trainer::new(&p, &ds, &o).expect("trainer");
    let first = train::run(&mut t, &mut p, &ds, &o, &device, &mut StopAt(2, stop)).expect("runs");
    assert_eq!(first.outcome, Outcome::Interrupted);
    assert_eq!(first.logs.len(), 3);
    drop((p, t));

    // A different seed, so nothing but the checkpoint can carry the weights over.
    let mut other = plan.clone();
    other
        .train
        .insert("seed".into(), canc_compiler::resolved::RValue::Int(12345));
    let mut p = Program::<CpuTrain>::new(other, &device).expect("builds");
    p.plan = plan;
    let ck = Checkpoint::read(&checkpoint::latest(&cut_dir).expect("latest")).expect("reads");
    assert_eq!(ck.state.step, 3);
    ck.check_key("test-key").expect("same run");
    let mut o = opts(&cut_dir, 6, 100, 3);
    o.start = ck.state.step;
    o.flat_adamw = adamw[2];
    let mut t = Trainer::new(&p, &ds, &o).expect("trainer");
    assert_eq!(t.restore(&mut p, &ck).expect("restores"), 3);
    let rest = train::run(&mut t, &mut p, &ds, &o, &device, &mut train::Quiet).expect("resumes");
    assert_eq!(rest.outcome, Outcome::Finished);

    let want: Vec<f64> = full.logs[3..].iter().map(|l| l.loss).collect();
    let got: Vec<f64> = rest.logs.iter().map(|l| l.loss).collect();
    assert_eq!(got, want, "{spec}: losses after resume differ");
    assert_eq!(flat(&p.model), full_w, "{spec}: final weights differ");
    let got_t: Vec<Vec<f32>> = p.teachers.iter().map(|x| flat(&x.2)).collect();
    assert_eq!(got_t, full_t, "{spec}: EMA teachers differ");
    assert_eq!(
        metrics(&cut_dir),
        metrics(&full_dir),
        "{spec}: metrics.jsonl differs"
    );
}

#[test]
fn stop_and_resume_equals_the_uninterrupted_run_adamw() {
    resume_is_exact("can");
}

#[test]
fn flat_adamw_trains_and_resumes_as_burns_adamw() {
    // Burn's AdamW uninterrupted; the flat AdamW (the GPUs' default) for the first 3 steps,
    // resumed by Burn's from its checkpoint: the same losses and weights, bit for bit.
    resume_is_exact_with("can", [Some(false), Some(true), Some(false)]);
    // And Burn's checkpoint resumed by the flat one.
    resume_is_exact_with("can", [Some(false), Some(false), Some(true)]);
}

#[test]
fn stop_and_resume_equals_the_uninterrupted_run_with_ema_teacher() {
    // MoCo v3: EMA teacher with a cosine momentum schedule, predictor, BN MLPs.
    resume_is_exact("mocov3");
}

#[test]
fn resume_drops_metrics_lines_written_after_the_checkpoint() {
    // A run killed between a checkpoint and the next leaves lines (and perhaps half a line)
    // for steps the resumed run repeats: they are dropped, not duplicated.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let plan = small("mae");
    let ds = data::load(&plan.data, None).expect("Fashion-MNIST installed");
    let device = Default::default();
    let mut p = Program::<CpuTrain>::new(plan, &device).expect("builds");
    let o = opts(dir, 4, 2, 3);
    let mut t = Trainer::new(&p, &ds, &o).expect("trainer");
    train::run(&mut t, &mut p, &ds, &o, &device, &mut train::Quiet).expect("runs");
    let path = dir.join("metrics.jsonl");
    let mut text = std::fs::read_to_string(&path).expect("metrics");
    text.push_str("{\"step\": 4, \"loss\": 1.0}\n{\"step\": 5, \"lo");
    std::fs::write(&path, text).expect("write");
    let mut o = opts(dir, 6, 2, 3);
    o.start = 4;
    train::run(&mut t, &mut p, &ds, &o, &device, &mut train::Quiet).expect("runs");
    let steps: Vec<u64> = metrics(dir)
        .iter()
        .map(|v| v["step"].as_u64().expect("step"))
        .collect();
    assert_eq!(steps, vec![0, 1, 2, 3, 4, 5]);
}

#[test]
fn keeps_the_newest_n_and_latest_points_at_the_newest() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let plan = small("mae");
    let ds = data::load(&plan.data, None).expect("Fashion-MNIST installed");
    let device = Default::default();
    let mut p = Program::<CpuTrain>::new(plan, &device).expect("builds");
    let o = opts(dir, 5, 1, 2);
    let mut t = Trainer::new(&p, &ds, &o).expect("trainer");
    let end = train::run(&mut t, &mut p, &ds, &o, &device, &mut train::Quiet).expect("runs");
    let kept: Vec<u64> = checkpoint::list(&dir.join("checkpoints"))
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(kept, vec![4, 5]);
    let latest = checkpoint::latest(dir).expect("latest");
    assert_eq!(latest, dir.join("checkpoints").join("step-00000005"));
    assert_eq!(end.checkpoint.as_deref(), Some(latest.as_path()));
    // No temporary directories or files are left behind.
    let stray: Vec<String> = std::fs::read_dir(dir.join("checkpoints"))
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(stray.is_empty(), "left behind: {stray:?}");
}

#[test]
fn corrupt_missing_and_foreign_checkpoints_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    assert!(matches!(
        checkpoint::latest(dir),
        Err(CheckpointError::None(_))
    ));
    let plan = small("simclr");
    let ds = data::load(&plan.data, None).expect("Fashion-MNIST installed");
    let device = Default::default();
    let mut p = Program::<CpuTrain>::new(plan, &device).expect("builds");
    let o = opts(dir, 1, 1, 3);
    let mut t = Trainer::new(&p, &ds, &o).expect("trainer");
    train::run(&mut t, &mut p, &ds, &o, &device, &mut train::Quiet).expect("runs");
    let ck_dir = checkpoint::latest(dir).expect("latest");

    let ck = Checkpoint::read(&ck_dir).expect("reads");
    let err = ck.check_key("another-run").expect_err("foreign");
    assert!(err.to_string().contains("another-run"), "{err}");

    // One flipped byte in the weights.
    let model = ck_dir.join("model.bin");
    let mut bytes = std::fs::read(&model).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&model, &bytes).expect("write");
    let err = Checkpoint::read(&ck_dir).expect_err("corrupt");
    assert!(
        matches!(err, CheckpointError::Corrupt { .. }) && err.to_string().contains("model.bin"),
        "{err}"
    );

    // A truncated state file, and a missing one.
    let state = ck_dir.join("state.json");
    std::fs::write(&state, "{\"format\": 1, \"st").expect("write");
    let err = Checkpoint::read(&ck_dir).expect_err("truncated state");
    assert!(err.to_string().contains("state.json"), "{err}");
    std::fs::remove_file(&state).expect("rm");
    let err = Checkpoint::read(&ck_dir).expect_err("no state");
    assert!(err.to_string().contains("missing"), "{err}");
}
