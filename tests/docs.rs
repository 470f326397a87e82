//! docs/reference.md and docs/errors.md are generated from the schema and code tables; they must
//! be regenerated when the tables change (`canc schema > docs/reference.md`,
//! `canc explain --markdown > docs/errors.md`).

#[test]
fn reference_is_up_to_date() {
    let committed = std::fs::read_to_string("docs/reference.md").expect("docs/reference.md");
    assert!(
        committed == canc_compiler::docs::reference(),
        "docs/reference.md is stale: run `cargo run -- schema > docs/reference.md`"
    );
}

#[test]
fn error_list_is_up_to_date() {
    let committed = std::fs::read_to_string("docs/errors.md").expect("docs/errors.md");
    assert!(
        committed == canc_compiler::docs::errors(),
        "docs/errors.md is stale: run `cargo run -- explain --markdown > docs/errors.md`"
    );
}
