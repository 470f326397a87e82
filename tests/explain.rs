//! `canc explain SPEC`: every resolved value with its origin, and the derived numbers with their
//! arithmetic. Snapshots of the base CAN spec and one ablation, then targeted checks of origins
//! (ablation file and line, `--set`, defaults, data-derived values) and of the derived numbers,
//! each computed by hand.

use assert_cmd::Command;
use canc_compiler::explain::explain;
use std::path::Path;

/// The explanation of the only variant of `path` with `overrides`.
fn explained(path: &str, overrides: &[String]) -> String {
    let res = canc_compiler::resolve_path(Path::new(path), overrides);
    assert!(!res.has_errors(), "{path}: {:?}", res.diagnostics);
    assert_eq!(res.variants.len(), 1, "{path} has one variant");
    explain(&res.variants[0], &res.plans[0])
}

/// The line `key = ...` of the section whose header starts with `section`, with runs of spaces
/// collapsed to one (the alignment is not what these tests check).
fn row(out: &str, section: &str, key: &str) -> String {
    let mut in_section = false;
    for line in out.lines() {
        if !line.starts_with(' ') {
            in_section = !line.is_empty() && line.starts_with(section);
            continue;
        }
        let trimmed = line.trim_start();
        if in_section
            && trimmed
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with("= "))
        {
            return trimmed.split_whitespace().collect::<Vec<_>>().join(" ");
        }
    }
    panic!("no `{key}` in section `{section}`:\n{out}");
}

#[test]
fn snapshot_of_the_can_spec() {
    let out = explained("specs/can.canspec", &[]);
    insta::with_settings!({ snapshot_path => "snapshots/explain", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!("can", out);
    });
}

#[test]
fn snapshot_of_the_no_noise_ablation() {
    let out = explained("specs/ablations/can_no_noise.canspec", &[]);
    insta::with_settings!({ snapshot_path => "snapshots/explain", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!("can_no_noise", out);
    });
}

#[test]
fn values_an_ablation_overrides_point_at_the_ablation() {
    let out = explained("specs/ablations/can_no_noise.canspec", &[]);
    let abl = "specs/ablations/can_no_noise.canspec";
    // `network.decoder.cond = none` is line 13; the value starts at column 24.
    assert_eq!(
        row(&out, "network decoder", "cond"),
        format!("cond = none {abl}:13:24")
    );
    // `let sigma_max = 0.0` is line 11, the value at column 17.
    assert_eq!(
        row(&out, "let", "sigma_max"),
        format!("sigma_max = 0.0 {abl}:11:17")
    );
    // The graph node still written in the base takes the ablation's variable.
    let n1 = row(&out, "graph", "n1");
    assert!(
        n1.contains("uniform(0.0, 0.0)")
            && n1.contains("specs/can.canspec:57:8")
            && n1.ends_with("(via let sigma_max)"),
        "{n1}"
    );
    // `y1` is redefined on line 16 of the ablation.
    assert!(
        row(&out, "graph", "y1").ends_with(&format!("{abl}:16:8")),
        "{out}"
    );
    // Removed nodes and terms are listed where they were removed (lines 18 and 22).
    assert!(
        row(&out, "graph", "denoise").ends_with(&format!("removed at {abl}:18:13")),
        "{out}"
    );
    assert!(
        row(&out, "objective", "denoise").ends_with(&format!("removed at {abl}:22:13")),
        "{out}"
    );
    // Values the ablation does not touch stay with the base.
    assert_eq!(
        row(&out, "network encoder", "dim"),
        "dim = 192 specs/can.canspec:31:9"
    );
    // The remaining weights: 0.03 + 0.67 = 0.7.
    assert_eq!(
        row(&out, "derived", "objective weight sum"),
        "objective weight sum = 0.7 0.03 + 0.67 (0.03 · nce + 0.67 · mae)"
    );
}

#[test]
fn defaults_and_derived_values_say_so() {
    let out = explained("specs/can.canspec", &[]);
    assert_eq!(
        row(&out, "network encoder", "mlp_ratio"),
        "mlp_ratio = 4.0 default"
    );
    assert_eq!(row(&out, "train", "accum"), "accum = 1 default");
    assert_eq!(
        row(&out, "network encoder", "image"),
        "image = 28 derived: data.image_size of fashion_mnist"
    );
    assert_eq!(
        row(&out, "network encoder", "patch"),
        "patch = 4 specs/can.canspec:30:11 (via let patch)"
    );
    assert_eq!(
        row(&out, "schedule", "warmup"),
        "warmup = 5 epochs specs/can.canspec:97:12"
    );
    // Augmentations are sub-sections of their view.
    assert_eq!(
        row(&out, "view simclr", "scale"),
        "scale = 0.35..1.0 specs/can.canspec:22:33"
    );
}

#[test]
fn derived_numbers_of_the_base_spec() {
    let out = explained("specs/can.canspec", &[]);
    assert!(row(&out, "derived", "images per epoch").contains("= 60000 "));
    // 60000 / 256 = 234.375 → 234 steps; 50 epochs × 234 = 11700; 5 epochs × 234 = 1170.
    assert!(
        row(&out, "derived", "steps per epoch")
            .starts_with("steps per epoch = 234 floor(60000 / 256)")
    );
    assert!(row(&out, "derived", "total steps").starts_with("total steps = 11700 50 epochs × 234"));
    assert!(row(&out, "derived", "warm-up steps").starts_with("warm-up steps = 1170"));
    // 2.5e-4 · 256 / 256 = 2.5e-4.
    assert!(row(&out, "derived", "effective lr").starts_with("effective lr = 2.5e-4 "));
    // 28 / 4 = 7, a 7 × 7 = 49 grid; floor(49 · 0.5) = floor(24.5) = 24 visible, 25 masked.
    let m1 = row(&out, "derived", "mask m1");
    assert!(
        m1.starts_with("mask m1 = 24 visible of 49")
            && m1.contains("25 masked")
            && m1.contains("(28 / 4)² = 49"),
        "{m1}"
    );
    // 0.03 + 0.67 + 0.3 = 1.0.
    assert!(
        row(&out, "derived", "objective weight sum")
            .starts_with("objective weight sum = 1.0 0.03 + 0.67 + 0.3 ")
    );
    // ViT, dim 192, depth 6, patch 4, 1 channel, mlp_ratio 4:
    //   per block, decayed: qkv 192·576 + proj 192·192 + mlp 192·768 + 768·192 = 442368;
    //   × 6 = 2654208, + patch embedding 4·4·1·192 = 3072 → 2657280.
    //   per block, not decayed: 2 norms 4·192 + biases 576 + 192 + 768 + 192 = 2496;
    //   × 6 = 14976, + patch bias 192 + CLS 192 + final norm 384 → 15744.
    //   total 2657280 + 15744 = 2673024.
    assert_eq!(
        row(&out, "derived", "params encoder"),
        "params encoder = 2,673,024 trained: 2,657,280 with weight decay + 15,744 without"
    );
}

#[test]
fn a_set_override_shows_set_and_changes_the_derived_numbers() {
    let out = explained("specs/can.canspec", &["train.batch=128".into()]);
    assert_eq!(row(&out, "train", "batch"), "batch = 128 --set #1");
    // 60000 / 128 = 468.75 → 468 steps per epoch; 50 × 468 = 23400; 5 × 468 = 2340.
    assert!(
        row(&out, "derived", "steps per epoch")
            .starts_with("steps per epoch = 468 floor(60000 / 128)")
    );
    assert!(row(&out, "derived", "total steps").starts_with("total steps = 23400 "));
    assert!(row(&out, "derived", "warm-up steps").starts_with("warm-up steps = 2340 "));
    // 2.5e-4 · 128 / 256 = 1.25e-4.
    let lr = row(&out, "derived", "effective lr");
    assert!(
        lr.starts_with("effective lr = 1.25e-4 ") && lr.contains("2.5e-4 · 128 / 256"),
        "{lr}"
    );
}

#[test]
fn a_limit_caps_the_images_per_epoch() {
    let out = explained("specs/can.canspec", &["data.limit=1000".into()]);
    // min(60000, 1000) = 1000 images; floor(1000 / 256) = 3 steps per epoch.
    assert_eq!(
        row(&out, "derived", "images per epoch"),
        "images per epoch = 1000 min(60000 of the fashion_mnist train split, limit 1000)"
    );
    assert!(
        row(&out, "derived", "steps per epoch")
            .starts_with("steps per epoch = 3 floor(1000 / 256)")
    );
}

#[test]
fn a_set_variable_says_set() {
    let out = explained("specs/can.canspec", &["sigma_max=0.1".into()]);
    assert_eq!(
        row(&out, "let", "sigma_max"),
        "sigma_max = 0.1 --set (overrides specs/can.canspec:14:17)"
    );
    assert!(row(&out, "graph", "n2").contains("uniform(0.0, 0.1)"));
}

#[test]
fn ema_networks_show_their_momentum_and_role() {
    let out = explained("specs/mocov3.canspec", &[]);
    // mocov3: `momentum = 0.99`, `schedule = cosine`, momentum_end defaults to 1.0.
    let m = row(&out, "derived", "momentum teacher");
    assert!(
        m.starts_with("momentum teacher = 0.99 → 1.0 EMA of encoder: cosine"),
        "{m}"
    );
    assert!(
        row(&out, "derived", "params teacher").contains("EMA of encoder, no gradient"),
        "{out}"
    );
}

#[test]
fn sweep_values_say_which_sweep() {
    let res =
        canc_compiler::resolve_path(Path::new("specs/ablations/can_weight_sweep.canspec"), &[]);
    assert!(!res.has_errors());
    // `objective.nce = sweep [0.01, 0.03, 0.1, 0.3, 1.0]` on line 11; 0.1 starts at column 36.
    let third = explain(&res.variants[2], &res.plans[2]);
    assert_eq!(
        row(&third, "objective", "nce"),
        "nce = 0.1 specs/ablations/can_weight_sweep.canspec:11:36 (one value of the sweep)"
    );
}

fn canc() -> Command {
    let mut c = Command::cargo_bin("canc").expect("binary built");
    c.env("NO_COLOR", "1");
    c
}

#[test]
fn cli_explains_specs_and_still_explains_codes() {
    let out = canc()
        .args(["explain", "specs/can.canspec", "--set", "train.batch=128"])
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(stdout.contains("--set #1"), "{stdout}");
    assert!(row(&stdout, "derived", "steps per epoch").contains("= 468 "));

    let out = canc().args(["explain", "E0055"]).assert().success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(stdout.starts_with("E0055: shape mismatch"), "{stdout}");
}

#[test]
fn a_set_override_of_a_graph_argument_says_set() {
    let out = explained(
        "specs/can.canspec",
        &["graph.n1.sigma=0.2".into(), "train.batch=128".into()],
    );
    assert_eq!(
        row(&out, "graph", "n1"),
        "n1 = add_noise(x1, sigma = 0.2) --set #1"
    );
    assert!(row(&out, "train", "batch").ends_with("--set #2"));
}
