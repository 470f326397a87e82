//! The merged document: what a spec says after its `extends` chain and overrides are applied,
//! before schema checking. Values keep the spans of whichever file (or `--set`) wrote them.

use canc_grammar::Span;
use canc_grammar::ast::{Ident, Value};
use indexmap::IndexMap;

/// Who set a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A spec file (the span says which and where).
    Spec,
    /// A `--set` override (its pseudo-file, which names it `--set #N`).
    Cli(canc_grammar::FileId),
}

/// A key and its value.
#[derive(Debug, Clone)]
pub struct Setting {
    /// The key as written (its span points at the writer).
    pub key: Ident,
    /// The value.
    pub value: Value,
    /// Spec file or command line.
    pub origin: Origin,
}

/// An entry of a block.
#[derive(Debug, Clone)]
pub enum DocEntry {
    /// `key = value`.
    Field(Setting),
    /// A nested block (augmentation, protocol).
    Block(DocBlock),
}

/// A block after merging.
#[derive(Debug, Clone)]
pub struct DocBlock {
    /// The block keyword.
    pub kind: Ident,
    /// Its name, for named blocks.
    pub name: Option<Ident>,
    /// Its type, for typed blocks.
    pub ty: Option<Ident>,
    /// Entries in first-declaration order.
    pub entries: IndexMap<String, DocEntry>,
    /// Where it was (last) declared.
    pub span: Span,
}

impl DocBlock {
    /// An empty block of `kind` created by an override such as `train.epochs = 5`.
    pub fn empty(kind: Ident) -> Self {
        let span = kind.span;
        Self {
            kind,
            name: None,
            ty: None,
            entries: IndexMap::new(),
            span,
        }
    }

    /// The span of the header (`kind name: type`).
    pub fn header_span(&self) -> Span {
        let mut s = self.kind.span;
        if let Some(n) = &self.name {
            s = s.to(n.span);
        }
        if let Some(t) = &self.ty {
            s = s.to(t.span);
        }
        s
    }
}

/// Key of a top-level block: `kind` or `kind name`.
pub fn block_key(kind: &str, name: Option<&str>) -> String {
    match name {
        Some(n) => format!("{kind} {n}"),
        None => kind.to_string(),
    }
}

/// The whole merged spec.
#[derive(Debug, Clone, Default)]
pub struct Doc {
    /// `let` variables.
    pub lets: IndexMap<String, Setting>,
    /// Top-level blocks by [`block_key`].
    pub blocks: IndexMap<String, DocBlock>,
}
