//! canc's compiler front end. No Burn here: `canc check` must stay fast.
//!
//! ```text
//!  .canspec text ─parse─▶ ast::SpecFile ─load─▶ extends chain (base first) ─merge─▶ Doc
//!      ─overrides (--set)─▶ Doc ─sweeps─▶ variants ─vars─▶ ─check─▶ ResolvedSpec (canonical, RON)
//!      ─lower─▶ LossGraph (petgraph) ─validate─▶ GraphInfo (types, gradient flow) ─plan─▶ Plan (RON)
//! ```
//! Every stage reports [`Diagnostic`]s with spans into the [`SourceMap`]; parsing stops at the
//! first syntax error, the semantic stages collect every problem.

// Diagnostics are large and only built on the error path; boxing them would buy nothing.
#![allow(clippy::result_large_err)]

pub mod batching;
pub mod check;
pub mod codes;
pub mod cost;
pub mod diagnostic;
pub mod diff;
pub mod doc;
pub mod docs;
pub mod dot;
pub mod explain;
mod graph;
pub mod ir;
pub mod load;
pub mod lower;
pub mod merge;
pub mod plan;
pub mod resolved;
pub mod schema;
pub mod shape;
pub mod source;
pub mod suggest;
pub mod sweep;
pub mod validate;
pub mod value;
pub mod vars;

pub use diagnostic::{Diagnostic, Severity};
pub use plan::Plan;
pub use resolved::{RBlock, RValue, ResolvedSpec};
pub use source::SourceMap;

use canc_grammar::{FileId, Span};
use doc::{Doc, Origin};
use std::path::Path;

/// The result of resolving one spec: its sources, every diagnostic, and the resolved variants
/// (empty if there were errors).
pub struct Resolution {
    /// Every file and override read.
    pub sources: SourceMap,
    /// Errors and warnings, sorted by position.
    pub diagnostics: Vec<Diagnostic>,
    /// One entry per sweep variant (one if the spec has no sweeps).
    pub variants: Vec<ResolvedSpec>,
    /// The compiled plan of each variant, in the same order (empty if there were errors).
    pub plans: Vec<Plan>,
}

impl Resolution {
    /// True if any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// The names of the sweep variants, in expansion order (empty without sweeps).
    pub fn variant_names(&self) -> Vec<&str> {
        self.variants
            .iter()
            .filter_map(|v| v.variant.as_deref())
            .collect()
    }
}

/// Resolves the spec at `path` with command-line `overrides` (`key=value`).
pub fn resolve_path(path: &Path, overrides: &[String]) -> Resolution {
    let mut sources = SourceMap::new();
    let mut diags = Vec::new();
    let chain = load::load_chain(path, &mut sources, &mut diags);
    finish(sources, chain, overrides, diags, stem(path))
}

/// Resolves an in-memory spec (`name` is shown in diagnostics; `extends` is relative to the
/// current directory).
pub fn resolve_source(name: &str, text: &str, overrides: &[String]) -> Resolution {
    let mut sources = SourceMap::new();
    let mut diags = Vec::new();
    let root = sources.add_file(name.to_string(), None, text.to_string());
    let chain = load::load_from(root, &mut sources, &mut diags);
    finish(sources, chain, overrides, diags, stem(Path::new(name)))
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "spec".into())
}

fn finish(
    mut sources: SourceMap,
    chain: Option<Vec<load::Loaded>>,
    overrides: &[String],
    mut diags: Vec<Diagnostic>,
    name: String,
) -> Resolution {
    let Some(chain) = chain else {
        diagnostic::normalize(&mut diags);
        return Resolution {
            sources,
            diagnostics: diags,
            variants: vec![],
            plans: vec![],
        };
    };
    let mut doc = Doc::default();
    for f in &chain {
        merge::apply_file(&mut doc, &f.ast, &mut diags);
    }
    for (i, text) in overrides.iter().enumerate() {
        let id = sources.add_file(format!("--set #{}", i + 1), None, text.clone());
        match canc_grammar::parse_override(text, id) {
            Ok((path, value)) => {
                merge::apply_set(&mut doc, &path, &value, Origin::Cli(id), &mut diags)
            }
            Err(e) => diags.push(load::syntax_diagnostic(e)),
        }
    }
    let files: Vec<FileId> = chain.iter().map(|f| f.file).collect();
    let root = chain.last().expect("chain has the root file");
    let root_span = root
        .ast
        .items
        .first()
        .map_or(Span::new(root.file, 0, 0), |i| {
            Span::new(root.file, i.span.start as usize, i.span.start as usize)
        });
    // Merge errors (duplicates, bad overrides) are local: keep checking to report the rest.
    let mut variants = Vec::new();
    let mut plans = Vec::new();
    for (variant, mut vdoc) in sweep::expand(doc, &mut diags) {
        vars::substitute(&mut vdoc, root.file, &mut diags);
        let (spec, d) = check::check(&vdoc, &name, variant, &sources, &files, root_span);
        diags.extend(d);
        if let Some(spec) = spec {
            // The graph is only checked on an otherwise valid spec: earlier errors would cascade.
            if !diags.iter().any(Diagnostic::is_error)
                && let Some(p) = compile(&spec, &mut diags)
            {
                plans.push(p);
            }
            variants.push(spec);
        }
    }
    diagnostic::normalize(&mut diags);
    if diags.iter().any(Diagnostic::is_error) {
        variants.clear();
        plans.clear();
    }
    Resolution {
        sources,
        diagnostics: diags,
        variants,
        plans,
    }
}

/// Lowers, validates and plans one checked variant; `None` if the graph has errors (reported
/// into `diags`).
pub fn compile(spec: &ResolvedSpec, diags: &mut Vec<Diagnostic>) -> Option<Plan> {
    let (graph, d) = lower::lower(spec);
    let lowered_ok = !d.iter().any(Diagnostic::is_error);
    diags.extend(d);
    let (info, d) = validate::validate(spec, &graph);
    let ok = lowered_ok && !d.iter().any(Diagnostic::is_error);
    diags.extend(d);
    ok.then(|| plan::plan(spec, &graph, &info))
}
