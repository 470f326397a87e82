//! The corpus of wrong specs in tests/bad/: each must fail with the code its first line
//! announces (`# expect: E0011 ...`), and its rendered diagnostics are snapshotted.

use canc_compiler::diagnostic::{Style, render};
use canc_compiler::{codes, resolve_path};
use std::collections::BTreeSet;
use std::path::PathBuf;

fn bad_files() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir("tests/bad")
        .expect("tests/bad exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "canspec"))
        .collect();
    out.sort();
    out
}

fn expected_code(path: &PathBuf) -> String {
    let text = std::fs::read_to_string(path).expect("readable");
    let first = text.lines().next().unwrap_or_default();
    first
        .strip_prefix("# expect:")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{} must start with `# expect: CODE ...`", path.display()))
        .trim_end_matches([',', ';'])
        .to_string()
}

#[test]
fn corpus_is_large_enough() {
    assert!(
        bad_files().len() >= 40,
        "tests/bad needs at least 40 wrong specs"
    );
}

#[test]
fn each_bad_spec_reports_its_code_and_matches_snapshot() {
    let mut seen: BTreeSet<&'static str> = BTreeSet::new();
    for path in bad_files() {
        let res = resolve_path(&path, &[]);
        let want = expected_code(&path);
        let got: Vec<&str> = res.diagnostics.iter().map(|d| d.code.id).collect();
        assert!(
            got.contains(&want.as_str()),
            "{}: expected {want}, got {got:?}",
            path.display()
        );
        if want.starts_with('E') {
            assert!(res.has_errors(), "{} must fail", path.display());
        }
        seen.extend(got.iter().filter_map(|c| codes::lookup(c).map(|c| c.id)));
        let rendered = render(&res.diagnostics, &res.sources, Style::Human);
        let name = path
            .file_stem()
            .expect("stem")
            .to_string_lossy()
            .into_owned();
        insta::with_settings!({ snapshot_path => "snapshots/bad", prepend_module_to_snapshot => false, description => path.display().to_string() }, {
            insta::assert_snapshot!(name, rendered);
        });
    }
    let missing: Vec<&str> = codes::ALL
        .iter()
        .map(|c| c.id)
        .filter(|c| !seen.contains(c))
        .collect();
    assert!(
        missing.is_empty(),
        "codes without a failing example in tests/bad: {missing:?}"
    );
}
