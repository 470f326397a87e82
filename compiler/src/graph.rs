//! Checks of the `graph` and `objective` blocks at the level of names: every call names a
//! built-in op or a network, with the right inputs and keyword arguments; every reference names
//! a node, view or network; objective terms are losses. (Shapes and gradient flow are checked on
//! the loss graph, a later stage.)

use crate::check::Cx;
use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::doc::{DocBlock, DocEntry};
use crate::resolved::{RBlock, RValue};
use crate::schema::{self, Default, Input, OpKind, OpSchema, Ty};
use crate::suggest;
use crate::value;
use canc_grammar::ast::{Arg, Ident, Value, ValueKind};
use indexmap::IndexMap;
use std::collections::HashMap;

/// What each top-level node computes: the callee's name and whether it is a loss (`None` when
/// the callee is unknown, already reported).
pub type NodeKinds = IndexMap<String, (String, Option<OpKind>)>;

struct GraphCx<'n> {
    nodes: &'n NodeKinds,
    networks: &'n IndexMap<String, RBlock>,
    /// What `VIEW` and `NETWORK` inputs may name: declared views, checked networks.
    refs: value::Names,
}

/// The op schema a callee name stands for, and the network block if it is a network.
fn callee<'a>(
    name: &str,
    networks: &'a IndexMap<String, RBlock>,
) -> Option<(&'static OpSchema, Option<&'a RBlock>)> {
    if let Some(op) = schema::find_op(name) {
        return Some((op, None));
    }
    let net = networks.get(name)?;
    let mut ty = net.ty.as_deref()?;
    let mut target = net;
    if ty == "ema" {
        let src = net.get("source").and_then(RValue::as_str)?;
        target = networks.get(src)?;
        ty = target.ty.as_deref()?;
    }
    schema::network_signature(ty).map(|s| (s, Some(target)))
}

/// Checks the graph block; returns it resolved and the kind of each node.
pub(crate) fn check_graph(
    b: &DocBlock,
    networks: &IndexMap<String, RBlock>,
    cx: &mut Cx,
) -> (RBlock, NodeKinds) {
    let mut kinds: NodeKinds = IndexMap::new();
    for (name, e) in &b.entries {
        let DocEntry::Field(s) = e else {
            if let DocEntry::Block(inner) = e {
                cx.diags.push(
                    Diagnostic::error(
                        codes::TYPE_MISMATCH,
                        inner.kind.span,
                        "the graph holds `name = expression` entries, not blocks",
                    )
                    .label("a block")
                    .help(format!("write `{name} = op(...)`")),
                );
            }
            continue;
        };
        if schema::find_op(name).is_some() || networks.contains_key(name) {
            let what = if networks.contains_key(name) {
                "a network"
            } else {
                "a built-in operation"
            };
            cx.diags.push(
                Diagnostic::error(
                    codes::NAME_CLASH,
                    s.key.span,
                    format!("node `{name}` has the name of {what}"),
                )
                .label("name clash")
                .help(format!("rename the node, e.g. `{name}_out`")),
            );
        }
        match &s.value.kind {
            ValueKind::Call(f, _) => {
                let kind = callee(&f.name, networks).map(|(op, _)| op.kind);
                kinds.insert(name.clone(), (f.name.clone(), kind));
            }
            _ => {
                cx.diags.push(
                    Diagnostic::error(
                        codes::TYPE_MISMATCH,
                        s.value.span,
                        format!("node `{name}` must be an expression such as `op(...)`"),
                    )
                    .label("not an expression")
                    .note("graph nodes are calls of operations or networks; constants go in `let`"),
                );
            }
        }
    }
    let gcx = GraphCx {
        nodes: &kinds,
        networks,
        refs: value::Names {
            networks: networks.keys().cloned().collect(),
            views: cx.names.views.clone(),
        },
    };
    let mut fields = IndexMap::new();
    for (name, e) in &b.entries {
        let DocEntry::Field(s) = e else { continue };
        if let ValueKind::Call(f, args) = &s.value.kind {
            cx.record(format!("graph.{name}"), s.origin, s.value.span);
            if let Some(v) = check_call(f, args, s.value.span, &gcx, cx) {
                fields.insert(name.clone(), v);
            }
        }
    }
    let r = RBlock {
        kind: "graph".into(),
        name: None,
        ty: None,
        fields,
        children: vec![],
    };
    (r, kinds)
}

fn check_call(
    f: &Ident,
    args: &[Arg],
    span: canc_grammar::Span,
    g: &GraphCx,
    cx: &mut Cx,
) -> Option<RValue> {
    let Some((op, net)) = callee(&f.name, g.networks) else {
        if cx.broken.contains(&f.name) {
            // A declared network whose own block has errors, already reported.
            return None;
        }
        let mut cands: Vec<&str> = schema::OPS.iter().map(|o| o.name).collect();
        cands.extend(g.networks.keys().map(String::as_str));
        let mut d = Diagnostic::error(
            codes::UNKNOWN_OP,
            f.span,
            format!("`{}` is neither an operation nor a network", f.name),
        )
        .label("unknown operation")
        .maybe_help(
            suggest::did_you_mean(&f.name, cands.iter().copied())
                .map(|s| format!("did you mean `{s}`?")),
        );
        if matches!(f.name.as_str(), "masked" | "visible") {
            d = d.note(
                "`masked(m)` and `visible(m)` select patches in a loss's `on = ...` argument",
            );
        } else if matches!(f.name.as_str(), "uniform" | "loguniform" | "normal") {
            d = d.note("distributions are values of arguments such as `add_noise(x, sigma = uniform(0, 0.05))`");
        }
        cx.diags.push(d);
        return None;
    };
    let what = if net.is_some() {
        format!("network `{}`", f.name)
    } else {
        format!("`{}`", f.name)
    };
    let positional: Vec<&Value> = args
        .iter()
        .filter(|a| a.name.is_none())
        .map(|a| &a.value)
        .collect();
    let arity_ok = if op.variadic {
        !positional.is_empty()
    } else {
        positional.len() == op.inputs.len()
    };
    if !arity_ok {
        let expected = if op.variadic {
            "at least 1".to_string()
        } else {
            op.inputs.len().to_string()
        };
        let inputs: Vec<&str> = op.inputs.iter().map(|i| i.placeholder()).collect();
        cx.diags.push(
            Diagnostic::error(
                codes::ARITY,
                span,
                format!(
                    "{what} takes {expected} input{}, found {}",
                    if op.variadic || expected == "1" {
                        ""
                    } else {
                        "s"
                    },
                    positional.len()
                ),
            )
            .label("wrong number of inputs")
            .help(format!(
                "write `{}({}{})`",
                f.name,
                inputs.join(", "),
                if op.variadic { ", ..." } else { "" }
            )),
        );
    }
    let mut out: Vec<(Option<String>, RValue)> = Vec::new();
    for (i, v) in positional.iter().enumerate() {
        let input = if op.variadic {
            op.inputs[0]
        } else {
            op.inputs.get(i).copied().unwrap_or(Input::Tensor("x"))
        };
        let r = match input {
            Input::Tensor(_) => check_tensor(v, g, cx),
            Input::View => ident_ref(v, Ty::View, "view", g, cx),
            Input::Network => ident_ref(v, Ty::Network, "network", g, cx),
        };
        if let Some(r) = r {
            out.push((None, r));
        }
    }
    let mut seen: HashMap<&str, canc_grammar::Span> = HashMap::new();
    let mut kw: IndexMap<&str, RValue> = IndexMap::new();
    for a in args {
        let Some(k) = &a.name else { continue };
        if let Some(prev) = seen.insert(&k.name, k.span) {
            cx.diags.push(
                Diagnostic::error(
                    codes::DUPLICATE,
                    k.span,
                    format!("argument `{}` given twice", k.name),
                )
                .label("second time")
                .with_label(prev, "first time"),
            );
            continue;
        }
        let Some(field) = op.kwargs.iter().find(|x| x.name == k.name) else {
            let cands: Vec<&str> = op.kwargs.iter().map(|x| x.name).collect();
            let mut d = Diagnostic::error(
                codes::UNKNOWN_ARG,
                k.span,
                format!("{what} has no argument `{}`", k.name),
            )
            .label("unknown argument")
            .maybe_help(suggest::hint(&k.name, &cands));
            if cands.is_empty() {
                d = d.note(format!("{what} takes no keyword arguments"));
            }
            cx.diags.push(d);
            continue;
        };
        let r = match field.ty {
            Ty::Node | Ty::Optional(Ty::Node) if !matches!(a.value.kind, ValueKind::None) => {
                check_tensor(&a.value, g, cx)
            }
            Ty::Selection => check_selection(&a.value, g, cx),
            ty => match value::check(&a.value, &ty, &format!("`{}`", k.name), &cx.names) {
                Ok(v) => Some(v),
                Err(d) => {
                    cx.diags.push(d);
                    None
                }
            },
        };
        if let Some(r) = r {
            kw.insert(field.name, r);
        }
    }
    for field in op.kwargs {
        if kw.contains_key(field.name) {
            continue;
        }
        match field.default {
            Default::Required if !seen.contains_key(field.name) => {
                cx.diags.push(
                    Diagnostic::error(
                        codes::MISSING_ARG,
                        span,
                        format!("{what} needs `{}`", field.name),
                    )
                    .label(format!("`{}` missing", field.name))
                    .help(format!("add `{} = ...` ({})", field.name, field.doc)),
                );
            }
            Default::Lit(lit) => {
                kw.insert(
                    field.name,
                    crate::check::literal_default(lit, field, &cx.names),
                );
            }
            _ => {}
        }
    }
    if let Some(netb) = net {
        let written = seen.contains_key("cond");
        check_decoder_cond(f, netb, &kw, written, span, cx);
    }
    if f.name == "mask" {
        check_mask_source(&out, g, span, cx);
    }
    if f.name == "mask" {
        check_block_mask(&out, &kw, g, span, cx);
    }
    if f.name == "labels" && !cx.data.labels {
        cx.diags.push(
            Diagnostic::error(
                codes::NEEDS_LABELS,
                span,
                "the graph uses labels but the data loads none",
            )
            .label("labels needed here")
            .help("set `labels = true` in `data`, or use a labelled source"),
        );
    }
    for field in op.kwargs {
        if let Some(v) = kw.shift_remove(field.name) {
            out.push((Some(field.name.to_string()), v));
        }
    }
    Some(RValue::Call(f.name.clone(), out))
}

fn check_decoder_cond(
    f: &Ident,
    net: &RBlock,
    kw: &IndexMap<&str, RValue>,
    written: bool,
    span: canc_grammar::Span,
    cx: &mut Cx,
) {
    if net.ty.as_deref() != Some("vit_decoder") {
        return;
    }
    let conditioned = net.get("cond").and_then(RValue::as_str) == Some("sigma");
    let given = kw.get("cond").is_some_and(|v| *v != RValue::None);
    if conditioned && !given && !written {
        cx.diags.push(
            Diagnostic::error(
                codes::MISSING_ARG,
                span,
                format!(
                    "decoder `{}` is conditioned on sigma but gets no `cond`",
                    f.name
                ),
            )
            .label("`cond` missing")
            .help(
                "pass the noise level, e.g. `cond = n1.sigma`, or set `cond = none` on the network",
            ),
        );
    } else if !conditioned && given {
        cx.diags.push(
            Diagnostic::error(
                codes::INCONSISTENT,
                span,
                format!(
                    "decoder `{}` is not conditioned (cond = none) but gets `cond`",
                    f.name
                ),
            )
            .label("`cond` given")
            .help(format!(
                "set `cond = sigma` in `network {}`, or drop the argument",
                f.name
            )),
        );
    }
}

/// A mask is drawn over a ViT's patch grid.
fn check_mask_source(
    out: &[(Option<String>, RValue)],
    g: &GraphCx,
    span: canc_grammar::Span,
    cx: &mut Cx,
) {
    let Some((None, RValue::Ident(net))) = out.first() else {
        return;
    };
    let Some(ty) = callee(net, g.networks)
        .and_then(|(_, b)| b)
        .and_then(|b| b.ty.clone())
    else {
        return;
    };
    if ty != "vit" {
        cx.diags.push(
            Diagnostic::error(
                codes::INCONSISTENT,
                span,
                format!("`mask` needs a vit encoder, `{net}` is a `{ty}`"),
            )
            .label("no patch grid to mask")
            .help("pass the encoder whose patches are masked, e.g. `mask(encoder, ratio = 0.5)`"),
        );
    }
}

/// Block masking needs blocks that tile the encoder's patch grid.
fn check_block_mask(
    out: &[(Option<String>, RValue)],
    kw: &IndexMap<&str, RValue>,
    g: &GraphCx,
    span: canc_grammar::Span,
    cx: &mut Cx,
) {
    if kw.get("strategy").and_then(RValue::as_str) != Some("block") {
        return;
    }
    let Some(block) = kw.get("block").and_then(RValue::as_i64) else {
        return;
    };
    let Some((None, RValue::Ident(net))) = out.first() else {
        return;
    };
    let Some(enc) = callee(net, g.networks).and_then(|(_, b)| b) else {
        return;
    };
    let (Some(image), Some(patch)) = (
        enc.get("image").and_then(RValue::as_i64),
        enc.get("patch").and_then(RValue::as_i64),
    ) else {
        return;
    };
    if patch == 0 || image % patch != 0 {
        return;
    }
    let grid = image / patch;
    if grid % block != 0 {
        cx.diags.push(
            Diagnostic::error(codes::INCONSISTENT, span, format!("blocks of {block}x{block} patches do not tile the {grid}x{grid} patch grid of `{net}`"))
                .label("block size must divide the grid")
                .note(format!("the grid is image {image} / patch {patch} = {grid}"))
                .help(format!("use a block side that divides {grid}, or `strategy = random`")),
        );
    }
}

fn ident_ref(v: &Value, ty: Ty, noun: &str, g: &GraphCx, cx: &mut Cx) -> Option<RValue> {
    match value::check(v, &ty, noun, &g.refs) {
        Ok(r) => Some(r),
        Err(d) => {
            cx.diags.push(d);
            None
        }
    }
}

/// A tensor input: a node name, `node.output`, or a nested call.
fn check_tensor(v: &Value, g: &GraphCx, cx: &mut Cx) -> Option<RValue> {
    match &v.kind {
        ValueKind::Ident(name) => {
            if g.nodes.contains_key(name) {
                return Some(RValue::Ident(name.clone()));
            }
            let cands: Vec<&str> = g.nodes.keys().map(String::as_str).collect();
            let mut d = Diagnostic::error(
                codes::UNDEFINED_NODE,
                v.span,
                format!("no node named `{name}` in the graph"),
            )
            .label("undefined node")
            .maybe_help(
                suggest::did_you_mean(name, cands.iter().copied())
                    .map(|s| format!("did you mean `{s}`?")),
            );
            if g.networks.contains_key(name) {
                d = d.note(format!(
                    "`{name}` is a network: call it on an input, `{name}(x)`"
                ));
            } else if cx.names.views.contains(name) {
                d = d.note(format!("`{name}` is a view: draw it with `view({name})`"));
            }
            cx.diags.push(d);
            None
        }
        ValueKind::Path(parts) => {
            let node = &parts[0];
            let Some((callee_name, _)) = g.nodes.get(&node.name) else {
                return check_tensor(
                    &Value {
                        kind: ValueKind::Ident(node.name.clone()),
                        span: node.span,
                    },
                    g,
                    cx,
                );
            };
            let outputs = callee(callee_name, g.networks).map_or(&[][..], |(op, _)| op.outputs);
            let out = &parts[1];
            if parts.len() > 2 && outputs.contains(&out.name.as_str()) {
                cx.diags.push(
                    Diagnostic::error(
                        codes::UNKNOWN_OUTPUT,
                        parts[2].span,
                        format!(
                            "`{}.{}` is a tensor; it has no `{}`",
                            node.name, out.name, parts[2].name
                        ),
                    )
                    .label("outputs have no fields"),
                );
                return None;
            }
            if parts.len() == 2 && outputs.contains(&out.name.as_str()) {
                return Some(RValue::Output(node.name.clone(), out.name.clone()));
            }
            let mut d = Diagnostic::error(
                codes::UNKNOWN_OUTPUT,
                out.span,
                format!("`{}` has no output `{}`", node.name, out.name),
            )
            .label("unknown output")
            .maybe_help(suggest::hint(&out.name, outputs));
            if outputs.is_empty() {
                d = d.note(format!(
                    "`{}` (a `{callee_name}`) has a single output: write `{}`",
                    node.name, node.name
                ));
            }
            cx.diags.push(d);
            None
        }
        ValueKind::Call(f, args) => check_call(f, args, v.span, g, cx),
        // Undefined or cyclic, already reported by the variable pass.
        ValueKind::Var(_) => None,
        _ => {
            cx.diags.push(
                Diagnostic::error(
                    codes::TYPE_MISMATCH,
                    v.span,
                    "expected a tensor (a node name, `node.output` or an expression)",
                )
                .label("not a tensor"),
            );
            None
        }
    }
}

/// `all`, `masked(m)` or `visible(m)`.
fn check_selection(v: &Value, g: &GraphCx, cx: &mut Cx) -> Option<RValue> {
    match &v.kind {
        ValueKind::Ident(s) if s == "all" => Some(RValue::Ident("all".into())),
        ValueKind::Call(f, args) if f.name == "masked" || f.name == "visible" => {
            if args.len() != 1 || args[0].name.is_some() {
                cx.diags.push(
                    Diagnostic::error(
                        codes::ARITY,
                        v.span,
                        format!("`{}` takes one mask node", f.name),
                    )
                    .label(format!("expected `{}(m)`", f.name)),
                );
                return None;
            }
            let m = check_tensor(&args[0].value, g, cx)?;
            Some(RValue::Call(f.name.clone(), vec![(None, m)]))
        }
        ValueKind::Call(f, _) => {
            cx.diags.push(
                Diagnostic::error(
                    codes::UNKNOWN_VARIANT,
                    v.span,
                    format!("`{}` is not a selection", f.name),
                )
                .label("expected all, masked(m) or visible(m)")
                .maybe_help(suggest::hint(&f.name, &["all", "masked", "visible"])),
            );
            None
        }
        ValueKind::Ident(s) => {
            cx.diags.push(
                Diagnostic::error(
                    codes::UNKNOWN_VARIANT,
                    v.span,
                    format!("`{s}` is not a selection"),
                )
                .label("expected all, masked(m) or visible(m)")
                .maybe_help(
                    suggest::did_you_mean(s, ["all", "masked", "visible"]).map(|x| {
                        if x == "all" {
                            "did you mean `all`?".to_string()
                        } else {
                            format!("did you mean `{x}(MASK)`?")
                        }
                    }),
                ),
            );
            None
        }
        _ => {
            cx.diags.push(
                Diagnostic::error(
                    codes::TYPE_MISMATCH,
                    v.span,
                    "`on` expects `all`, `masked(m)` or `visible(m)`",
                )
                .label("not a selection"),
            );
            None
        }
    }
}

/// Checks the objective: each key names a loss node, each weight is a finite number >= 0.
pub(crate) fn check_objective(b: &DocBlock, nodes: &NodeKinds, cx: &mut Cx) -> RBlock {
    let mut fields = IndexMap::new();
    for (name, e) in &b.entries {
        let DocEntry::Field(s) = e else {
            if let DocEntry::Block(inner) = e {
                cx.diags.push(
                    Diagnostic::error(
                        codes::TYPE_MISMATCH,
                        inner.kind.span,
                        "the objective holds `node = weight` entries, not blocks",
                    )
                    .label("a block"),
                );
            }
            continue;
        };
        match nodes.get(name) {
            None => {
                let losses: Vec<&str> = nodes
                    .iter()
                    .filter(|(_, (_, k))| *k == Some(OpKind::Loss))
                    .map(|(n, _)| n.as_str())
                    .collect();
                cx.diags.push(
                    Diagnostic::error(
                        codes::UNDEFINED_NODE,
                        s.key.span,
                        format!("objective term `{name}` names no graph node"),
                    )
                    .label("undefined loss")
                    .maybe_help(suggest::hint(name, &losses)),
                );
            }
            Some((f, Some(OpKind::Tensor))) => {
                cx.diags.push(
                    Diagnostic::error(codes::NOT_A_LOSS, s.key.span, format!("`{name}` is computed by `{f}`, not a loss"))
                        .label("not a loss")
                        .note("losses are infonce, infonce_qk, supcon, mse, l1, cosine, or mean/sum of losses"),
                );
            }
            Some(_) => {}
        }
        let w = match value::check(
            &s.value,
            &schema::NONNEG_FLOAT,
            &format!("weight of `{name}`"),
            &cx.names,
        ) {
            Ok(v) => v,
            Err(mut d) => {
                if d.code == codes::OUT_OF_RANGE {
                    d = d.help("weights must be >= 0; to drop a term, write `name = none`");
                }
                cx.diags.push(d);
                continue;
            }
        };
        if w.as_f64() == Some(0.0) {
            cx.diags.push(
                Diagnostic::error(
                    codes::ZERO_WEIGHT,
                    s.value.span,
                    format!("term `{name}` has weight 0"),
                )
                .label("trains nothing")
                .help(format!(
                    "remove it with `{name} = none` (it is still computed with weight 0)"
                )),
            );
        }
        cx.record(format!("objective.{name}"), s.origin, s.value.span);
        fields.insert(name.clone(), w);
    }
    if b.entries.is_empty() {
        cx.diags.push(
            Diagnostic::error(
                codes::NO_OBJECTIVE,
                b.header_span(),
                "the objective has no terms",
            )
            .label("nothing to train")
            .help("add `loss_node = weight` entries"),
        );
    }
    RBlock {
        kind: "objective".into(),
        name: None,
        ty: None,
        fields,
        children: vec![],
    }
}
