//! Every spec of the library resolves without errors; its canonical resolved form (RON, every
//! sweep variant) is snapshotted, so any change of meaning shows up as a snapshot diff.

use std::path::{Path, PathBuf};

pub(crate) fn spec_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["specs", "specs/ablations"] {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "canspec") {
                    out.push(p);
                }
            }
        }
    }
    out.sort();
    out
}

pub(crate) fn snapshot_name(p: &Path) -> String {
    p.to_string_lossy()
        .replace(['/', '\\'], "__")
        .trim_end_matches(".canspec")
        .to_string()
}

#[test]
fn library_has_every_method() {
    let names: Vec<String> = spec_files()
        .iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    for m in ["can", "cmae", "macrl", "mae", "simclr", "mocov3", "supcon"] {
        assert!(
            names.iter().any(|n| n == m),
            "specs/{m}.canspec missing; have {names:?}"
        );
    }
}

#[test]
fn every_spec_resolves_and_matches_snapshot() {
    let files = spec_files();
    assert!(
        files.len() >= 12,
        "expected the 7 method specs and at least 5 ablations, found {}",
        files.len()
    );
    for path in files {
        let res = canc_compiler::resolve_path(&path, &[]);
        let rendered = canc_compiler::diagnostic::render(
            &res.diagnostics,
            &res.sources,
            canc_compiler::diagnostic::Style::Human,
        );
        assert!(
            res.diagnostics.is_empty(),
            "{} has diagnostics:\n{rendered}",
            path.display()
        );
        assert!(
            !res.variants.is_empty(),
            "{} resolved to no variant",
            path.display()
        );
        let ron: Vec<String> = res.variants.iter().map(|v| v.to_ron()).collect();
        insta::with_settings!({ snapshot_path => "snapshots/specs", prepend_module_to_snapshot => false, description => path.display().to_string() }, {
            insta::assert_snapshot!(snapshot_name(&path), ron.join("\n"));
        });
    }
}

#[test]
fn every_spec_is_canonically_formatted() {
    for path in spec_files() {
        let text = std::fs::read_to_string(&path).expect("readable spec");
        let ast = canc_grammar::parse_file(&text, 0).expect("spec parses");
        assert_eq!(
            canc_grammar::print_file(&ast),
            text,
            "{} is not canonically formatted: run `canc fmt {}`",
            path.display(),
            path.display()
        );
    }
}

#[test]
fn ablations_are_short_and_extend_a_method() {
    for path in spec_files()
        .iter()
        .filter(|p| p.starts_with("specs/ablations"))
    {
        let text = std::fs::read_to_string(path).expect("readable");
        let code_lines = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .count();
        assert!(
            text.contains("extends \"../"),
            "{} should extend a method spec",
            path.display()
        );
        assert!(
            code_lines <= 25,
            "{} has {code_lines} non-comment lines; an ablation should be short",
            path.display()
        );
        assert!(
            text.starts_with('#'),
            "{} needs a header comment naming the paper and the change",
            path.display()
        );
    }
}

#[test]
fn sweeps_expand_to_named_variants() {
    let res = canc_compiler::resolve_path(
        Path::new("specs/ablations/can_mask_ratio_sweep.canspec"),
        &[],
    );
    assert!(!res.has_errors());
    let names = res.variant_names();
    assert!(
        names.len() >= 3,
        "a mask-ratio sweep has several variants: {names:?}"
    );
    assert!(
        names.iter().all(|n| n.starts_with("mask_ratio=")),
        "{names:?}"
    );
    // Each variant carries its own ratio into both masks.
    for v in &res.variants {
        let graph = v.block("graph").expect("graph");
        let ratio = |node: &str| match graph.get(node) {
            Some(canc_compiler::RValue::Call(_, args)) => args
                .iter()
                .find(|(k, _)| k.as_deref() == Some("ratio"))
                .and_then(|(_, v)| v.as_f64()),
            _ => None,
        };
        let expected: f64 = v
            .variant
            .as_deref()
            .and_then(|n| n.strip_prefix("mask_ratio="))
            .and_then(|x| x.parse().ok())
            .expect("numeric variant");
        assert_eq!(ratio("m1"), Some(expected));
        assert_eq!(ratio("m2"), Some(expected));
    }
}
