//! The syntax tree of a `.canspec` file. Every node keeps its [`Span`]; comments and blank lines
//! are kept as trivia so that `canc fmt` can print the file back without losing them.

use crate::span::Span;
use serde::Serialize;

/// An identifier with its location.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ident {
    /// The identifier text.
    pub name: String,
    /// Where it was written.
    pub span: Span,
}

/// A `# ...` comment (text includes the leading `#`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comment {
    /// The comment text, `#` included, trailing whitespace removed.
    pub text: String,
    /// Where it was written.
    pub span: Span,
}

/// Comments and blank lines around an item or entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Trivia {
    /// A blank line separated this from what came before.
    pub blank_before: bool,
    /// Comments on their own lines before this.
    pub leading: Vec<Comment>,
    /// A blank line separates the leading comments from this (a detached comment group).
    pub blank_after_leading: bool,
    /// A comment on the same line, after this.
    pub trailing: Option<Comment>,
}

/// A whole `.canspec` file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpecFile {
    /// Top-level items in source order.
    pub items: Vec<Item>,
    /// Comments after the last item.
    pub trailing_comments: Vec<Comment>,
}

/// A top-level item with its trivia.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    /// Comments and blank lines.
    pub trivia: Trivia,
    /// What the item is.
    pub kind: ItemKind,
    /// The whole item.
    pub span: Span,
}

/// The kinds of top-level item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ItemKind {
    /// `extends "base.canspec"`.
    Extends(StrLit),
    /// `let name = value`.
    Let(Ident, Value),
    /// `a.b.c = value`: an override of a value declared elsewhere (usually in a base file).
    Set(Vec<Ident>, Value),
    /// `kind name: type { ... }`.
    Block(Block),
}

/// A string literal: its decoded value and its span.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StrLit {
    /// The decoded string (escapes resolved).
    pub value: String,
    /// Where it was written, quotes included.
    pub span: Span,
}

/// `kind name: type { entries }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Block {
    /// The block keyword (`network`, `view`, `hflip`, ...).
    pub kind: Ident,
    /// Optional name (`network encoder`).
    pub name: Option<Ident>,
    /// Optional type (`network encoder: vit`).
    pub ty: Option<Ident>,
    /// Entries in source order.
    pub entries: Vec<Entry>,
    /// Comments after the last entry, before `}`.
    pub closing_comments: Vec<Comment>,
    /// The whole block.
    pub span: Span,
}

/// An entry inside a block, with its trivia.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    /// Comments and blank lines.
    pub trivia: Trivia,
    /// What the entry is.
    pub kind: EntryKind,
    /// The whole entry.
    pub span: Span,
}

/// The kinds of block entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum EntryKind {
    /// `key = value`.
    Assign(Ident, Value),
    /// A nested block.
    Block(Block),
}

/// A value with its span.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Value {
    /// What the value is.
    pub kind: ValueKind,
    /// Where it was written.
    pub span: Span,
}

/// A number as written (the text is kept so `1.5e-4` prints back as `1.5e-4`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Number {
    /// Source text.
    pub text: String,
    /// Parsed value.
    pub value: NumberValue,
}

/// The parsed value of a number literal.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum NumberValue {
    /// Written without `.` or exponent.
    Int(i64),
    /// Written with `.` or an exponent.
    Float(f64),
}

impl NumberValue {
    /// The value as `f64`.
    pub fn as_f64(self) -> f64 {
        match self {
            NumberValue::Int(i) => i as f64,
            NumberValue::Float(f) => f,
        }
    }
}

/// Units a quantity can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub enum Unit {
    /// Passes over the training set.
    Epochs,
    /// Optimizer steps.
    Steps,
    /// Images seen.
    Images,
    /// Milliseconds.
    Millis,
    /// Seconds.
    Seconds,
    /// Minutes.
    Minutes,
    /// Hours.
    Hours,
    /// Percent (`50%` = 0.5).
    Percent,
}

impl Unit {
    /// Every unit.
    pub const ALL: [Unit; 8] = [
        Unit::Epochs,
        Unit::Steps,
        Unit::Images,
        Unit::Millis,
        Unit::Seconds,
        Unit::Minutes,
        Unit::Hours,
        Unit::Percent,
    ];

    /// Canonical spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Epochs => "epochs",
            Unit::Steps => "steps",
            Unit::Images => "images",
            Unit::Millis => "ms",
            Unit::Seconds => "s",
            Unit::Minutes => "min",
            Unit::Hours => "h",
            Unit::Percent => "%",
        }
    }

    /// Parses any accepted spelling (`epoch` and `epochs`, ...).
    pub fn parse(s: &str) -> Option<Unit> {
        Some(match s {
            "epoch" | "epochs" => Unit::Epochs,
            "step" | "steps" => Unit::Steps,
            "images" => Unit::Images,
            "ms" => Unit::Millis,
            "s" => Unit::Seconds,
            "min" => Unit::Minutes,
            "h" => Unit::Hours,
            "%" => Unit::Percent,
            _ => return None,
        })
    }
}

/// One argument of a call: positional or `name = value`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Arg {
    /// The keyword, for a keyword argument.
    pub name: Option<Ident>,
    /// The argument value.
    pub value: Value,
}

/// The kinds of value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ValueKind {
    /// `3`, `1.5e-4`, `-0.2`.
    Number(Number),
    /// `100 epochs`, `30 min`, `50%`.
    Quantity(Number, Unit),
    /// `"text"`.
    Str(String),
    /// `true` / `false`.
    Bool(bool),
    /// `none`: off, unset, or (for a named entry in an extending file) removed.
    None,
    /// `0.2..1.0`.
    Range(Number, Number),
    /// `[a, b, c]`.
    List(Vec<Value>),
    /// `name(args)`: an op, a network applied to inputs, a distribution, a constructor.
    Call(Ident, Vec<Arg>),
    /// `$name`: a `let` variable.
    Var(Ident),
    /// `a.b`: an output of a graph node (`n1.sigma`).
    Path(Vec<Ident>),
    /// A bare identifier: an enum value or a reference, decided by the schema.
    Ident(String),
    /// `sweep [v1, v2, ...]`: expands the spec into one variant per value.
    Sweep(Vec<Value>),
}
