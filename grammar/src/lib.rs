//! The `.canspec` language: grammar, syntax tree and canonical printer.
//!
//! ```text
//! source text ──parse──▶ pest pairs ──build──▶ ast::SpecFile (spans, comments) ──print──▶ text
//! ```
//!
//! This crate knows only syntax. Which blocks, keys and ops exist is the compiler's schema.

pub mod ast;
mod parse;
mod print;
pub mod span;

pub use parse::{SyntaxError, parse_file, parse_override, strip_spans};
pub use print::{print_file, value as print_value};
pub use span::{FileId, Span};

/// The pest parser generated from `canspec.pest`.
#[derive(pest_derive::Parser)]
#[grammar = "canspec.pest"]
pub struct CanspecParser;
