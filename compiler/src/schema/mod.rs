//! The closed schema of the language: every block, type, key, augmentation and graph operation,
//! with its value type, default and one-line doc. The checker, `canc schema` and docs/language.md
//! all read these tables, so they cannot drift apart.

mod augment;
mod blocks;
mod ops;

pub use augment::AUGMENTATIONS;
pub use blocks::{BLOCKS, DATA_SOURCES, EVAL_PROTOCOLS, NETWORKS, OPTIMIZERS, SCHEDULES};
pub use ops::{Input, OPS, OpKind, OpSchema, find as find_op, network_signature};

use canc_grammar::ast::Unit;

/// The type of a value.
#[derive(Debug, Clone, Copy)]
pub enum Ty {
    /// An integer in `[min, max]`.
    Int { min: i64, max: i64 },
    /// A float between `lo` and `hi`; `*_open` excludes the bound.
    Float {
        lo: f64,
        hi: f64,
        lo_open: bool,
        hi_open: bool,
    },
    /// `true` / `false`.
    Bool,
    /// A string.
    Str,
    /// One of these identifiers.
    Enum(&'static [&'static str]),
    /// `a..b` with `lo <= a <= b <= hi`.
    Range { lo: f64, hi: f64 },
    /// A list of floats in `[lo, hi]`, of length `len` if given.
    Floats {
        len: Option<usize>,
        lo: f64,
        hi: f64,
    },
    /// A list of identifiers from this set.
    Idents(&'static [&'static str]),
    /// A number with one of these units (a bare number is taken in `bare` units, if given).
    Quantity {
        units: &'static [Unit],
        bare: Option<Unit>,
    },
    /// A sampled value: `uniform(a, b)`, `loguniform(a, b)`, `normal(mean, std)` or a constant.
    Dist,
    /// The name of a `network` block.
    Network,
    /// The name of a `view` block.
    View,
    /// A graph node (`m1`, `n1.sigma`, or a nested expression).
    Node,
    /// A token selection for a loss: `all`, `masked(m)`, `visible(m)`.
    Selection,
    /// `none` or the inner type.
    Optional(&'static Ty),
    /// The first alternative that accepts the value.
    Either(&'static [Ty]),
}

/// Shorthands for the tables.
pub(crate) const fn int(min: i64, max: i64) -> Ty {
    Ty::Int { min, max }
}
pub(crate) const fn float(lo: f64, hi: f64) -> Ty {
    Ty::Float {
        lo,
        hi,
        lo_open: false,
        hi_open: false,
    }
}
pub(crate) const POS_FLOAT: Ty = Ty::Float {
    lo: 0.0,
    hi: f64::INFINITY,
    lo_open: true,
    hi_open: false,
};
pub(crate) const NONNEG_FLOAT: Ty = float(0.0, f64::INFINITY);
pub(crate) const PROB: Ty = float(0.0, 1.0);
pub(crate) const POS_INT: Ty = int(1, i64::MAX);
pub(crate) const NONNEG_INT: Ty = int(0, i64::MAX);

/// Where a key's value comes from when the spec does not give it.
#[derive(Debug, Clone, Copy)]
pub enum Default {
    /// Must be given.
    Required,
    /// Unset (`none`) unless given.
    Unset,
    /// This literal, in .canspec syntax.
    Lit(&'static str),
    /// A property of the data source.
    Data(DataAttr),
}

/// Properties of the data set that other defaults derive from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataAttr {
    /// Side of the (square) images.
    ImageSize,
    /// Colour channels.
    Channels,
    /// Per-channel mean.
    Mean,
    /// Per-channel std.
    Std,
}

impl DataAttr {
    /// How `canc explain` names the derivation.
    pub fn formula(self) -> &'static str {
        match self {
            DataAttr::ImageSize => "data.image_size",
            DataAttr::Channels => "data.channels",
            DataAttr::Mean => "data.mean",
            DataAttr::Std => "data.std",
        }
    }
}

/// A key of a block.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// Key name.
    pub name: &'static str,
    /// Value type.
    pub ty: Ty,
    /// Default.
    pub default: Default,
    /// One line for docs and hover.
    pub doc: &'static str,
}

/// Builds a [`Field`].
pub(crate) const fn field(
    name: &'static str,
    ty: Ty,
    default: Default,
    doc: &'static str,
) -> Field {
    Field {
        name,
        ty,
        default,
        doc,
    }
}

/// The keys and nested blocks of one block type (or of an untyped block).
#[derive(Debug, Clone, Copy)]
pub struct TypeSchema {
    /// Type name (`vit`, `adamw`, `hflip`, ...); for untyped blocks, the block kind.
    pub name: &'static str,
    /// One line for docs.
    pub doc: &'static str,
    /// Keys.
    pub fields: &'static [Field],
    /// Nested blocks allowed, by kind (augmentations in a view, protocols in eval).
    pub children: &'static [TypeSchema],
    /// What nested blocks are called in messages ("augmentation", "protocol").
    pub child_noun: &'static str,
}

/// What a block's body is.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    /// `kind: type { ... }`: the keys depend on the type.
    Typed(&'static [TypeSchema]),
    /// A fixed set of keys and nested blocks.
    Plain(TypeSchema),
    /// `graph { node = expr ... }`.
    Graph,
    /// `objective { node = weight ... }`.
    Objective,
}

/// A top-level block kind.
#[derive(Debug, Clone, Copy)]
pub struct BlockSchema {
    /// Keyword.
    pub kind: &'static str,
    /// One line for docs.
    pub doc: &'static str,
    /// `view NAME`, `network NAME` take a name; the others are unique.
    pub named: bool,
    /// Must appear (possibly inherited).
    pub required: bool,
    /// Body.
    pub body: Body,
}

/// Finds a top-level block kind.
pub fn block(kind: &str) -> Option<&'static BlockSchema> {
    BLOCKS.iter().find(|b| b.kind == kind)
}

impl TypeSchema {
    /// Finds a key.
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Finds a nested block kind.
    pub fn child(&self, name: &str) -> Option<&'static TypeSchema> {
        self.children.iter().find(|c| c.name == name)
    }
}

/// Describes a type for messages: "a float in (0, inf)".
pub fn describe(ty: &Ty) -> String {
    fn num(x: f64) -> String {
        if x == f64::INFINITY {
            "inf".into()
        } else if x == f64::NEG_INFINITY {
            "-inf".into()
        } else {
            format!("{x}")
        }
    }
    match ty {
        Ty::Int { min, max } => match (*min, *max) {
            (i64::MIN, i64::MAX) => "an integer".into(),
            (m, i64::MAX) => format!("an integer >= {m}"),
            (m, x) => format!("an integer in [{m}, {x}]"),
        },
        Ty::Float {
            lo,
            hi,
            lo_open,
            hi_open,
        } => format!(
            "a number in {}{}, {}{}",
            if *lo_open || *lo == f64::NEG_INFINITY {
                "("
            } else {
                "["
            },
            num(*lo),
            num(*hi),
            if *hi_open || *hi == f64::INFINITY {
                ")"
            } else {
                "]"
            }
        ),
        Ty::Bool => "`true` or `false`".into(),
        Ty::Str => "a string".into(),
        Ty::Enum(opts) => format!(
            "one of {}",
            opts.iter()
                .map(|o| format!("`{o}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Ty::Range { lo, hi } => format!("a range `a..b` within [{}, {}]", num(*lo), num(*hi)),
        Ty::Floats { len: Some(n), .. } => format!("a list of {n} numbers"),
        Ty::Floats { len: None, .. } => "a list of numbers".into(),
        Ty::Idents(_) => "a list of names".into(),
        Ty::Quantity { units, .. } => format!(
            "a count in {}",
            units
                .iter()
                .map(|u| u.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        ),
        Ty::Dist => {
            "a number or a distribution (`uniform(a, b)`, `loguniform(a, b)`, `normal(m, s)`)"
                .into()
        }
        Ty::Network => "the name of a network".into(),
        Ty::View => "the name of a view".into(),
        Ty::Node => "a graph node".into(),
        Ty::Selection => "`all`, `masked(mask)` or `visible(mask)`".into(),
        Ty::Optional(inner) => format!("`none` or {}", describe(inner)),
        Ty::Either(alts) => alts.iter().map(describe).collect::<Vec<_>>().join(", or "),
    }
}
