//! Substitutes `$name` variables with their `let` values.

use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::doc::{Doc, DocBlock, DocEntry};
use crate::suggest;
use canc_grammar::ast::{Value, ValueKind};
use indexmap::IndexMap;
use std::collections::HashSet;

/// Replaces every `$name` in the document (lets included) and reports undefined or cyclic
/// variables, and unused ones defined in the `root` file (a base's variable may be left unused
/// on purpose by an ablation that removes its use).
pub fn substitute(doc: &mut Doc, root: canc_grammar::FileId, diags: &mut Vec<Diagnostic>) {
    let raw: IndexMap<String, Value> = doc
        .lets
        .iter()
        .map(|(k, s)| (k.clone(), s.value.clone()))
        .collect();
    let mut used: HashSet<String> = HashSet::new();
    let mut resolved: IndexMap<String, Value> = IndexMap::new();
    for name in raw.keys() {
        let mut stack = vec![name.clone()];
        let v = resolve_let(name, &raw, &mut resolved, &mut stack, &mut used, diags);
        resolved.insert(name.clone(), v);
    }
    for (name, s) in doc.lets.iter_mut() {
        if let Some(v) = resolved.get(name) {
            s.value = v.clone();
        }
    }
    fn block(
        b: &mut DocBlock,
        lets: &IndexMap<String, Value>,
        used: &mut HashSet<String>,
        diags: &mut Vec<Diagnostic>,
    ) {
        for e in b.entries.values_mut() {
            match e {
                DocEntry::Field(s) => subst(&mut s.value, lets, used, diags),
                DocEntry::Block(inner) => block(inner, lets, used, diags),
            }
        }
    }
    for b in doc.blocks.values_mut() {
        block(b, &resolved, &mut used, diags);
    }
    for (name, s) in &doc.lets {
        if !used.contains(name) && s.key.span.file == root {
            diags.push(
                Diagnostic::error(
                    codes::UNUSED_VAR,
                    s.key.span,
                    format!("variable `{name}` is never used"),
                )
                .label("defined here")
                .help(format!("use it as `${name}` or remove it")),
            );
        }
    }
}

fn resolve_let(
    name: &str,
    raw: &IndexMap<String, Value>,
    done: &mut IndexMap<String, Value>,
    stack: &mut Vec<String>,
    used: &mut HashSet<String>,
    diags: &mut Vec<Diagnostic>,
) -> Value {
    if let Some(v) = done.get(name) {
        return v.clone();
    }
    let mut v = raw[name].clone();
    let mut err = None;
    let mut undefined = Vec::new();
    replace_vars(&mut v, &mut |var, span| {
        used.insert(var.to_string());
        if stack.iter().any(|s| s == var) {
            err = Some(
                Diagnostic::error(
                    codes::VAR_CYCLE,
                    span,
                    format!("variable `{var}` is defined in terms of itself"),
                )
                .label("refers back")
                .note(format!("cycle: {} -> {var}", stack.join(" -> "))),
            );
            return None;
        }
        if !raw.contains_key(var) {
            undefined.push((var.to_string(), span));
            return None;
        }
        stack.push(var.to_string());
        let r = resolve_let(var, raw, done, stack, used, diags);
        stack.pop();
        done.insert(var.to_string(), r.clone());
        Some(r)
    });
    if let Some(e) = err {
        diags.push(e);
    }
    for (var, span) in undefined {
        let names: Vec<&str> = raw.keys().map(String::as_str).collect();
        diags.push(
            Diagnostic::error(
                codes::UNDEFINED_VAR,
                span,
                format!("undefined variable `${var}`"),
            )
            .label("no `let` of this name")
            .maybe_help(suggest::hint(&var, &names)),
        );
    }
    v
}

fn subst(
    v: &mut Value,
    lets: &IndexMap<String, Value>,
    used: &mut HashSet<String>,
    diags: &mut Vec<Diagnostic>,
) {
    replace_vars(v, &mut |var, span| {
        used.insert(var.to_string());
        match lets.get(var) {
            Some(val) => Some(val.clone()),
            None => {
                let names: Vec<&str> = lets.keys().map(String::as_str).collect();
                diags.push(
                    Diagnostic::error(
                        codes::UNDEFINED_VAR,
                        span,
                        format!("undefined variable `${var}`"),
                    )
                    .label("no `let` of this name")
                    .maybe_help(
                        suggest::hint(var, &names)
                            .or_else(|| Some(format!("define it with `let {var} = ...`"))),
                    ),
                );
                None
            }
        }
    });
}

/// Replaces each `$var` with `f(var)` where that returns a value (keeping the use-site span).
fn replace_vars(v: &mut Value, f: &mut dyn FnMut(&str, canc_grammar::Span) -> Option<Value>) {
    match &mut v.kind {
        ValueKind::Var(id) => {
            if let Some(mut r) = f(&id.name, id.span) {
                r.span = v.span;
                *v = r;
            }
        }
        ValueKind::List(xs) | ValueKind::Sweep(xs) => {
            xs.iter_mut().for_each(|x| replace_vars(x, f))
        }
        ValueKind::Call(_, args) => args.iter_mut().for_each(|a| replace_vars(&mut a.value, f)),
        _ => {}
    }
}
