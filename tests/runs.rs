//! `canc run`, `canc resume` and `canc export` end to end on real Fashion-MNIST: a run killed
//! (SIGKILL) or interrupted (SIGINT) part-way and resumed writes exactly the metrics of the
//! uninterrupted run; a changed spec, a corrupt checkpoint and a NaN loss are refused with clear
//! errors; `--smoke` works for every spec; export writes the encoder's weights.

use assert_cmd::Command;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A tiny model on 64 images, batch 16 (4 steps per epoch), a checkpoint every 4 steps.
const TINY: &[&str] = &[
    "--set",
    "data.limit=64",
    "--set",
    "train.batch=16",
    "--set",
    "network.encoder.dim=32",
    "--set",
    "network.encoder.depth=1",
    "--set",
    "network.encoder.heads=2",
    "--set",
    "network.decoder.dim=32",
    "--set",
    "network.decoder.depth=1",
    "--set",
    "network.decoder.heads=2",
    "--set",
    "train.checkpoint_every=4 steps",
];

fn canc() -> Command {
    let mut c = Command::cargo_bin("canc").expect("binary built");
    c.env("NO_COLOR", "1");
    c
}

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("canc")
}

fn run_args(out: &Path, steps: u64) -> Vec<String> {
    let mut v: Vec<String> = ["run", "specs/can.canspec"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(TINY.iter().map(|s| s.to_string()));
    v.extend([
        "--steps".into(),
        steps.to_string(),
        "--out".into(),
        out.display().to_string(),
    ]);
    v
}

/// `metrics.jsonl` without the wall-time fields.
fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .expect("metrics.jsonl")
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).expect("one JSON object a line");
            v.as_object_mut()
                .expect("object")
                .retain(|k, _| k != "seconds" && !k.ends_with("_s"));
            v
        })
        .collect()
}

fn status(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("status.json")).expect("status.json");
    serde_json::from_str(&text).expect("status is JSON")
}

/// Starts a run and waits until its first checkpoint exists (the process still running).
fn start_until_checkpoint(out: &Path, steps: u64) -> std::process::Child {
    let mut child = std::process::Command::new(bin())
        .args(run_args(out, steps))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawns");
    let first = out.join("checkpoints").join("step-00000004");
    let t0 = Instant::now();
    while !first.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "no checkpoint after 5 minutes"
        );
        if let Ok(Some(st)) = child.try_wait() {
            panic!("the run ended before its first checkpoint: {st}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn killed_and_interrupted_runs_resume_to_the_uninterrupted_metrics() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let full = tmp.path().join("full");
    canc().args(run_args(&full, 24)).assert().success();
    assert_eq!(status(&full)["state"], "finished");
    let want = metrics(&full);
    assert_eq!(want.len(), 24);

    // SIGKILL: no chance to clean up; the latest checkpoint and the metrics lines up to it
    // must be enough.
    let killed = tmp.path().join("killed");
    let mut child = start_until_checkpoint(&killed, 24);
    child.kill().expect("kill");
    let _ = child.wait();
    canc()
        .args(["resume", &killed.display().to_string()])
        .assert()
        .success();
    assert_eq!(metrics(&killed), want, "metrics after kill + resume");
    assert_eq!(status(&killed)["state"], "finished");

    // SIGINT (Ctrl-C): a checkpoint at the step reached, exit code 130, then resume.
    let cut = tmp.path().join("ctrl-c");
    let child = start_until_checkpoint(&cut, 24);
    let ok = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(ok.success());
    let out = child.wait_with_output().expect("waits");
    assert_eq!(out.status.code(), Some(130), "Ctrl-C exits 130");
    let st = status(&cut);
    assert_eq!(st["state"], "interrupted", "{st}");
    let step = st["step"].as_u64().expect("step");
    let ck = cut.join("checkpoints").join(format!("step-{step:08}"));
    assert!(ck.is_dir(), "a checkpoint at the interrupted step {step}");
    // `canc run` on the same directory with the same spec resumes too.
    canc().args(run_args(&cut, 24)).assert().success();
    assert_eq!(metrics(&cut), want, "metrics after Ctrl-C + resume");
}

#[test]
fn a_changed_spec_or_corrupt_checkpoint_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("run");
    canc().args(run_args(&dir, 8)).assert().success();

    let mut other = run_args(&dir, 8);
    other.extend(["--set".into(), "network.encoder.heads=4".into()]);
    let out = canc().args(&other).assert().code(1);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.contains("holds another run"), "{err}");
    assert!(
        err.contains("network.encoder.heads  2 → 4"),
        "the diff: {err}"
    );

    let out = canc().args(run_args(&dir, 12)).assert().code(1);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.contains("steps: 8 → 12"), "{err}");
    let want = metrics(&dir);

    let model = dir.join("checkpoints/step-00000008/model.bin");
    let mut bytes = std::fs::read(&model).expect("model.bin");
    let n = bytes.len();
    bytes.truncate(n - 7);
    std::fs::write(&model, bytes).expect("write");
    let out = canc()
        .args(["resume", &dir.display().to_string()])
        .assert()
        .code(1);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        err.contains("corrupt") && err.contains("model.bin"),
        "{err}"
    );
    assert!(err.contains("--from"), "says how to go on: {err}");
    // An earlier checkpoint still continues the run, to the same metrics.
    canc()
        .args(["resume", &dir.display().to_string(), "--from", "4"])
        .assert()
        .success();
    assert_eq!(metrics(&dir), want);
    assert_eq!(status(&dir)["state"], "finished");

    let out = canc()
        .args(["resume", &tmp.path().join("nowhere").display().to_string()])
        .assert()
        .code(1);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.contains("run.json"), "{err}");
}

#[test]
fn a_nan_loss_stops_the_run_naming_the_term_and_keeps_the_checkpoint() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("run");
    let mut args = run_args(&dir, 40);
    args.extend([
        "--set".into(),
        "optimizer.lr=1e6".into(),
        "--set".into(),
        "train.checkpoint_every=1 steps".into(),
    ]);
    let out = canc().args(&args).assert().code(1);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.contains("not finite"), "{err}");
    assert!(
        ["`nce`", "`mae`", "`denoise`", "parameter"]
            .iter()
            .any(|t| err.contains(t)),
        "names the term: {err}"
    );
    let st = status(&dir);
    assert_eq!(st["state"], "failed");
    let ck = st["checkpoint"].as_str().expect("a checkpoint is kept");
    assert!(Path::new(ck).join("model.bin").is_file());
    // Every metrics line written is finite JSON (no NaN line was written).
    for v in metrics(&dir) {
        assert!(v["loss"].as_f64().expect("finite loss").is_finite());
    }
}

#[test]
fn export_writes_the_encoder_as_safetensors_with_its_architecture() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("run");
    canc().args(run_args(&dir, 4)).assert().success();
    canc()
        .args([
            "export",
            &dir.display().to_string(),
            "--format",
            "safetensors",
        ])
        .assert()
        .success();
    let bytes = std::fs::read(dir.join("export/encoder.safetensors")).expect("safetensors");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("header");
    let mut params = 0u64;
    let mut end = 0u64;
    for (name, t) in header.as_object().expect("object") {
        if name == "__metadata__" {
            continue;
        }
        assert_eq!(t["dtype"], "F32", "{name}");
        let count: u64 = t["shape"]
            .as_array()
            .expect("shape")
            .iter()
            .map(|d| d.as_u64().expect("dim"))
            .product();
        params += count;
        end = end.max(t["data_offsets"][1].as_u64().expect("offset"));
    }
    assert_eq!(bytes.len() as u64, 8 + n as u64 + end, "file size");
    // The compiler's count for the same encoder (dim 32, depth 1, patch 4, 1 channel, CLS).
    let arch: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("export/encoder.json")).expect("json"),
    )
    .expect("architecture JSON");
    assert_eq!(arch["params"].as_u64(), Some(params));
    assert_eq!(arch["config"]["dim"], 32);
    assert_eq!(arch["checkpoint_step"], 4);
    let plan = canc_compiler::resolve_path(
        "specs/can.canspec".as_ref(),
        &TINY
            .iter()
            .filter(|s| **s != "--set")
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
    );
    let enc = plan.plans[0].network("encoder").expect("encoder");
    assert_eq!(params, enc.params.total());
}

#[test]
fn smoke_runs_every_spec_and_checks_its_own_resume() {
    // `--smoke` with the encoder shrunk (the specs' decoders and heads as written): 30 steps,
    // checkpoints at 10/20/30, then the reload-and-rerun check of the last 10 steps.
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut specs: Vec<PathBuf> = std::fs::read_dir("specs")
        .expect("specs/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "canspec"))
        .collect();
    specs.sort();
    assert!(specs.len() >= 7);
    for spec in &specs {
        let stem = spec
            .file_stem()
            .expect("stem")
            .to_string_lossy()
            .into_owned();
        let out = tmp.path().join(&stem);
        // CMAE's feature decoder predicts encoder features: its width follows the encoder's.
        let extra: &[&str] = if stem == "cmae" {
            &["--set", "network.feature_decoder.out=32"]
        } else {
            &[]
        };
        let assert = canc()
            .args(["run", &spec.display().to_string(), "--smoke"])
            .args([
                "--set",
                "network.encoder.dim=32",
                "--set",
                "network.encoder.depth=1",
                "--set",
                "network.encoder.heads=2",
                "--out",
                &out.display().to_string(),
            ])
            .args(extra)
            .assert();
        let o = assert.get_output();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{stem}: {err}");
        assert!(err.contains("identical losses"), "{stem}: {err}");
        assert_eq!(metrics(&out).len(), 30, "{stem}");
        assert_eq!(status(&out)["state"], "finished", "{stem}");
    }
}
