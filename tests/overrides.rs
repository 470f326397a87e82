//! Resolution semantics: inheritance, overrides, removal, lets, sweeps and provenance.

use canc_compiler::resolved::Provenance;
use canc_compiler::{RValue, ResolvedSpec, resolve_source};

fn one(text: &str, sets: &[&str]) -> ResolvedSpec {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let res = resolve_source("child.canspec", text, &sets);
    let rendered = canc_compiler::diagnostic::render(
        &res.diagnostics,
        &res.sources,
        canc_compiler::diagnostic::Style::Short,
    );
    assert!(!res.has_errors(), "unexpected errors:\n{rendered}");
    assert_eq!(res.variants.len(), 1);
    res.variants.into_iter().next().expect("one variant")
}

fn codes(text: &str, sets: &[&str]) -> Vec<&'static str> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    resolve_source("child.canspec", text, &sets)
        .diagnostics
        .iter()
        .map(|d| d.code.id)
        .collect()
}

fn mask_ratio(spec: &ResolvedSpec, node: &str) -> Option<f64> {
    match spec.block("graph")?.get(node)? {
        RValue::Call(_, args) => args
            .iter()
            .find(|(k, _)| k.as_deref() == Some("ratio"))?
            .1
            .as_f64(),
        _ => None,
    }
}

#[test]
fn child_block_overrides_key_by_key() {
    let s = one(
        "extends \"specs/can.canspec\"\nnetwork encoder { depth = 2 }\n",
        &[],
    );
    let enc = s.named("network", "encoder").expect("encoder");
    assert_eq!(enc.get("depth"), Some(&RValue::Int(2)));
    assert_eq!(
        enc.get("dim"),
        Some(&RValue::Int(192)),
        "untouched keys are inherited"
    );
    assert_eq!(
        s.sources,
        vec!["specs/can.canspec".to_string(), "child.canspec".to_string()]
    );
}

#[test]
fn a_new_type_replaces_the_block() {
    let s = one(
        "extends \"specs/can.canspec\"\noptimizer: sgd { lr = 0.1 }\n",
        &[],
    );
    let opt = s.block("optimizer").expect("optimizer");
    assert_eq!(opt.ty.as_deref(), Some("sgd"));
    assert_eq!(opt.get("momentum"), Some(&RValue::Float(0.9)));
    assert!(
        opt.get("betas").is_none(),
        "adamw keys do not leak into sgd"
    );
}

#[test]
fn none_removes_inherited_terms_and_augmentations_keeping_order() {
    let s = one(
        "extends \"specs/can.canspec\"\nview simclr { gaussian_blur = none }\nobjective { denoise = none }\ngraph { denoise = none }\n",
        &[],
    );
    let kinds: Vec<&str> = s
        .named("view", "simclr")
        .expect("view")
        .children
        .iter()
        .map(|c| c.kind.as_str())
        .collect();
    assert_eq!(
        kinds,
        ["random_resized_crop", "hflip", "color_jitter", "normalize"]
    );
    let obj = s.block("objective").expect("objective");
    assert_eq!(obj.fields.keys().collect::<Vec<_>>(), ["nce", "mae"]);
    assert!(s.block("graph").expect("graph").get("denoise").is_none());
}

#[test]
fn removing_what_does_not_exist_is_an_error() {
    assert_eq!(
        codes(
            "extends \"specs/can.canspec\"\nobjective { denoize = none }\n",
            &[]
        ),
        ["E0042"]
    );
}

#[test]
fn lets_are_late_bound_so_overrides_propagate_to_every_use() {
    let s = one(
        "extends \"specs/can.canspec\"\nlet mask_ratio = 0.75\n",
        &[],
    );
    assert_eq!(mask_ratio(&s, "m1"), Some(0.75));
    assert_eq!(mask_ratio(&s, "m2"), Some(0.75));
    let s = one(
        "extends \"specs/can.canspec\"\n",
        &["mask_ratio=0.6", "graph.m2.ratio=0.9"],
    );
    assert_eq!(mask_ratio(&s, "m1"), Some(0.6));
    assert_eq!(
        mask_ratio(&s, "m2"),
        Some(0.9),
        "a --set on one node wins over the let"
    );
}

#[test]
fn dotted_overrides_in_files_and_on_the_command_line() {
    let s = one(
        "extends \"specs/can.canspec\"\nview.simclr.hflip.p = 0.0\ntrain.batch = 64\n",
        &["train.batch=32"],
    );
    let flip = s
        .named("view", "simclr")
        .expect("view")
        .children
        .iter()
        .find(|c| c.kind == "hflip")
        .expect("hflip");
    assert_eq!(flip.get("p"), Some(&RValue::Float(0.0)));
    assert_eq!(
        s.block("train").expect("train").get("batch"),
        Some(&RValue::Int(32)),
        "--set comes last"
    );
    assert!(matches!(
        s.provenance.get("train.batch"),
        Some(Provenance::Cli(_))
    ));
}

#[test]
fn provenance_tells_spec_default_and_derived_apart() {
    let s = one("extends \"specs/can.canspec\"\n", &[]);
    assert!(
        matches!(s.provenance.get("network.encoder.depth"), Some(Provenance::Spec(loc)) if loc.starts_with("specs/can.canspec:"))
    );
    assert_eq!(
        s.provenance.get("network.encoder.mlp_ratio"),
        Some(&Provenance::Default)
    );
    assert_eq!(
        s.provenance.get("network.encoder.image"),
        Some(&Provenance::Derived("data.image_size".into()))
    );
    assert_eq!(
        s.named("network", "encoder").expect("enc").get("image"),
        Some(&RValue::Int(28))
    );
}

#[test]
fn sweeps_multiply_and_name_their_variants() {
    let text = "extends \"specs/can.canspec\"\nlet mask_ratio = sweep [0.25, 0.5]\nobjective.nce = sweep [0.01, 0.03, 0.1]\n";
    let res = resolve_source("child.canspec", text, &[]);
    assert!(!res.has_errors());
    let names = res.variant_names();
    assert_eq!(names.len(), 6);
    assert_eq!(names[0], "mask_ratio=0.25,objective.nce=0.01");
    assert_eq!(names[5], "mask_ratio=0.5,objective.nce=0.1");
}

#[test]
fn duplicates_in_one_file_are_errors_but_overriding_a_base_is_not() {
    assert!(codes("extends \"specs/can.canspec\"\nlet a = 1\nlet a = 2\n", &[]).contains(&"E0015"));
    assert!(
        codes(
            "extends \"specs/can.canspec\"\nlet patch = 7\nlet patch = 2\n",
            &[]
        )
        .contains(&"E0015")
    );
    assert!(codes("extends \"specs/can.canspec\"\nlet patch = 2\n", &[]).is_empty());
}

#[test]
fn all_errors_are_reported_in_one_pass() {
    let text = "extends \"specs/can.canspec\"\ntrain { epochz = 3 }\nnetwork encoder { heads = 5 }\nobjective { nce = -1 }\n";
    let got = codes(text, &["optimizer.lr=0"]);
    for c in ["E0011", "E0051", "E0021"] {
        assert!(got.contains(&c), "missing {c} in {got:?}");
    }
    assert!(got.len() >= 4, "{got:?}");
}

#[test]
fn bad_override_paths_get_suggestions() {
    let res = resolve_source(
        "child.canspec",
        "extends \"specs/can.canspec\"\n",
        &[
            "netwrok.encoder.depth=3".into(),
            "network.encodr.depth=3".into(),
        ],
    );
    let helps: Vec<Option<&str>> = res.diagnostics.iter().map(|d| d.help.as_deref()).collect();
    assert_eq!(
        helps,
        [
            Some("did you mean `network`?"),
            Some("did you mean `encoder`?")
        ]
    );
    assert!(res.diagnostics.iter().all(|d| d.code.id == "E0041"));
}

#[test]
fn unquoted_override_values_are_strings() {
    let s = one(
        "extends \"specs/can.canspec\"\n",
        &["data.path=/tmp/fmnist"],
    );
    assert_eq!(
        s.block("data").expect("data").get("path"),
        Some(&RValue::Str("/tmp/fmnist".into()))
    );
}

#[test]
fn syntax_errors_after_the_first_are_reported_too() {
    let text = "train {\n  epochs = 3\n  batch = \n}\n\nnetwork enc: vit { patch = 4 dim = }\n\nview v { hflip { p = 0.5 }\nlet x = 3\n";
    let res = resolve_source("syntax.canspec", text, &[]);
    let lines: Vec<usize> = res
        .diagnostics
        .iter()
        .map(|d| res.sources.line_col(d.span.file, d.span.start as usize).0)
        .collect();
    assert!(res.diagnostics.iter().all(|d| d.code.id == "E0001"));
    assert_eq!(lines, [4, 6, 9]);
    assert_eq!(
        res.diagnostics[2].help.as_deref(),
        Some("a `{` above is not closed")
    );
}
