//! The canonical resolved spec: every block in schema order, every key in schema order with its
//! default filled in, variables substituted, sweeps expanded. This is what later stages consume
//! and what the snapshot tests record (as RON).

use canc_grammar::ast::Unit;
use indexmap::IndexMap;
use serde::Serialize;

/// A checked value.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub enum RValue {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(String),
    /// An enum option or a reference to a named block or graph node.
    Ident(String),
    /// A number with a unit.
    Quantity(f64, Unit),
    /// `lo..hi`.
    Range(f64, f64),
    /// A list.
    List(Vec<RValue>),
    /// A call (graph expression, distribution, selection): name, then `(keyword, value)` args.
    Call(String, Vec<(Option<String>, RValue)>),
    /// `node.output`.
    Output(String, String),
    /// Unset.
    None,
}

impl RValue {
    /// The value as a float, if numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            RValue::Int(i) => Some(*i as f64),
            RValue::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The value as an integer, if it is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            RValue::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The identifier or string text, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            RValue::Ident(s) | RValue::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// A checked block.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct RBlock {
    /// Block keyword.
    pub kind: String,
    /// Name, for named blocks.
    pub name: Option<String>,
    /// Type, for typed blocks.
    #[serde(rename = "type")]
    pub ty: Option<String>,
    /// Keys with values (defaults filled).
    pub fields: IndexMap<String, RValue>,
    /// Nested blocks (augmentations in order, protocols).
    pub children: Vec<RBlock>,
}

impl RBlock {
    /// A key's value.
    pub fn get(&self, key: &str) -> Option<&RValue> {
        self.fields.get(key)
    }
}

/// Where a resolved value came from, for `canc explain`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Provenance {
    /// Written in a spec file at `file:line:col`.
    Spec(String),
    /// From `--set`.
    Cli(String),
    /// The schema's default.
    Default,
    /// Derived from another value.
    Derived(String),
}

/// A fully resolved, checked spec (one variant of a sweep).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ResolvedSpec {
    /// Spec name (the root file's stem).
    pub name: String,
    /// Sweep variant (`mask_ratio=0.25`), if the spec has sweeps.
    pub variant: Option<String>,
    /// The files of the `extends` chain, base first, as given.
    pub sources: Vec<String>,
    /// Variables after overrides.
    pub lets: IndexMap<String, RValue>,
    /// Blocks in canonical order.
    pub blocks: Vec<RBlock>,
    /// Where each value came from, by dotted path (not part of the canonical form).
    #[serde(skip)]
    pub provenance: IndexMap<String, Provenance>,
    /// Where each value and named block was written, by dotted path (`graph.z1`,
    /// `network.encoder`, `network.encoder.dim`), for diagnostics of later stages.
    #[serde(skip)]
    pub spans: IndexMap<String, canc_grammar::Span>,
}

impl ResolvedSpec {
    /// The first block of `kind` (for unnamed blocks, the only one).
    pub fn block(&self, kind: &str) -> Option<&RBlock> {
        self.blocks.iter().find(|b| b.kind == kind)
    }

    /// The named block `kind name`.
    pub fn named(&self, kind: &str, name: &str) -> Option<&RBlock> {
        self.blocks
            .iter()
            .find(|b| b.kind == kind && b.name.as_deref() == Some(name))
    }

    /// The canonical RON text.
    pub fn to_ron(&self) -> String {
        let cfg = ron::ser::PrettyConfig::new()
            .indentor("  ".to_string())
            .struct_names(false);
        ron::ser::to_string_pretty(self, cfg).unwrap_or_else(|e| format!("/* RON error: {e} */"))
    }

    /// Reads the canonical RON text (a run directory's `resolved.ron`); provenance and spans,
    /// which the text does not carry, come back empty.
    pub fn from_ron(text: &str) -> Result<ResolvedSpec, String> {
        ron::from_str(text).map_err(|e| e.to_string())
    }
}
