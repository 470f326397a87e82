//! Every method spec trains through the generic plan interpreter: 30 steps on a small fixed
//! subset of Fashion-MNIST, every loss term finite, and the mean loss of the last 10 steps at least
//! 3% below that of the first 10 (not just "it ran"); the collapse indicators are logged where
//! due.

use canc_runtime::backend::CpuTrain;
use canc_runtime::data;
use canc_runtime::exec::Program;
use canc_runtime::train::{RunOptions, train};

/// A small model and a short schedule so 30 steps run in seconds on 2 cores: one fixed batch of
/// 32 images (1 step per epoch; augmentation, masks and noise still differ each step), 30 epochs,
/// warm-up 2 steps, lr 1e-3 without batch scaling (the specs' 2.5e-4 is tuned for 50 epochs;
/// 30 steps need a larger one to show progress on the flatter contrastive losses).
fn overrides(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "data.limit=32",
        "train.batch=32",
        "train.epochs=30",
        "optimizer.lr_scaling=none",
        "optimizer.lr=1e-3",
        "schedule.warmup=2 steps",
        "network.encoder.dim=64",
        "network.encoder.depth=2",
        "network.encoder.heads=2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn trains(spec: &str, extra: &[&str]) {
    let path = format!("../specs/{spec}.canspec");
    let res = canc_compiler::resolve_path(path.as_ref(), &overrides(extra));
    assert!(
        !res.has_errors(),
        "{spec}: {:?}",
        res.diagnostics
            .iter()
            .map(|d| d.message.clone())
            .collect::<Vec<_>>()
    );
    let plan = res.plans[0].clone();
    let total = plan.optim.total_steps.expect("known data size");
    assert_eq!(total, 30);
    let ds = data::load(&plan.data, None).expect("Fashion-MNIST is installed");
    let device = Default::default();
    let mut program = Program::<CpuTrain>::new(plan, &device).expect("builds");
    let opts = RunOptions::new(total, 32);
    let logs = train(&mut program, &ds, &opts, &device).expect("trains");
    assert_eq!(logs.len(), 30);
    for l in &logs {
        assert!(l.loss.is_finite(), "{spec} step {}: {}", l.step, l.loss);
        for (t, v) in &l.terms {
            assert!(v.is_finite(), "{spec} step {}: {t} = {v}", l.step);
        }
    }
    // Collapse indicators of the embedding the contrastive loss compares, at every
    // `train.log_every` (10) steps and the last: none for MAE, which has no such loss.
    let contrastive = spec != "mae";
    for l in &logs {
        let get = |k: &str| l.extra.iter().find(|(n, _)| n == k).map(|x| x.1);
        let due = contrastive && (l.step % 10 == 0 || l.step == 29);
        match (get("rankme"), get("emb_std")) {
            (Some(rank), Some(std)) => {
                assert!(due, "{spec} step {}: indicators not due", l.step);
                // At most min(batch, width); above 1 unless collapsed.
                assert!((1.0..=32.0 + 1e-3).contains(&rank), "{spec}: rankme {rank}");
                assert!(std > 0.0 && std <= 1.0, "{spec}: emb_std {std}");
            }
            (None, None) => assert!(!due, "{spec} step {}: indicators missing", l.step),
            other => panic!("{spec} step {}: {other:?}", l.step),
        }
    }
    // Means over 10 steps: one step's loss moves by a few percent with its augmentation.
    let first: f64 = logs[..10].iter().map(|l| l.loss).sum::<f64>() / 10.0;
    let last: f64 = logs[20..].iter().map(|l| l.loss).sum::<f64>() / 10.0;
    eprintln!(
        "{spec}: mean loss of steps 0-9 {first:.4}, of steps 20-29 {last:.4}; all: {:?}",
        logs.iter()
            .map(|l| (l.loss * 1000.0).round() / 1000.0)
            .collect::<Vec<_>>()
    );
    assert!(
        last < 0.97 * first,
        "{spec}: loss did not decrease: first 10 steps {first:.4}, last 10 {last:.4}"
    );
}

#[test]
fn can_trains() {
    trains(
        "can",
        &["network.decoder.dim=64", "network.decoder.heads=2"],
    );
}

#[test]
fn can_trains_in_bf16() {
    trains(
        "can",
        &[
            "network.decoder.dim=64",
            "network.decoder.heads=2",
            "train.precision=bf16",
        ],
    );
}

#[test]
fn mae_trains() {
    trains(
        "mae",
        &["network.decoder.dim=64", "network.decoder.heads=2"],
    );
}

#[test]
fn simclr_trains() {
    trains("simclr", &[]);
}

#[test]
fn cmae_trains() {
    trains(
        "cmae",
        &[
            "network.decoder.dim=64",
            "network.decoder.heads=2",
            "network.feature_decoder.dim=64",
            "network.feature_decoder.heads=2",
            "network.feature_decoder.out=64",
        ],
    );
}

#[test]
fn macrl_trains() {
    trains(
        "macrl",
        &["network.decoder.dim=64", "network.decoder.heads=2"],
    );
}

#[test]
fn mocov3_trains() {
    trains("mocov3", &[]);
}

#[test]
fn supcon_trains() {
    trains("supcon", &[]);
}

/// `RunOptions::sync_phases` (what `canc bench` sets) only waits for the device between phases:
/// the same steps give the same losses with and without it, and the phases still add up to no
/// more than the step.
#[test]
fn syncing_between_phases_changes_no_result() {
    let mut extra = overrides(&[]);
    extra.push("train.epochs=3".into());
    let res = canc_compiler::resolve_path("../specs/can.canspec".as_ref(), &extra);
    assert!(!res.has_errors());
    let plan = res.plans[0].clone();
    let ds = data::load(&plan.data, None).expect("Fashion-MNIST is installed");
    let device = Default::default();
    let run = |sync: bool| {
        let mut program = Program::<CpuTrain>::new(plan.clone(), &device).expect("builds");
        let mut opts = RunOptions::new(3, 32);
        opts.sync_phases = sync;
        train(&mut program, &ds, &opts, &device).expect("trains")
    };
    let (plain, synced) = (run(false), run(true));
    assert_eq!(synced.len(), 3);
    for (a, b) in plain.iter().zip(&synced) {
        assert_eq!(a.loss, b.loss, "step {}", a.step);
        assert_eq!(a.terms, b.terms, "step {}", a.step);
        let phases: f64 = b.phases.named().iter().map(|(_, v)| v).sum();
        assert!(
            phases <= b.seconds + 1e-6,
            "step {}: {phases} > {}",
            b.step,
            b.seconds
        );
    }
}
