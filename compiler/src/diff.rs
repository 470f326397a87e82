//! Semantic diff of two compiled specs: what changed in values, wiring, losses, parameters and
//! FLOPs, not in text.
//!
//! Values come from the resolved specs (every key with its default filled, so a default that
//! one spec states and the other leaves implicit is no difference), flattened to the dotted
//! paths `--set` uses (`network.encoder.dim`, `view.simclr.hflip.p`); wiring, roles, types and
//! derived numbers come from the plans. A removed block or graph node is reported once, not
//! key by key. Spec names, sweep variant names and file paths are not compared.

use crate::ir::{MaskStrategy, Op, PoolMode, Selection};
use crate::plan::{NetworkPlan, Plan, Role, Step};
use crate::resolved::{RBlock, RValue, ResolvedSpec};
use indexmap::IndexMap;
use std::fmt::Write;

/// Longest expression or block summary shown before it is cut with `…`.
const MAX_EXPR: usize = 72;

/// The differences between `a` and `b`, grouped in sections with one change per line (empty if
/// they compile to the same plan and no resolved value differs).
pub fn diff(a: (&ResolvedSpec, &Plan), b: (&ResolvedSpec, &Plan)) -> String {
    let (sa, pa) = a;
    let (sb, pb) = b;
    let mut sections = vec![
        ("lets", lets(sa, sb)),
        ("objective", objective(pa, pb)),
        ("graph", graph(sa, pa, sb, pb)),
        ("networks", networks(sa, pa, sb, pb)),
        ("data & views", data_views(sa, pa, sb, pb)),
        ("optimisation", optimisation(sa, pa, sb, pb)),
        ("eval", eval(sa, sb)),
    ];
    if sections.iter().all(|(_, lines)| lines.is_empty()) {
        if same_plan(pa, pb) {
            return String::new();
        }
        // Every plan field derives from a value compared above; this is a safety net.
        sections.push((
            "plan",
            vec![Line::change("plan", "differs in details not itemised here")],
        ));
    }
    sections.push(("cost", cost(pa, pb)));
    render(&sections)
}

/// One reported difference.
enum Line {
    /// `path  what` (paths are aligned within a section).
    Change(String, String),
    /// `+ what`.
    Added(String),
    /// `- what`.
    Removed(String),
}

impl Line {
    fn change(path: impl Into<String>, what: impl Into<String>) -> Line {
        Line::Change(path.into(), what.into())
    }
}

fn render(sections: &[(&str, Vec<Line>)]) -> String {
    let mut out = String::new();
    for (title, lines) in sections.iter().filter(|(_, l)| !l.is_empty()) {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(title);
        out.push('\n');
        let width = lines
            .iter()
            .map(|l| match l {
                Line::Change(p, _) => p.chars().count(),
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        for line in lines {
            // Writing to a String cannot fail.
            let _ = match line {
                Line::Change(p, w) => writeln!(out, "  {p:<width$}  {w}"),
                Line::Added(w) => writeln!(out, "  + {w}"),
                Line::Removed(w) => writeln!(out, "  - {w}"),
            };
        }
    }
    out
}

/// True if the plans are equal apart from the spec and variant names.
fn same_plan(a: &Plan, b: &Plan) -> bool {
    let strip = |p: &Plan| Plan {
        spec: String::new(),
        variant: None,
        ..p.clone()
    };
    strip(a) == strip(b)
}

/// The keys of `a` in order, then those only in `b` in theirs.
fn union<'a, V>(a: &'a IndexMap<String, V>, b: &'a IndexMap<String, V>) -> Vec<&'a str> {
    let mut keys: Vec<&str> = a.keys().map(String::as_str).collect();
    keys.extend(b.keys().map(String::as_str).filter(|k| !a.contains_key(*k)));
    keys
}

/// `old → new`.
fn arrow(a: impl AsRef<str>, b: impl AsRef<str>) -> String {
    format!("{} → {}", a.as_ref(), b.as_ref())
}

// ---- values ---------------------------------------------------------------------------------

/// A resolved value in the spec's syntax: `0.03`, `0.35..1.0`, `5 epochs`, `[0.9, 0.95]`,
/// `uniform(0.0, 0.05)`, `n1.sigma`, `none`.
pub fn format_value(v: &RValue) -> String {
    match v {
        RValue::Int(i) => i.to_string(),
        RValue::Float(x) => float(*x),
        RValue::Bool(b) => b.to_string(),
        RValue::Str(s) => format!("{s:?}"),
        RValue::Ident(s) => s.clone(),
        RValue::Quantity(x, unit) => {
            let n = if x.fract() == 0.0 && x.abs() < 1e15 {
                format!("{x:.0}")
            } else {
                float(*x)
            };
            match unit {
                canc_grammar::ast::Unit::Percent => format!("{n}%"),
                u => format!("{n} {}", u.as_str()),
            }
        }
        RValue::Range(lo, hi) => format!("{}..{}", float(*lo), float(*hi)),
        RValue::List(items) => {
            let items: Vec<String> = items.iter().map(format_value).collect();
            format!("[{}]", items.join(", "))
        }
        RValue::Call(name, args) => {
            let args: Vec<String> = args
                .iter()
                .map(|(k, v)| match k {
                    Some(k) => format!("{k} = {}", format_value(v)),
                    None => format_value(v),
                })
                .collect();
            format!("{name}({})", args.join(", "))
        }
        RValue::Output(node, output) => format!("{node}.{output}"),
        RValue::None => "none".into(),
    }
}

/// A float as the spec writes it: shortest round-trip form, `1.0`, `0.00025`, `1e-6`.
fn float(x: f64) -> String {
    format!("{x:?}")
}

/// A derived float rounded to 6 significant digits (so `0.03 + 0.67` prints `0.7`).
fn derived(x: f64) -> String {
    let r = format!("{x:.5e}").parse::<f64>().unwrap_or(x);
    float(r)
}

/// `s`, cut to `MAX_EXPR` characters with `…`.
fn clip(s: String) -> String {
    clip_to(s, MAX_EXPR)
}

/// `s`, cut to `max` characters with `…`.
fn clip_to(s: String, max: usize) -> String {
    if s.chars().count() <= max {
        s
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

fn value(v: &RValue) -> String {
    clip(format_value(v))
}

/// An integer with thousands separators: `61,760`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A count with three significant digits and a unit: `3.19 M`, `457 K`, `1.23 G`.
fn human(x: f64) -> String {
    const UNITS: [(f64, &str); 4] = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")];
    for (scale, unit) in UNITS {
        if x >= scale {
            let v = x / scale;
            let decimals = if v >= 100.0 {
                0
            } else if v >= 10.0 {
                1
            } else {
                2
            };
            return format!("{v:.decimals$} {unit}");
        }
    }
    format!("{x:.0}")
}

/// A signed change, with a real minus sign: `+0`, `−61,760`.
fn delta(a: u64, b: u64) -> String {
    if b >= a {
        format!("+{}", grouped(b - a))
    } else {
        format!("−{}", grouped(a - b))
    }
}

/// The relative change from `a` to `b`: `−12.1%`, `+3.0%` (`None` if `a` is 0).
fn percent(a: f64, b: f64) -> Option<String> {
    if a == 0.0 {
        return None;
    }
    if a == b {
        return Some("+0%".into());
    }
    let r = (b - a) / a * 100.0;
    // Small changes keep two significant digits instead of rounding to 0.0%.
    let s = match r.abs() {
        m if m >= 0.1 => format!("{m:.1}%"),
        m if m >= 1e-4 => {
            let digits = (1 - m.log10().floor() as i32).max(0) as usize;
            format!("{m:.digits$}%")
        }
        _ => "0.0001%".to_string(),
    };
    let s = if r.abs() < 1e-4 { format!("<{s}") } else { s };
    Some(if r < 0.0 {
        format!("−{s}")
    } else {
        format!("+{s}")
    })
}

// ---- blocks ---------------------------------------------------------------------------------

/// `label { k = v, … }`.
fn block_summary(label: &str, b: &RBlock) -> String {
    let fields: Vec<String> = b
        .fields
        .iter()
        .map(|(k, v)| format!("{k} = {}", format_value(v)))
        .collect();
    if fields.is_empty() {
        label.to_string()
    } else {
        clip(format!("{label} {{ {} }}", fields.join(", ")))
    }
}

fn fields_diff(
    prefix: &str,
    a: &IndexMap<String, RValue>,
    b: &IndexMap<String, RValue>,
    out: &mut Vec<Line>,
) {
    for k in union(a, b) {
        let path = format!("{prefix}.{k}");
        match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) if x != y => out.push(Line::change(path, arrow(value(x), value(y)))),
            (Some(x), None) => out.push(Line::Removed(format!("{path} = {}", value(x)))),
            (None, Some(y)) => out.push(Line::Added(format!("{path} = {}", value(y)))),
            _ => {}
        }
    }
}

/// Children keyed by kind, `kind#2` for the second of a kind, in order.
fn keyed(children: &[RBlock]) -> IndexMap<String, &RBlock> {
    let mut seen: IndexMap<&str, usize> = IndexMap::new();
    let mut out = IndexMap::new();
    for c in children {
        let n = seen.entry(c.kind.as_str()).or_insert(0);
        *n += 1;
        let key = if *n == 1 {
            c.kind.clone()
        } else {
            format!("{}#{n}", c.kind)
        };
        out.insert(key, c);
    }
    out
}

/// Type, fields and nested blocks (augmentations, eval protocols) of two blocks at `prefix`.
/// When the type changes, only the keys both types have are compared: the others follow from
/// the type.
fn block_diff(prefix: &str, a: &RBlock, b: &RBlock, out: &mut Vec<Line>) {
    if a.ty == b.ty {
        fields_diff(prefix, &a.fields, &b.fields, out);
    } else {
        let ty = |t: &Option<String>| t.clone().unwrap_or_else(|| "none".into());
        out.push(Line::change(
            prefix,
            format!("type {}", arrow(ty(&a.ty), ty(&b.ty))),
        ));
        let common = |x: &RBlock, y: &RBlock| -> IndexMap<String, RValue> {
            x.fields
                .iter()
                .filter(|(k, _)| y.fields.contains_key(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        fields_diff(prefix, &common(a, b), &common(b, a), out);
    }
    let (ka, kb) = (keyed(&a.children), keyed(&b.children));
    for k in union(&ka, &kb) {
        let path = format!("{prefix}.{k}");
        match (ka.get(k), kb.get(k)) {
            (Some(x), Some(y)) => block_diff(&path, x, y, out),
            (Some(x), None) => out.push(Line::Removed(format!(
                "{prefix}.{} removed",
                block_summary(k, x)
            ))),
            (None, Some(y)) => out.push(Line::Added(format!(
                "{prefix}.{} added",
                block_summary(k, y)
            ))),
            (None, None) => {}
        }
    }
    let common = |from: &IndexMap<String, &RBlock>, other: &IndexMap<String, &RBlock>| {
        from.keys()
            .filter(|k| other.contains_key(*k))
            .cloned()
            .collect::<Vec<_>>()
    };
    let (oa, ob) = (common(&ka, &kb), common(&kb, &ka));
    if oa != ob {
        let names =
            |m: &IndexMap<String, &RBlock>| m.keys().cloned().collect::<Vec<_>>().join(", ");
        out.push(Line::change(
            prefix,
            format!("order {}", arrow(names(&ka), names(&kb))),
        ));
    }
}

/// An unnamed block present in either spec.
fn block_pair(kind: &str, a: Option<&RBlock>, b: Option<&RBlock>, out: &mut Vec<Line>) {
    match (a, b) {
        (Some(x), Some(y)) => block_diff(kind, x, y, out),
        (Some(_), None) => out.push(Line::Removed(format!("{kind} block removed"))),
        (None, Some(y)) => out.push(Line::Added(format!("{} added", block_summary(kind, y)))),
        (None, None) => {}
    }
}

/// Named blocks of `kind`, by name.
fn named<'a>(s: &'a ResolvedSpec, kind: &str) -> IndexMap<String, &'a RBlock> {
    s.blocks
        .iter()
        .filter(|b| b.kind == kind)
        .filter_map(|b| Some((b.name.clone()?, b)))
        .collect()
}

// ---- sections -------------------------------------------------------------------------------

fn lets(a: &ResolvedSpec, b: &ResolvedSpec) -> Vec<Line> {
    let mut out = Vec::new();
    for k in union(&a.lets, &b.lets) {
        match (a.lets.get(k), b.lets.get(k)) {
            (Some(x), Some(y)) if x != y => {
                out.push(Line::change(format!("let {k}"), arrow(value(x), value(y))));
            }
            (Some(x), None) => out.push(Line::Removed(format!("let {k} = {}", value(x)))),
            (None, Some(y)) => out.push(Line::Added(format!("let {k} = {}", value(y)))),
            _ => {}
        }
    }
    out
}

fn objective(a: &Plan, b: &Plan) -> Vec<Line> {
    let terms = |p: &Plan| -> IndexMap<String, f64> { p.objective.terms.iter().cloned().collect() };
    let (ta, tb) = (terms(a), terms(b));
    let mut out = Vec::new();
    for k in union(&ta, &tb) {
        match (ta.get(k), tb.get(k)) {
            (Some(x), Some(y)) if x != y => {
                out.push(Line::change(
                    format!("objective.{k}"),
                    arrow(float(*x), float(*y)),
                ));
            }
            (Some(x), None) => out.push(Line::Removed(format!(
                "loss term {k} (weight {}) removed",
                float(*x)
            ))),
            (None, Some(y)) => out.push(Line::Added(format!(
                "loss term {k} (weight {}) added",
                float(*y)
            ))),
            _ => {}
        }
    }
    let (wa, wb) = (
        derived(a.objective.weight_sum),
        derived(b.objective.weight_sum),
    );
    if wa != wb {
        out.push(Line::change("weight sum", arrow(wa, wb)));
    }
    out
}

/// The graph's node expressions (a node set to `none` is absent).
fn graph_nodes(s: &ResolvedSpec) -> IndexMap<String, RValue> {
    s.block("graph")
        .map(|g| {
            g.fields
                .iter()
                .filter(|(_, v)| **v != RValue::None)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn graph(sa: &ResolvedSpec, pa: &Plan, sb: &ResolvedSpec, pb: &Plan) -> Vec<Line> {
    let (ga, gb) = (graph_nodes(sa), graph_nodes(sb));
    let mut out = Vec::new();
    for name in union(&ga, &gb) {
        let path = format!("graph.{name}");
        match (ga.get(name), gb.get(name)) {
            (Some(x), None) => {
                out.push(Line::Removed(format!("node {name} = {}", value(x))));
            }
            (None, Some(y)) => {
                let unused = if pb.step(name).is_none() {
                    " (unused: not computed)"
                } else {
                    ""
                };
                out.push(Line::Added(format!("node {name} = {}{unused}", value(y))));
            }
            (Some(x), Some(y)) => {
                if x != y {
                    expr_diff(&path, x, y, &mut out);
                }
                match (pa.step(name).is_some(), pb.step(name).is_some()) {
                    (true, false) => out.push(Line::change(path, "no longer computed (unused)")),
                    (false, true) => out.push(Line::change(path, "now computed (was unused)")),
                    (true, true) if x == y => steps_diff(name, pa, pb, &mut out),
                    _ => {}
                }
            }
            (None, None) => {}
        }
    }
    let order = |p: &Plan, q: &Plan| -> Vec<String> {
        p.steps
            .iter()
            .filter(|s| q.step(&s.name).is_some())
            .map(|s| s.name.clone())
            .collect()
    };
    let (ga, gb) = (common_groups(pa, pa, pb), common_groups(pb, pa, pb));
    for (from, to, change) in [
        (&ga, &gb, "one batched call → one call each"),
        (&gb, &ga, "one call each → one batched call"),
    ] {
        for g in from.iter().filter(|g| !to.contains(g)) {
            out.push(Line::change(
                "graph",
                format!("calls {}: {change}", g.join(" + ")),
            ));
        }
    }
    if ga == gb && order(pa, pb) != order(pb, pa) {
        out.push(Line::change("graph", "execution order changed"));
    }
    out
}

/// What changed in one node's expression: its arguments one by one when it calls the same
/// function with as many positional arguments, else the whole expression.
fn expr_diff(path: &str, x: &RValue, y: &RValue, out: &mut Vec<Line>) {
    let (RValue::Call(f, xa), RValue::Call(g, ya)) = (x, y) else {
        out.push(Line::change(path, arrow(value(x), value(y))));
        return;
    };
    let positional = |args: &[(Option<String>, RValue)]| -> Vec<RValue> {
        args.iter()
            .filter(|(k, _)| k.is_none())
            .map(|(_, v)| v.clone())
            .collect()
    };
    let (px, py) = (positional(xa), positional(ya));
    if f != g || px.len() != py.len() {
        // Both sides on one line: each gets half the room.
        let half = |v: &RValue| clip_to(format_value(v), MAX_EXPR / 2 + 8);
        out.push(Line::change(path, arrow(half(x), half(y))));
        return;
    }
    for (i, (u, v)) in px.iter().zip(&py).enumerate() {
        if u != v {
            out.push(Line::change(
                path,
                format!("{f} argument {} {}", i + 1, arrow(value(u), value(v))),
            ));
        }
    }
    let keywords = |args: &[(Option<String>, RValue)]| -> IndexMap<String, RValue> {
        args.iter()
            .filter_map(|(k, v)| Some((k.clone()?, v.clone())))
            .collect()
    };
    let (kx, ky) = (keywords(xa), keywords(ya));
    for k in union(&kx, &ky) {
        let what = match (kx.get(k), ky.get(k)) {
            (Some(u), Some(v)) if u != v => format!("{f} {k} {}", arrow(value(u), value(v))),
            (Some(u), None) => format!("{f} {k} = {} removed", value(u)),
            (None, Some(v)) => format!("{f} {k} = {} added", value(v)),
            _ => continue,
        };
        out.push(Line::change(path, what));
    }
}

/// The steps of node `name` (itself and its nested sub-expressions `name/…`).
fn group<'a>(p: &'a Plan, name: &str) -> IndexMap<String, &'a Step> {
    p.steps
        .iter()
        .filter(|s| {
            s.name == name
                || s.name
                    .strip_prefix(name)
                    .is_some_and(|r| r.starts_with('/'))
        })
        .map(|s| (s.name.clone(), s))
        .collect()
}

/// Plan-level changes of a node whose expression is unchanged: a call that now uses EMA
/// weights, a type that follows an upstream change, gradient that no longer reaches it.
fn steps_diff(name: &str, pa: &Plan, pb: &Plan, out: &mut Vec<Line>) {
    let (ga, gb) = (group(pa, name), group(pb, name));
    for s in union(&ga, &gb) {
        let path = format!("graph.{s}");
        let (x, y) = match (ga.get(s), gb.get(s)) {
            (Some(x), Some(y)) => (x, y),
            (Some(x), None) => {
                out.push(Line::Removed(format!("step {s} = {}", op_text(&x.op))));
                continue;
            }
            (None, Some(y)) => {
                out.push(Line::Added(format!("step {s} = {}", op_text(&y.op))));
                continue;
            }
            (None, None) => continue,
        };
        if x.op != y.op {
            out.push(Line::change(
                &path,
                format!("op {}", arrow(op_text(&x.op), op_text(&y.op))),
            ));
        }
        if x.inputs != y.inputs {
            let inputs = |s: &Step| {
                s.inputs
                    .iter()
                    .map(|i| match i.port {
                        crate::ir::Port::Arg(_) => i.value.clone(),
                        crate::ir::Port::Kw(k) => format!("{k} = {}", i.value),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            out.push(Line::change(
                &path,
                format!("inputs {}", arrow(inputs(x), inputs(y))),
            ));
        }
        if x.out != y.out {
            out.push(Line::change(
                &path,
                format!("type {}", arrow(x.out.to_string(), y.out.to_string())),
            ));
        }
        // Gradient flags change along a whole branch: report them on the named node only.
        if x.grad != y.grad && s == name {
            let what = if y.grad {
                "now tracks gradient"
            } else {
                "no longer tracks gradient"
            };
            out.push(Line::change(&path, what));
        }
    }
}

/// An op in the spec's call syntax; a network call by its network's name.
fn op_text(op: &Op) -> String {
    let on = |s: &Selection| match s {
        Selection::All => "all",
        Selection::Masked => "masked",
        Selection::Visible => "visible",
    };
    match op {
        Op::View { view } => format!("view({view})"),
        Op::AddNoise { sigma } => format!("add_noise(sigma = {sigma})"),
        Op::Patchify { patch } => format!("patchify(patch = {patch})"),
        Op::PatchNorm { eps } => format!("patch_norm(eps = {})", float(*eps)),
        Op::Mask {
            network,
            ratio,
            strategy,
            block,
        } => {
            let strategy = match strategy {
                MaskStrategy::Random => "random",
                MaskStrategy::Block => "block",
            };
            format!(
                "mask({network}, ratio = {}, strategy = {strategy}, block = {block})",
                float(*ratio)
            )
        }
        Op::Pool { mode } => {
            let mode = match mode {
                PoolMode::Mean => "mean",
                PoolMode::MeanAll => "mean_all",
                PoolMode::Cls => "cls",
            };
            format!("pool(mode = {mode})")
        }
        Op::Call {
            network,
            weights,
            ema,
            ..
        } => {
            if *ema {
                format!("{network} (EMA of {weights})")
            } else if network != weights {
                format!("{network} (weights of {weights})")
            } else {
                network.clone()
            }
        }
        Op::InfoNce {
            temperature,
            sum_views,
        } => format!(
            "infonce(temperature = {}, reduction = {})",
            float(*temperature),
            if *sum_views { "sum_views" } else { "mean" }
        ),
        Op::InfoNceQk {
            temperature,
            scale_2tau,
        } => format!(
            "infonce_qk(temperature = {}, scale_2tau = {scale_2tau})",
            float(*temperature)
        ),
        Op::SupCon {
            temperature,
            base_temperature,
        } => format!(
            "supcon(temperature = {}, base_temperature = {})",
            float(*temperature),
            float(*base_temperature)
        ),
        Op::Mse { on: s } | Op::L1 { on: s } => format!("{}(on = {})", op.name(), on(s)),
        Op::Labels | Op::StopGrad | Op::L2Norm | Op::Cosine | Op::Mean | Op::Sum => {
            op.name().to_string()
        }
    }
}

fn role_text(n: &NetworkPlan) -> String {
    match &n.role {
        Role::Trained => "trained".into(),
        Role::Untrained => "untrained (no loss reaches it)".into(),
        Role::Ema { source, .. } => format!("EMA of {source}"),
    }
}

/// `mlp`, `ema of encoder`.
fn net_type(b: &RBlock) -> String {
    let ty = b.ty.clone().unwrap_or_default();
    match b.get("source").and_then(RValue::as_str) {
        Some(src) if ty == "ema" => format!("ema of {src}"),
        _ => ty,
    }
}

fn networks(sa: &ResolvedSpec, pa: &Plan, sb: &ResolvedSpec, pb: &Plan) -> Vec<Line> {
    let (na, nb) = (named(sa, "network"), named(sb, "network"));
    let mut out = Vec::new();
    for name in union(&na, &nb) {
        let path = format!("network.{name}");
        match (na.get(name), nb.get(name)) {
            (Some(x), None) => {
                out.push(Line::Removed(format!(
                    "network {name}: {} removed",
                    net_type(x)
                )));
            }
            (None, Some(y)) => {
                let role = pb.network(name).map_or_else(|| "unused".into(), role_text);
                out.push(Line::Added(format!(
                    "network {name}: {} added ({role})",
                    net_type(y)
                )));
            }
            (Some(x), Some(y)) => {
                block_diff(&path, x, y, &mut out);
                match (pa.network(name), pb.network(name)) {
                    (Some(_), None) => out.push(Line::change(path, "no longer used")),
                    (None, Some(q)) => {
                        out.push(Line::change(path, format!("now used ({})", role_text(q))));
                    }
                    (Some(p), Some(q)) => {
                        let (rp, rq) = (role_text(p), role_text(q));
                        if rp != rq {
                            out.push(Line::change(&path, format!("role {}", arrow(rp, rq))));
                        }
                        if p.input != q.input {
                            let fact = |n: &NetworkPlan| {
                                n.input.as_ref().map_or("none".into(), ToString::to_string)
                            };
                            out.push(Line::change(
                                &path,
                                format!("input {}", arrow(fact(p), fact(q))),
                            ));
                        }
                    }
                    (None, None) => {}
                }
            }
            (None, None) => {}
        }
    }
    out
}

fn data_views(sa: &ResolvedSpec, pa: &Plan, sb: &ResolvedSpec, pb: &Plan) -> Vec<Line> {
    let mut out = Vec::new();
    block_pair("data", sa.block("data"), sb.block("data"), &mut out);
    let (da, db) = (&pa.data, &pb.data);
    let image =
        |d: &crate::plan::DataPlan| format!("{}×{}×{}", d.channels, d.image_size, d.image_size);
    if image(da) != image(db) {
        out.push(Line::change("image (c×h×w)", arrow(image(da), image(db))));
    }
    if da.images != db.images {
        let n = |i: Option<u64>| i.map_or("unknown".into(), grouped);
        out.push(Line::change(
            "images/epoch",
            arrow(n(da.images), n(db.images)),
        ));
    }
    let (va, vb) = (named(sa, "view"), named(sb, "view"));
    let used = |p: &Plan, v: &str| p.views.iter().any(|x| x.name == v);
    for name in union(&va, &vb) {
        let path = format!("view.{name}");
        match (va.get(name), vb.get(name)) {
            (Some(_), None) => out.push(Line::Removed(format!("view {name} removed"))),
            (None, Some(y)) => {
                let kinds: Vec<&str> = y.children.iter().map(|c| c.kind.as_str()).collect();
                out.push(Line::Added(format!(
                    "view {name} = {} added",
                    clip(kinds.join(" → "))
                )));
            }
            (Some(x), Some(y)) => {
                block_diff(&path, x, y, &mut out);
                match (used(pa, name), used(pb, name)) {
                    (true, false) => out.push(Line::change(path, "no longer used")),
                    (false, true) => out.push(Line::change(path, "now used")),
                    _ => {}
                }
            }
            (None, None) => {}
        }
    }
    out
}

fn optimisation(sa: &ResolvedSpec, pa: &Plan, sb: &ResolvedSpec, pb: &Plan) -> Vec<Line> {
    let mut out = Vec::new();
    for kind in ["optimizer", "schedule", "train"] {
        block_pair(kind, sa.block(kind), sb.block(kind), &mut out);
    }
    let (oa, ob) = (&pa.optim, &pb.optim);
    let (la, lb) = (derived(oa.effective_lr), derived(ob.effective_lr));
    if la != lb {
        out.push(Line::change("effective lr", arrow(la, lb)));
    }
    let count = |n: Option<u64>| n.map_or("unknown".into(), grouped);
    for (label, x, y) in [
        ("steps/epoch", oa.steps_per_epoch, ob.steps_per_epoch),
        ("total steps", oa.total_steps, ob.total_steps),
        ("warm-up steps", oa.warmup_steps, ob.warmup_steps),
    ] {
        if x != y {
            out.push(Line::change(label, arrow(count(x), count(y))));
        }
    }
    out
}

fn eval(sa: &ResolvedSpec, sb: &ResolvedSpec) -> Vec<Line> {
    let mut out = Vec::new();
    block_pair("eval", sa.block("eval"), sb.block("eval"), &mut out);
    out
}

fn cost(pa: &Plan, pb: &Plan) -> Vec<Line> {
    let params = |p: &Plan| -> IndexMap<String, u64> {
        p.networks
            .iter()
            .map(|n| (n.name.clone(), n.params.total()))
            .collect()
    };
    let (ca, cb) = (params(pa), params(pb));
    let mut out = Vec::new();
    let line = |x: u64, y: u64| {
        let (hx, hy) = (human(x as f64), human(y as f64));
        format!("{} ({})", arrow(hx, hy), delta(x, y))
    };
    for name in union(&ca, &cb) {
        let (x, y) = (
            ca.get(name).copied().unwrap_or(0),
            cb.get(name).copied().unwrap_or(0),
        );
        if x != y {
            out.push(Line::change(format!("params {name}"), line(x, y)));
        }
    }
    let (ta, tb): (u64, u64) = (ca.values().sum(), cb.values().sum());
    out.push(Line::change("params total", line(ta, tb)));
    let (fa, fb) = (
        crate::cost::step_cost(pa).train_flops_per_image(),
        crate::cost::step_cost(pb).train_flops_per_image(),
    );
    let change = percent(fa, fb).map_or_else(String::new, |p| format!(" ({p})"));
    out.push(Line::change(
        "train FLOPs/image",
        format!("{}{change}", arrow(human(fa), human(fb))),
    ));
    out
}

/// `p`'s batch groups whose calls both plans compute (a removed call is reported as removed).
fn common_groups<'a>(p: &'a Plan, pa: &Plan, pb: &Plan) -> Vec<Vec<&'a str>> {
    p.batch_groups()
        .into_iter()
        .filter(|g| {
            g.iter()
                .all(|n| pa.step(n).is_some() && pb.step(n).is_some())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_in_spec_syntax() {
        let dist = RValue::Call(
            "uniform".into(),
            vec![(None, RValue::Float(0.0)), (None, RValue::Float(0.05))],
        );
        assert_eq!(format_value(&dist), "uniform(0.0, 0.05)");
        assert_eq!(format_value(&RValue::Range(0.35, 1.0)), "0.35..1.0");
        assert_eq!(
            format_value(&RValue::Quantity(5.0, canc_grammar::ast::Unit::Epochs)),
            "5 epochs"
        );
        assert_eq!(
            format_value(&RValue::Quantity(50.0, canc_grammar::ast::Unit::Percent)),
            "50%"
        );
        assert_eq!(format_value(&RValue::Float(1e-6)), "1e-6");
        assert_eq!(format_value(&RValue::Str("a b".into())), "\"a b\"");
        assert_eq!(
            format_value(&RValue::List(vec![RValue::Float(0.9), RValue::Float(0.95)])),
            "[0.9, 0.95]"
        );
        let sel = RValue::Call(
            "mse".into(),
            vec![
                (None, RValue::Ident("y1".into())),
                (
                    Some("on".into()),
                    RValue::Output("n1".into(), "noise".into()),
                ),
            ],
        );
        assert_eq!(format_value(&sel), "mse(y1, on = n1.noise)");
        assert_eq!(format_value(&RValue::None), "none");
    }

    #[test]
    fn numbers() {
        assert_eq!(grouped(61_760), "61,760");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000_000), "1,000,000");
        assert_eq!(human(3_191_504.0), "3.19 M");
        assert_eq!(human(456_720.0), "457 K");
        assert_eq!(human(61_760.0), "61.8 K");
        assert_eq!(human(1.234e9), "1.23 G");
        assert_eq!(human(512.0), "512");
        assert_eq!(delta(10, 3), "−7");
        assert_eq!(delta(3, 3), "+0");
        assert_eq!(percent(1.0, 0.879).as_deref(), Some("−12.1%"));
        assert_eq!(percent(0.0, 1.0), None);
        assert_eq!(percent(1.0, 1.0).as_deref(), Some("+0%"));
        // 1 → 0.99966: −0.034 %, two significant digits.
        assert_eq!(percent(1.0, 0.99966).as_deref(), Some("−0.034%"));
        assert_eq!(percent(1.0, 1.0 + 1e-9).as_deref(), Some("+<0.0001%"));
        // 0.03 + 0.67 = 0.7000000000000001 in binary floating point.
        assert_eq!(derived(0.03 + 0.67), "0.7");
        assert_eq!(clip("x".repeat(100)).chars().count(), MAX_EXPR);
    }
}
