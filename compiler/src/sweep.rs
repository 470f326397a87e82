//! Expands `sweep [...]` values into named variants (cartesian product, in document order).

use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::doc::{Doc, DocBlock, DocEntry};
use canc_grammar::ast::{Value, ValueKind};

/// Most variants one spec may expand to.
pub const MAX_VARIANTS: usize = 1024;

/// A swept value: where it is and its choices.
struct Site {
    path: String,
    choices: Vec<Value>,
    span: canc_grammar::Span,
}

/// Visits every value of the document with its dotted path, in a fixed order.
fn visit(doc: &mut Doc, f: &mut dyn FnMut(&str, &mut Value)) {
    for (name, s) in doc.lets.iter_mut() {
        f(name, &mut s.value);
    }
    fn block(prefix: &str, b: &mut DocBlock, f: &mut dyn FnMut(&str, &mut Value)) {
        for (k, e) in b.entries.iter_mut() {
            let p = format!("{prefix}.{k}");
            match e {
                DocEntry::Field(s) => f(&p, &mut s.value),
                DocEntry::Block(inner) => block(&p, inner, f),
            }
        }
    }
    for b in doc.blocks.values_mut() {
        let prefix = match &b.name {
            Some(n) => format!("{}.{}", b.kind.name, n.name),
            None => b.kind.name.clone(),
        };
        block(&prefix, b, f);
    }
}

/// Calls `f` on each sweep inside `v` (not inside other sweeps), with the path extended by
/// keyword names.
fn sweeps_in(path: &str, v: &mut Value, f: &mut dyn FnMut(&str, &mut Value)) {
    match &mut v.kind {
        ValueKind::Sweep(_) => f(path, v),
        ValueKind::List(xs) => xs.iter_mut().for_each(|x| sweeps_in(path, x, f)),
        ValueKind::Call(_, args) => {
            for a in args {
                let p = match &a.name {
                    Some(k) => format!("{path}.{}", k.name),
                    None => path.to_string(),
                };
                sweeps_in(&p, &mut a.value, f);
            }
        }
        _ => {}
    }
}

fn contains_sweep(v: &Value) -> bool {
    match &v.kind {
        ValueKind::Sweep(_) => true,
        ValueKind::List(xs) => xs.iter().any(contains_sweep),
        ValueKind::Call(_, args) => args.iter().any(|a| contains_sweep(&a.value)),
        _ => false,
    }
}

/// Expands the sweeps of `doc`. Without sweeps, returns the document itself, unnamed.
pub fn expand(mut doc: Doc, diags: &mut Vec<Diagnostic>) -> Vec<(Option<String>, Doc)> {
    let mut sites: Vec<Site> = Vec::new();
    let mut bad = false;
    visit(&mut doc, &mut |path, v| {
        sweeps_in(path, v, &mut |p, s| {
            let ValueKind::Sweep(choices) = &s.kind else {
                return;
            };
            if choices.is_empty() {
                diags.push(
                    Diagnostic::error(codes::BAD_SWEEP, s.span, "a sweep needs at least one value")
                        .label("empty sweep"),
                );
                bad = true;
            }
            if let Some(inner) = choices.iter().find(|c| contains_sweep(c)) {
                diags.push(
                    Diagnostic::error(codes::BAD_SWEEP, inner.span, "sweeps cannot be nested")
                        .label("sweep inside a sweep")
                        .help("write the combinations as two sweeps on different keys (they multiply)"),
                );
                bad = true;
            }
            sites.push(Site {
                path: p.to_string(),
                choices: choices.clone(),
                span: s.span,
            });
        })
    });
    if sites.is_empty() {
        return vec![(None, doc)];
    }
    if bad {
        return vec![];
    }
    let total = sites
        .iter()
        .try_fold(1usize, |acc, s| acc.checked_mul(s.choices.len()));
    if total.is_none_or(|t| t > MAX_VARIANTS) {
        diags.push(
            Diagnostic::error(
                codes::BAD_SWEEP,
                sites[0].span,
                format!("the sweeps expand to more than {MAX_VARIANTS} variants"),
            )
            .label("first sweep")
            .note(format!(
                "{} sweeps: {}",
                sites.len(),
                sites
                    .iter()
                    .map(|s| format!("{} ({})", s.path, s.choices.len()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        );
        return vec![];
    }
    let total = total.unwrap_or(1);
    let mut out = Vec::with_capacity(total);
    for index in 0..total {
        // Mixed-radix digits, last site fastest.
        let mut picks = vec![0usize; sites.len()];
        let mut rest = index;
        for (i, s) in sites.iter().enumerate().rev() {
            picks[i] = rest % s.choices.len();
            rest /= s.choices.len();
        }
        let mut variant = doc.clone();
        let mut k = 0;
        visit(&mut variant, &mut |path, v| {
            sweeps_in(path, v, &mut |_, s| {
                *s = sites[k].choices[picks[k]].clone();
                k += 1;
            })
        });
        let name = sites
            .iter()
            .zip(&picks)
            .map(|(s, &p)| format!("{}={}", s.path, canc_grammar::print_value(&s.choices[p])))
            .collect::<Vec<_>>()
            .join(",");
        out.push((Some(name), variant));
    }
    out
}
