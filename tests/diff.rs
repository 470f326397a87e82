//! `canc diff`: a semantic diff of two specs (values, wiring, losses, parameters, FLOPs) on the
//! library's real specs and ablations, plus the command end to end.
//!
//! Parameter counts below are worked out by hand from the architectures (weights + biases).

use crate::specs::spec_files;
use assert_cmd::Command;
use canc_compiler::{Resolution, diff::diff, resolve_path, resolve_source};
use std::path::Path;

fn resolve(path: &str, sets: &[&str]) -> Resolution {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let r = resolve_path(Path::new(path), &sets);
    assert!(!r.has_errors(), "{path} {sets:?} has errors");
    r
}

fn diff_of(a: &Resolution, b: &Resolution) -> String {
    diff((&a.variants[0], &a.plans[0]), (&b.variants[0], &b.plans[0]))
}

/// The lines of section `title`, with runs of spaces (the alignment padding) collapsed.
fn section(text: &str, title: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| *l != title)
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// The section titles, in order.
fn titles(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with(' '))
        .collect()
}

fn has(lines: &[String], line: &str) -> bool {
    lines.iter().any(|l| l == line)
}

/// The relative FLOPs change printed on the cost line, as its sign.
fn flops_sign(text: &str) -> char {
    let cost = section(text, "cost");
    let line = cost
        .iter()
        .find(|l| l.starts_with("train FLOPs/image"))
        .unwrap_or_else(|| panic!("no FLOPs line in\n{text}"));
    let open = line
        .rfind('(')
        .unwrap_or_else(|| panic!("no change in {line}"));
    line[open + 1..].chars().next().unwrap_or(' ')
}

#[test]
fn no_noise_ablation_drops_the_noise_term_and_the_decoder_conditioning() {
    let text = diff_of(
        &resolve("specs/can.canspec", &[]),
        &resolve("specs/ablations/can_no_noise.canspec", &[]),
    );
    assert_eq!(
        titles(&text),
        ["lets", "objective", "graph", "networks", "cost"],
        "{text}"
    );
    assert_eq!(section(&text, "lets"), ["let sigma_max 0.05 → 0.0"]);
    // 0.03 + 0.67 + 0.3 = 1.0 → 0.03 + 0.67 = 0.7.
    assert_eq!(
        section(&text, "objective"),
        [
            "- loss term denoise (weight 0.3) removed",
            "weight sum 1.0 → 0.7"
        ]
    );
    let graph = section(&text, "graph");
    for line in [
        "graph.n1 add_noise sigma uniform(0.0, 0.05) → uniform(0.0, 0.0)",
        "graph.y1 decoder cond = n1.sigma removed",
        "graph.n2 add_noise sigma uniform(0.0, 0.05) → uniform(0.0, 0.0)",
        "graph.y2 decoder cond = n2.sigma removed",
    ] {
        assert!(has(&graph, line), "missing `{line}` in\n{text}");
    }
    // The removed node is reported once, not its nested steps one by one.
    let denoise: Vec<&String> = graph.iter().filter(|l| l.contains("denoise")).collect();
    assert_eq!(denoise.len(), 1, "{text}");
    assert!(
        denoise[0].starts_with("- node denoise = mean(mse(y1, "),
        "{text}"
    );
    assert_eq!(graph.len(), 5, "{text}");
    assert_eq!(
        section(&text, "networks"),
        ["network.decoder.cond sigma → none"]
    );
    // Decoder (dim D = 128, depth 2, MLP 512, tokens of width 192, 4×4×1 pixels out):
    //   input 192·128 + 128 = 24,704; mask token 128;
    //   σ-conditioning 128 → 128 → 128: 2 · (128·128 + 128) = 33,024;
    //   per block 2·128 + (128·384 + 384) + (128·128 + 128) + 2·128 + (128·512 + 512)
    //     + (512·128 + 128) = 198,272, two blocks 396,544; final norm 256; head 128·16 + 16 = 2,064
    //   total 24,704 + 128 + 33,024 + 396,544 + 256 + 2,064 = 456,720 (457 K);
    //   without σ-conditioning 456,720 − 33,024 = 423,696 (424 K).
    // Whole model: encoder 2,673,024 + decoder 456,720 + projector 61,760 = 3,191,504 (3.19 M);
    //   3,191,504 − 33,024 = 3,158,480 (3.16 M).
    let cost = section(&text, "cost");
    assert!(
        has(&cost, "params decoder 457 K → 424 K (−33,024)"),
        "{text}"
    );
    assert!(
        has(&cost, "params total 3.19 M → 3.16 M (−33,024)"),
        "{text}"
    );
    // The σ-conditioning MLP no longer runs.
    assert_eq!(flops_sign(&text), '−', "{text}");
}

#[test]
fn no_contrastive_ablation_drops_the_projector_and_its_parameters() {
    let text = diff_of(
        &resolve("specs/can.canspec", &[]),
        &resolve("specs/ablations/can_no_contrastive.canspec", &[]),
    );
    assert_eq!(
        titles(&text),
        ["objective", "graph", "networks", "cost"],
        "{text}"
    );
    // 0.03 + 0.67 + 0.3 = 1.0 → 0.67 + 0.3 = 0.97.
    assert_eq!(
        section(&text, "objective"),
        [
            "- loss term nce (weight 0.03) removed",
            "weight sum 1.0 → 0.97"
        ]
    );
    assert_eq!(
        section(&text, "graph"),
        [
            "- node z1 = projector(pool(h1, mode = mean_all))",
            "- node z2 = projector(pool(h2, mode = mean_all))",
            "- node nce = infonce(z1, z2, temperature = 0.1, reduction = mean)",
        ]
    );
    assert_eq!(
        section(&text, "networks"),
        ["- network projector: mlp removed"]
    );
    // Projector: mlp 192 → 192 → 128 with biases: (192·192 + 192) + (192·128 + 128)
    //   = 37,056 + 24,704 = 61,760 (61.8 K); 3,191,504 − 61,760 = 3,129,744 (3.13 M).
    let cost = section(&text, "cost");
    assert!(
        has(&cost, "params projector 61.8 K → 0 (−61,760)"),
        "{text}"
    );
    assert!(
        has(&cost, "params total 3.19 M → 3.13 M (−61,760)"),
        "{text}"
    );
    assert_eq!(flops_sign(&text), '−', "{text}");
}

#[test]
fn a_spec_diffed_with_itself_is_empty() {
    for path in spec_files() {
        let p = path.to_string_lossy();
        let text = diff_of(&resolve(&p, &[]), &resolve(&p, &[]));
        assert_eq!(text, "", "{p}");
    }
}

#[test]
fn an_objective_weight_override_is_one_change() {
    let text = diff_of(
        &resolve("specs/can.canspec", &[]),
        &resolve("specs/can.canspec", &["objective.nce=0.1"]),
    );
    assert_eq!(titles(&text), ["objective", "cost"], "{text}");
    // 0.03 + 0.67 + 0.3 = 1.0 → 0.1 + 0.67 + 0.3 = 1.07.
    assert_eq!(
        section(&text, "objective"),
        ["objective.nce 0.03 → 0.1", "weight sum 1.0 → 1.07"]
    );
    assert!(has(
        &section(&text, "cost"),
        "params total 3.19 M → 3.19 M (+0)"
    ));
    assert!(text.contains("0.03 → 0.1\n"), "{text}");
}

#[test]
fn masking_more_of_one_view_costs_fewer_flops() {
    let base = resolve("specs/can.canspec", &[]);
    let more = resolve("specs/can.canspec", &["graph.m2.ratio=0.75"]);
    let text = diff_of(&base, &more);
    assert_eq!(titles(&text), ["graph", "cost"], "{text}");
    // 49 patches: floor(49 · 0.5) = 24 visible at 0.5, floor(49 · 0.25) = 12 at 0.75.
    assert_eq!(
        section(&text, "graph"),
        [
            "graph.m2 mask ratio 0.5 → 0.75",
            "graph.h2 type [B, 1+24, 192] (24 of 49 patches visible) → [B, 1+12, 192] (12 of 49 \
             patches visible)",
            // Unequal token counts: the encoder and decoder can no longer run both views at once.
            "graph calls h1 + h2: one batched call → one call each",
            "graph calls y1 + y2: one batched call → one call each",
        ]
    );
    assert!(has(
        &section(&text, "cost"),
        "params total 3.19 M → 3.19 M (+0)"
    ));
    assert_eq!(flops_sign(&text), '−', "{text}");
    // The other way round: less masking, more encoder work.
    let less = resolve("specs/can.canspec", &["graph.m2.ratio=0.25"]);
    assert_eq!(flops_sign(&diff_of(&base, &less)), '+');
}

#[test]
fn view_and_batch_overrides_show_values_and_derived_numbers() {
    let text = diff_of(
        &resolve("specs/can.canspec", &[]),
        &resolve(
            "specs/can.canspec",
            &[
                "view.simclr.random_resized_crop.scale=0.2..1.0",
                "train.batch=128",
            ],
        ),
    );
    assert_eq!(
        section(&text, "data & views"),
        ["view.simclr.random_resized_crop.scale 0.35..1.0 → 0.2..1.0"]
    );
    // lr 2.5e-4 scaled linearly: 2.5e-4 · 256/256 = 0.00025 → 2.5e-4 · 128/256 = 0.000125.
    // 60,000 images: floor(60,000/256) = 234 → floor(60,000/128) = 468 steps per epoch;
    // 50 epochs: 11,700 → 23,400 steps; 5 warm-up epochs: 1,170 → 2,340 steps.
    assert_eq!(
        section(&text, "optimisation"),
        [
            "train.batch 256 → 128",
            "effective lr 0.00025 → 0.000125",
            "steps/epoch 234 → 468",
            "total steps 11,700 → 23,400",
            "warm-up steps 1,170 → 2,340",
        ]
    );
}

#[test]
fn a_teacher_that_stops_being_an_ema_changes_role_and_wiring() {
    let moco = resolve("specs/mocov3.canspec", &[]);
    let plain = resolve_source(
        "plain_teacher.canspec",
        "extends \"specs/mocov3.canspec\"\n\
         network teacher: vit { patch = 4, dim = 192, depth = 6, heads = 3 }\n",
        &[],
    );
    assert!(!plain.has_errors());
    let text = diff_of(&moco, &plain);
    assert_eq!(
        section(&text, "networks"),
        [
            "network.teacher type ema → vit",
            "network.teacher role EMA of encoder → untrained (no loss reaches it)",
        ]
    );
    let graph = section(&text, "graph");
    assert!(
        has(
            &graph,
            "graph.k1/teacher op teacher (EMA of encoder) → teacher"
        ),
        "{text}"
    );
    assert!(has(&graph, "graph.k1 now tracks gradient"), "{text}");
}

#[test]
fn cli_diff_prints_sections_and_exits_0() {
    let out = Command::cargo_bin("canc")
        .expect("binary built")
        .env("NO_COLOR", "1")
        .args([
            "diff",
            "specs/can.canspec",
            "specs/ablations/can_no_noise.canspec",
        ])
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(
        has(
            &section(&stdout, "objective"),
            "- loss term denoise (weight 0.3) removed"
        ),
        "{stdout}"
    );
    assert!(
        has(
            &section(&stdout, "networks"),
            "network.decoder.cond sigma → none"
        ),
        "{stdout}"
    );
    assert!(
        has(
            &section(&stdout, "cost"),
            "params total 3.19 M → 3.16 M (−33,024)"
        ),
        "{stdout}"
    );

    let same = Command::cargo_bin("canc")
        .expect("binary built")
        .args(["diff", "specs/can.canspec", "specs/can.canspec"])
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&same.get_output().stdout).into_owned();
    assert_eq!(
        stdout,
        "no semantic difference: both compile to the same plan\n"
    );
}

#[test]
fn ablation_diffs_match_snapshots() {
    let can = resolve("specs/can.canspec", &[]);
    for name in ["can_no_noise", "can_no_contrastive"] {
        let other = resolve(&format!("specs/ablations/{name}.canspec"), &[]);
        insta::with_settings!({ snapshot_path => "snapshots/diff", prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!(format!("can__{name}"), diff_of(&can, &other));
        });
    }
}
