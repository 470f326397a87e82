//! canc runtime: executes a compiled, validated plan with Burn.
//!
//! This crate is the only one in the workspace that will depend on Burn. It is an empty shell
//! until the runtime issue lands; the grammar and compiler crates never depend on it.
