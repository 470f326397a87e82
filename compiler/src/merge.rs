//! Applies the files of an `extends` chain (base first) and then the `--set` overrides to a
//! [`Doc`]. Later writers override earlier ones key by key; `name = none` removes an inherited
//! graph node, objective term, augmentation or protocol.

use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::doc::{Doc, DocBlock, DocEntry, Origin, Setting, block_key};
use crate::schema::{self, Body};
use crate::suggest;
use canc_grammar::ast::{Block, EntryKind, Ident, ItemKind, SpecFile, Value, ValueKind};
use std::collections::HashMap;

/// Applies one file of the chain.
pub fn apply_file(doc: &mut Doc, file: &SpecFile, diags: &mut Vec<Diagnostic>) {
    let mut seen_blocks: HashMap<String, canc_grammar::Span> = HashMap::new();
    let mut seen_lets: HashMap<String, canc_grammar::Span> = HashMap::new();
    for item in &file.items {
        match &item.kind {
            ItemKind::Extends(_) => {}
            ItemKind::Let(name, value) => {
                if let Some(prev) = seen_lets.insert(name.name.clone(), name.span) {
                    diags.push(duplicate(
                        &format!("variable `{}`", name.name),
                        name.span,
                        prev,
                    ));
                    continue;
                }
                doc.lets.insert(
                    name.name.clone(),
                    Setting {
                        key: name.clone(),
                        value: value.clone(),
                        origin: Origin::Spec,
                    },
                );
            }
            ItemKind::Set(path, value) => apply_set(doc, path, value, Origin::Spec, diags),
            ItemKind::Block(b) => {
                let key = block_key(&b.kind.name, b.name.as_ref().map(|n| n.name.as_str()));
                let header = b
                    .name
                    .as_ref()
                    .map_or(b.kind.span, |n| b.kind.span.to(n.span));
                if let Some(prev) = seen_blocks.insert(key.clone(), header) {
                    diags.push(duplicate(&format!("block `{key}`"), header, prev));
                    continue;
                }
                let collection = is_collection(&b.kind.name);
                match doc.blocks.get_mut(&key) {
                    Some(existing) => merge_block(existing, b, collection, diags),
                    None => {
                        let fresh = convert_block(b, collection, diags);
                        doc.blocks.insert(key, fresh);
                    }
                }
            }
        }
    }
}

fn duplicate(what: &str, span: canc_grammar::Span, prev: canc_grammar::Span) -> Diagnostic {
    Diagnostic::error(
        codes::DUPLICATE,
        span,
        format!("{what} is defined twice in this file"),
    )
    .label("second definition")
    .with_label(prev, "first defined here")
    .help("keep one; to change a base file's value, write it once in the extending file")
}

/// Graph nodes and objective terms are collections: `name = none` removes an entry.
fn is_collection(kind: &str) -> bool {
    matches!(kind, "graph" | "objective")
}

fn is_none(v: &Value) -> bool {
    matches!(v.kind, ValueKind::None)
}

/// A block as written in one file, checked for duplicate keys.
fn convert_block(b: &Block, collection: bool, diags: &mut Vec<Diagnostic>) -> DocBlock {
    let mut out = DocBlock {
        kind: b.kind.clone(),
        name: b.name.clone(),
        ty: b.ty.clone(),
        entries: Default::default(),
        span: b.span,
    };
    let mut seen: HashMap<&str, canc_grammar::Span> = HashMap::new();
    for e in &b.entries {
        let (key, entry) = match &e.kind {
            EntryKind::Assign(k, v) => {
                if collection && is_none(v) {
                    diags.push(nothing_to_remove(k, &b.kind.name, &out));
                    continue;
                }
                (
                    k,
                    DocEntry::Field(Setting {
                        key: k.clone(),
                        value: v.clone(),
                        origin: Origin::Spec,
                    }),
                )
            }
            EntryKind::Block(inner) => (
                &inner.kind,
                DocEntry::Block(convert_block(inner, false, diags)),
            ),
        };
        if let Some(prev) = seen.insert(&key.name, key.span) {
            diags.push(duplicate(&format!("`{}`", key.name), key.span, prev));
            continue;
        }
        out.entries.insert(key.name.clone(), entry);
    }
    out
}

fn nothing_to_remove(k: &Ident, parent: &str, block: &DocBlock) -> Diagnostic {
    let names: Vec<&str> = block.entries.keys().map(String::as_str).collect();
    Diagnostic::error(
        codes::NOTHING_TO_REMOVE,
        k.span,
        format!(
            "`{} = none` removes nothing: `{parent}` has no `{}`",
            k.name, k.name
        ),
    )
    .label("nothing of this name to remove")
    .maybe_help(suggest::did_you_mean(&k.name, names).map(|s| format!("did you mean `{s}`?")))
}

/// Merges a block written in an extending file into the inherited one.
fn merge_block(existing: &mut DocBlock, b: &Block, collection: bool, diags: &mut Vec<Diagnostic>) {
    if let Some(ty) = &b.ty
        && existing.ty.as_ref().map(|t| &t.name) != Some(&ty.name)
    {
        // A new type replaces the block: the old type's keys mean nothing for the new one.
        *existing = convert_block(b, collection, diags);
        return;
    }
    existing.span = b.span;
    existing.kind = b.kind.clone();
    let child_kinds = child_kinds(&b.kind.name, existing.ty.as_ref().map(|t| t.name.as_str()));
    let mut seen: HashMap<&str, canc_grammar::Span> = HashMap::new();
    for e in &b.entries {
        let key = match &e.kind {
            EntryKind::Assign(k, _) => k,
            EntryKind::Block(inner) => &inner.kind,
        };
        if let Some(prev) = seen.insert(&key.name, key.span) {
            diags.push(duplicate(&format!("`{}`", key.name), key.span, prev));
            continue;
        }
        match &e.kind {
            EntryKind::Assign(k, v) if is_none(v) => {
                let removable = collection
                    || matches!(existing.entries.get(&k.name), Some(DocEntry::Block(_)))
                    || child_kinds.contains(&k.name.as_str());
                if removable {
                    if existing.entries.shift_remove(&k.name).is_none() {
                        diags.push(nothing_to_remove(k, &b.kind.name, existing));
                    }
                } else {
                    set_field(existing, k, v, Origin::Spec);
                }
            }
            EntryKind::Assign(k, v) => set_field(existing, k, v, Origin::Spec),
            EntryKind::Block(inner) => match existing.entries.get_mut(&inner.kind.name) {
                Some(DocEntry::Block(child)) => merge_block(child, inner, false, diags),
                _ => {
                    let fresh = convert_block(inner, false, diags);
                    existing
                        .entries
                        .insert(inner.kind.name.clone(), DocEntry::Block(fresh));
                }
            },
        }
    }
}

fn set_field(block: &mut DocBlock, key: &Ident, value: &Value, origin: Origin) {
    let setting = Setting {
        key: key.clone(),
        value: value.clone(),
        origin,
    };
    block
        .entries
        .insert(key.name.clone(), DocEntry::Field(setting));
}

/// Kinds of nested block a block may hold (augmentations for views, protocols for eval).
fn child_kinds(kind: &str, ty: Option<&str>) -> Vec<&'static str> {
    let Some(s) = schema::block(kind) else {
        return vec![];
    };
    let ts = match s.body {
        Body::Plain(ts) => Some(ts),
        Body::Typed(types) => ty.and_then(|t| types.iter().find(|x| x.name == t).copied()),
        _ => None,
    };
    ts.map(|t| t.children.iter().map(|c| c.name).collect())
        .unwrap_or_default()
}

/// Applies `a.b.c = value` (from a file or `--set`).
pub fn apply_set(
    doc: &mut Doc,
    path: &[Ident],
    value: &Value,
    origin: Origin,
    diags: &mut Vec<Diagnostic>,
) {
    let Some(first) = path.first() else { return };
    let whole = first.span.to(path[path.len() - 1].span);
    let bad = |msg: String| Diagnostic::error(codes::BAD_OVERRIDE, whole, msg);

    if path.len() == 1 {
        match doc.lets.get_mut(&first.name) {
            Some(s) => {
                s.value = value.clone();
                s.origin = origin;
            }
            None => {
                let mut cands: Vec<&str> = doc.lets.keys().map(String::as_str).collect();
                cands.extend(schema::BLOCKS.iter().map(|b| b.kind));
                diags.push(
                    bad(format!("no variable `{}` to override", first.name))
                        .label("not a `let` of this spec")
                        .maybe_help(suggest::hint(&first.name, &cands)),
                );
            }
        }
        return;
    }

    let Some(bs) = schema::block(&first.name) else {
        let cands: Vec<&str> = schema::BLOCKS.iter().map(|b| b.kind).collect();
        diags.push(
            bad(format!("unknown block `{}` in override", first.name))
                .label("no such block")
                .maybe_help(suggest::hint(&first.name, &cands)),
        );
        return;
    };
    let (key, rest) = if bs.named {
        let name = &path[1];
        (block_key(bs.kind, Some(&name.name)), &path[2..])
    } else {
        (block_key(bs.kind, None), &path[1..])
    };
    if !doc.blocks.contains_key(&key) {
        if bs.named {
            let names: Vec<&str> = doc
                .blocks
                .values()
                .filter(|b| b.kind.name == bs.kind)
                .filter_map(|b| b.name.as_ref().map(|n| n.name.as_str()))
                .collect();
            diags.push(
                bad(format!(
                    "no {} named `{}` to override",
                    bs.kind, path[1].name
                ))
                .label("not defined in this spec or its bases")
                .maybe_help(suggest::hint(&path[1].name, &names)),
            );
            return;
        }
        if matches!(bs.body, Body::Typed(_)) {
            diags.push(
                bad(format!("no `{}` block to override", bs.kind))
                    .label("declare it with its type first")
                    .help(format!("write `{}: TYPE {{ ... }}`", bs.kind)),
            );
            return;
        }
        doc.blocks
            .insert(key.clone(), DocBlock::empty(first.clone()));
    }
    if rest.is_empty() && bs.named && is_none(value) {
        // `network.projector = none`: an extending spec drops an inherited network or view.
        doc.blocks.shift_remove(&key);
        return;
    }
    if rest.is_empty() {
        diags.push(
            bad("an override must name a key, not a whole block".into())
                .label("names a block")
                .help("write `block.key = value`; `network.NAME = none` or `view.NAME = none` drops a whole network or view"),
        );
        return;
    }
    let block = doc.blocks.get_mut(&key).expect("inserted above");
    if matches!(bs.body, Body::Graph) {
        set_graph(block, rest, value, origin, whole, diags);
        return;
    }
    if matches!(bs.body, Body::Objective) && rest.len() > 1 {
        diags.push(
            bad("an objective term has only a weight: `objective.NAME = w`".into())
                .label("path too long"),
        );
        return;
    }
    let mut current = block;
    for seg in &rest[..rest.len() - 1] {
        let kinds = child_kinds(
            &current.kind.name,
            current.ty.as_ref().map(|t| t.name.as_str()),
        );
        if !current.entries.contains_key(&seg.name) && kinds.contains(&seg.name.as_str()) {
            current.entries.insert(
                seg.name.clone(),
                DocEntry::Block(DocBlock::empty(seg.clone())),
            );
        }
        if !matches!(current.entries.get(&seg.name), Some(DocEntry::Block(_))) {
            let names: Vec<&str> = current
                .entries
                .iter()
                .filter(|(_, e)| matches!(e, DocEntry::Block(_)))
                .map(|(k, _)| k.as_str())
                .chain(kinds.iter().copied())
                .collect();
            diags.push(
                Diagnostic::error(
                    codes::BAD_OVERRIDE,
                    seg.span,
                    format!("`{}` has no nested block `{}`", current.kind.name, seg.name),
                )
                .label("not found")
                .maybe_help(suggest::hint(&seg.name, &names)),
            );
            return;
        }
        let Some(DocEntry::Block(child)) = current.entries.get_mut(&seg.name) else {
            unreachable!("checked just above (apply_set)")
        };
        current = child;
    }
    let last = &rest[rest.len() - 1];
    let collection = matches!(bs.body, Body::Objective);
    if is_none(value)
        && (collection || matches!(current.entries.get(&last.name), Some(DocEntry::Block(_))))
    {
        if current.entries.shift_remove(&last.name).is_none() {
            diags.push(nothing_to_remove(last, bs.kind, current));
        }
        return;
    }
    set_field(current, last, value, origin);
}

/// `graph.node = expr` replaces a node; `graph.node.arg = v` sets one keyword argument.
fn set_graph(
    graph: &mut DocBlock,
    rest: &[Ident],
    value: &Value,
    origin: Origin,
    whole: canc_grammar::Span,
    diags: &mut Vec<Diagnostic>,
) {
    let node = &rest[0];
    if rest.len() == 1 {
        if is_none(value) {
            if graph.entries.shift_remove(&node.name).is_none() {
                diags.push(nothing_to_remove(node, "graph", graph));
            }
        } else {
            set_field(graph, node, value, origin);
        }
        return;
    }
    if rest.len() > 2 {
        diags.push(
            Diagnostic::error(
                codes::BAD_OVERRIDE,
                whole,
                "graph overrides are `graph.NODE = expr` or `graph.NODE.ARG = value`",
            )
            .label("path too long"),
        );
        return;
    }
    let names: Vec<String> = graph.entries.keys().cloned().collect();
    let Some(DocEntry::Field(setting)) = graph.entries.get_mut(&node.name) else {
        diags.push(
            Diagnostic::error(
                codes::BAD_OVERRIDE,
                node.span,
                format!("the graph has no node `{}`", node.name),
            )
            .label("not defined")
            .maybe_help(suggest::hint(
                &node.name,
                &names.iter().map(String::as_str).collect::<Vec<_>>(),
            )),
        );
        return;
    };
    let arg = &rest[1];
    let ValueKind::Call(_, args) = &mut setting.value.kind else {
        diags.push(
            Diagnostic::error(
                codes::BAD_OVERRIDE,
                node.span,
                format!("node `{}` is not a call, it has no arguments", node.name),
            )
            .label("not a call"),
        );
        return;
    };
    match args
        .iter_mut()
        .find(|a| a.name.as_ref().is_some_and(|n| n.name == arg.name))
    {
        Some(a) => a.value = value.clone(),
        None => args.push(canc_grammar::ast::Arg {
            name: Some(arg.clone()),
            value: value.clone(),
        }),
    }
    if let Origin::Cli(_) = origin {
        setting.origin = origin;
    }
}
