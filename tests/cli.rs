//! The `canc` binary end to end: exit codes, output formats, fmt, explain.

use assert_cmd::Command;

fn canc() -> Command {
    let mut c = Command::cargo_bin("canc").expect("binary built");
    c.env("NO_COLOR", "1");
    c
}

#[test]
fn check_passes_on_the_library_and_fails_with_exit_1_on_bad_specs() {
    canc()
        .args(["check", "specs/can.canspec", "specs/mae.canspec"])
        .assert()
        .success();
    let out = canc()
        .args(["check", "tests/bad/e0011_unknown_key_typo.canspec"])
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("error[E0011]"), "{stderr}");
    assert!(
        stderr.contains("tests/bad/e0011_unknown_key_typo.canspec:"),
        "file:line:col shown: {stderr}"
    );
    assert!(stderr.contains('^'), "caret shown: {stderr}");
}

#[test]
fn usage_errors_exit_2() {
    canc().args(["check"]).assert().code(2);
    canc().args(["frobnicate"]).assert().code(2);
}

#[test]
fn json_diagnostics_are_one_object_per_line() {
    let out = canc()
        .args([
            "check",
            "specs/can.canspec",
            "--message-format",
            "json",
            "--set",
            "train.epoch=3",
            "--set",
            "optimizer.lr=-1",
        ])
        .assert()
        .code(1);
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0]["code"], "E0011");
    assert_eq!(lines[0]["help"], "did you mean `epochs`?");
    assert_eq!(lines[0]["file"], "--set #1");
    assert_eq!(lines[0]["column"], 7);
    assert_eq!(lines[1]["code"], "E0021");
}

#[test]
fn set_overrides_reach_the_resolved_spec() {
    let out = canc()
        .args([
            "resolve",
            "specs/can.canspec",
            "--set",
            "train.epochs=7",
            "--set",
            "mask_ratio=0.6",
        ])
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(stdout.contains("\"epochs\": Int(7)"), "{stdout}");
    assert!(stdout.contains("(Some(\"ratio\"), Float(0.6))"), "{stdout}");
}

#[test]
fn fmt_check_detects_unformatted_files_and_fmt_fixes_them() {
    let dir = std::env::temp_dir().join(format!("canc-fmt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let f = dir.join("messy.canspec");
    std::fs::write(&f, "train{epochs=1,batch=2}\n").expect("write");
    canc().args(["fmt", "--check"]).arg(&f).assert().code(1);
    canc().arg("fmt").arg(&f).assert().success();
    assert_eq!(
        std::fs::read_to_string(&f).expect("read"),
        "train {\n  epochs = 1\n  batch = 2\n}\n"
    );
    canc().args(["fmt", "--check"]).arg(&f).assert().success();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn explain_knows_every_code() {
    let out = canc().args(["explain", "E0011"]).assert().success();
    assert!(String::from_utf8_lossy(&out.get_output().stdout).contains("unknown key"));
    canc().args(["explain", "E9999"]).assert().code(1);
}

#[test]
fn missing_spec_is_an_error_not_a_panic() {
    let out = canc()
        .args(["check", "does/not/exist.canspec"])
        .assert()
        .code(1);
    assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("E0003"));
}

#[test]
fn run_on_cuda_without_the_feature_is_a_clear_usage_error() {
    if cfg!(feature = "cuda") {
        return;
    }
    let out = canc()
        .args(["run", "specs/can.canspec", "--smoke", "--device", "cuda"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--features cuda"), "{err}");
}

#[test]
fn run_on_wgpu_without_the_feature_is_a_clear_usage_error() {
    if cfg!(feature = "wgpu") {
        return;
    }
    let out = canc()
        .args(["bench", "specs/can.canspec", "--device", "wgpu:1"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--features wgpu"), "{err}");
}

#[test]
fn run_with_missing_data_names_the_path_and_exits_1() {
    let dir = std::env::temp_dir().join("canc-cli-missing-data");
    let out = canc()
        .args([
            "run",
            "specs/can.canspec",
            "--smoke",
            "--data",
            "/nonexistent/fmnist",
            "--out",
        ])
        .arg(&dir)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/fmnist"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn run_refuses_a_sweep_without_a_variant() {
    let out = canc()
        .args([
            "run",
            "specs/ablations/can_mask_ratio_sweep.canspec",
            "--smoke",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--variant"));
}

#[test]
fn unknown_device_is_a_usage_error() {
    let out = canc()
        .args(["run", "specs/can.canspec", "--device", "tpu"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown device `tpu`"));
}

/// `canc bench --json`: one JSON object on stdout with the figures, a progress line per step on
/// stderr, and the precision the spec trains in (MFU is taken against that precision's peak).
#[test]
fn bench_json_reports_the_step_and_the_precision() {
    let run = |spec: &str, extra: &[&str], env: Option<&str>| {
        let mut args = vec![
            "bench", spec, "--batch", "2", "--steps", "2", "--warmup", "1", "--json",
        ];
        args.extend_from_slice(extra);
        let mut cmd = canc();
        if let Some(v) = env {
            cmd.env("CANC_FLAT_ADAMW", v).env("CANC_BATCH_CALLS", v);
        }
        let out = cmd.args(&args).assert().success();
        let o = out.get_output();
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
        (v, stderr)
    };
    let (v, stderr) = run("specs/results/can.canspec", &[], None);
    assert_eq!(v["precision"], "f32");
    // The CPU's default AdamW is Burn's, a tensor at a time.
    assert_eq!(v["optimizer"], "adamw (per tensor)");
    // The CPU runs each view's encoder, decoder and projector call on its own by default.
    assert_eq!(v["network_calls"], 6);
    assert_eq!(v["batch"], 2);
    assert!(v["images_per_s"].as_f64().is_some_and(|x| x > 0.0), "{v}");
    assert!(
        v["train_flop_per_step"].as_f64().is_some_and(|x| x > 0.0),
        "{v}"
    );
    assert!(stderr.contains("step 1/3 (warm-up)"), "{stderr}");
    assert!(stderr.contains("step 3/3 (timed)"), "{stderr}");
    // A throughput model on synthetic RGB data, in bf16 (shrunk to two blocks for the test),
    // with the flat AdamW and batched calls that GPUs default to: encoder, decoder and
    // projector each run once for both views.
    let (v, _) = run(
        "bench/specs/vit_s4_32.canspec",
        &[
            "--set",
            "train.precision=bf16",
            "--set",
            "network.encoder.depth=2",
        ],
        Some("1"),
    );
    assert_eq!(v["precision"], "bf16");
    assert_eq!(v["optimizer"], "adamw (flat)");
    assert_eq!(v["network_calls"], 3);
    assert_eq!(v["spec"], "vit_s4_32");
}
