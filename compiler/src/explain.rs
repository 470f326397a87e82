//! `canc explain SPEC`: every resolved value with where it came from (a default, a file and
//! line, `--set`, or derived with its formula), then the numbers the plan derives from them
//! (steps, warm-up, effective learning rate, mask counts, EMA momentum, objective weights,
//! parameter counts) with their arithmetic.
//!
//! Origins come from [`ResolvedSpec::provenance`]. The files of the `extends` chain are read
//! again (best effort: nothing is lost if one cannot be read) to tell which values went through
//! a `let`, where each `let` was last written, where each block is declared, and what an
//! extending spec removed with `= none`.

use crate::check::lossy;
use crate::plan::{NetworkPlan, Plan, Role, dataset_images};
use crate::resolved::{Provenance, RBlock, RValue, ResolvedSpec};
use crate::shape::Fact;
use canc_grammar::ast::{EntryKind, Ident, ItemKind, SpecFile, Unit, Value, ValueKind};
use std::collections::HashSet;
use std::fmt::Write as _;

/// Values wider than this do not widen the value column (long graph expressions): their
/// origin goes on the next line.
const MAX_VALUE_WIDTH: usize = 40;

/// The explanation of one compiled variant.
pub fn explain(spec: &ResolvedSpec, plan: &Plan) -> String {
    let src = Sources::load(&spec.sources);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "spec {}{}",
        spec.name,
        spec.variant
            .as_deref()
            .map_or(String::new(), |v| format!(" (variant {v})"))
    );
    if !spec.sources.is_empty() {
        let _ = writeln!(out, "files: {}", spec.sources.join(" <- "));
    }

    if !spec.lets.is_empty() {
        let mut t = Table::new("let".into(), String::new());
        for (name, v) in &spec.lets {
            t.row(1, name, value(v), src.let_origin(name, v));
        }
        t.render(&mut out);
    }

    let removed = src.removals();
    let mut existing: HashSet<String> = HashSet::new();
    for b in &spec.blocks {
        let t = block_table(b, spec, &src, &removed, &mut existing);
        t.render(&mut out);
    }
    let gone: Vec<&(String, String)> = removed
        .iter()
        .filter(|(p, _)| {
            p.contains('.') && !existing.contains(p) && !is_under_existing(p, &existing)
        })
        .collect();
    if !gone.is_empty() {
        let mut t = Table::new("removed".into(), String::new());
        for (path, loc) in gone {
            t.row(1, path, "none".into(), loc.clone());
        }
        t.render(&mut out);
    }
    derived(spec, plan).render(&mut out);
    out
}

/// A value printed compactly, in spec syntax (`uniform(0.0, 0.05)`, `0.35..1.0`, `5 epochs`).
pub fn value(v: &RValue) -> String {
    match v {
        RValue::Int(i) => i.to_string(),
        RValue::Float(f) => float(*f),
        RValue::Bool(b) => b.to_string(),
        RValue::Str(s) => quote(s),
        RValue::Ident(s) => s.clone(),
        RValue::Quantity(x, Unit::Percent) => format!("{}%", number(*x)),
        RValue::Quantity(x, u) => format!("{} {}", number(*x), u.as_str()),
        RValue::Range(a, b) => format!("{}..{}", float(*a), float(*b)),
        RValue::List(xs) => format!("[{}]", xs.iter().map(value).collect::<Vec<_>>().join(", ")),
        RValue::Call(name, args) => {
            let args: Vec<String> = args
                .iter()
                .map(|(k, v)| match k {
                    Some(k) => format!("{k} = {}", value(v)),
                    None => value(v),
                })
                .collect();
            format!("{name}({})", args.join(", "))
        }
        RValue::Output(node, out) => format!("{node}.{out}"),
        RValue::None => "none".into(),
    }
}

/// A float as a spec would write it: `4.0`, `0.05`, `2.5e-4`.
fn float(f: f64) -> String {
    if !f.is_finite() {
        return f.to_string();
    }
    let a = f.abs();
    if a != 0.0 && !(1e-3..1e15).contains(&a) {
        return format!("{f:e}");
    }
    let s = f.to_string();
    if s.contains(['.', 'e']) {
        s
    } else {
        format!("{s}.0")
    }
}

/// A number without a forced `.0` when it is whole (`5 epochs`, `50%`).
fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        float(x)
    }
}

/// A computed float with rounding noise removed (`0.03 + 0.67 + 0.3` is `1.0`).
fn clean(x: f64) -> String {
    float(format!("{x:.11e}").parse().unwrap_or(x))
}

/// `2673024` → `2,673,024`.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn quote(s: &str) -> String {
    let mut q = String::from('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// One line of a section: a sub-heading (an augmentation, a protocol) or `key = value  origin`.
enum Line {
    Head(usize, String, String),
    Row(usize, String, String, String),
}

/// A section printed with its keys and values aligned.
struct Table {
    title: String,
    origin: String,
    lines: Vec<Line>,
}

impl Table {
    fn new(title: String, origin: String) -> Self {
        Self {
            title,
            origin,
            lines: Vec::new(),
        }
    }

    fn row(&mut self, indent: usize, key: &str, value: String, origin: String) {
        self.lines
            .push(Line::Row(indent, key.to_string(), value, origin));
    }

    fn render(&self, out: &mut String) {
        let (mut kw, mut vw) = (0, 0);
        for l in &self.lines {
            if let Line::Row(i, k, v, _) = l {
                kw = kw.max(2 * i + width(k));
                if width(v) <= MAX_VALUE_WIDTH {
                    vw = vw.max(width(v));
                }
            }
        }
        // Origins start in one column; a longer value puts its origin on the next line.
        let column = kw + 3 + vw + 2;
        let _ = writeln!(out);
        at_column(out, &self.title, column, &self.origin);
        for l in &self.lines {
            match l {
                Line::Head(i, text, origin) => {
                    at_column(out, &format!("{}{text}", "  ".repeat(*i)), column, origin);
                }
                Line::Row(i, k, v, origin) => {
                    let pad = kw.saturating_sub(2 * i);
                    let left = format!("{}{k:<pad$} = {v}", "  ".repeat(*i));
                    if width(v) > MAX_VALUE_WIDTH && !origin.is_empty() {
                        push_trimmed(out, &left);
                        push_trimmed(out, &format!("{:column$}{origin}", ""));
                    } else {
                        at_column(out, &left, column, origin);
                    }
                }
            }
        }
    }
}

fn width(s: &str) -> usize {
    s.chars().count()
}

/// Writes `left`, then `origin` from `column` (or two spaces on, if `left` reaches it).
fn at_column(out: &mut String, left: &str, column: usize, origin: &str) {
    let pad = column.saturating_sub(width(left)).max(2);
    push_trimmed(out, &format!("{left}{:pad$}{origin}", ""));
}

fn push_trimmed(out: &mut String, line: &str) {
    out.push_str(line.trim_end());
    out.push('\n');
}

/// The header of a block as written: `network encoder: vit`, `data: fashion_mnist`, `graph`.
fn header(b: &RBlock) -> String {
    let mut s = b.kind.clone();
    if let Some(n) = &b.name {
        s.push(' ');
        s.push_str(n);
    }
    if let Some(t) = &b.ty {
        s.push_str(": ");
        s.push_str(t);
    }
    s
}

fn block_path(b: &RBlock) -> String {
    match &b.name {
        Some(n) => format!("{}.{n}", b.kind),
        None => b.kind.clone(),
    }
}

/// One resolved block: its keys, then its nested blocks, with origins; entries an extending spec
/// removed with `= none` are listed where they were.
fn block_table(
    b: &RBlock,
    spec: &ResolvedSpec,
    src: &Sources,
    removed: &[(String, String)],
    existing: &mut HashSet<String>,
) -> Table {
    let path = block_path(b);
    existing.insert(path.clone());
    let mut t = Table::new(header(b), src.declared(&path));
    fields(&mut t, 1, &path, b, spec, src, existing);
    for c in &b.children {
        let cpath = format!("{path}.{}", c.kind);
        existing.insert(cpath.clone());
        t.lines
            .push(Line::Head(1, c.kind.clone(), src.declared(&cpath)));
        fields(&mut t, 2, &cpath, c, spec, src, existing);
    }
    for (p, loc) in removed {
        if let Some(key) = p.strip_prefix(&format!("{path}."))
            && !existing.contains(p)
            && !key.contains('.')
        {
            t.row(1, key, "none".into(), format!("removed at {loc}"));
        }
    }
    t
}

fn fields(
    t: &mut Table,
    indent: usize,
    path: &str,
    b: &RBlock,
    spec: &ResolvedSpec,
    src: &Sources,
    existing: &mut HashSet<String>,
) {
    for (k, v) in &b.fields {
        let p = format!("{path}.{k}");
        let origin = origin(spec.provenance.get(&p), spec, src);
        existing.insert(p);
        t.row(indent, k, value(v), origin);
    }
}

/// Where a value came from, in words.
fn origin(p: Option<&Provenance>, spec: &ResolvedSpec, src: &Sources) -> String {
    match p {
        Some(Provenance::Spec(loc)) => format!("{loc}{}", src.note_at(loc)),
        Some(Provenance::Cli(what)) => what.clone(),
        Some(Provenance::Default) => "default".into(),
        Some(Provenance::Derived(f)) => match spec.block("data").and_then(|d| d.ty.as_deref()) {
            Some(source) if f.starts_with("data.") => format!("derived: {f} of {source}"),
            _ => format!("derived: {f}"),
        },
        None => String::new(),
    }
}

/// The `derived` section: numbers the plan computes, with their arithmetic.
fn derived(spec: &ResolvedSpec, plan: &Plan) -> Table {
    let mut t = Table::new("derived".into(), String::new());
    let int = |k: &str| plan.train.get(k).and_then(RValue::as_i64);
    let batch = int("batch").unwrap_or(1).max(1) as u64;
    let epochs = int("epochs").unwrap_or(0).max(0) as u64;

    let source = &plan.data.source;
    // What the full count is: `fashion_mnist train split`, `synthetic data.images`.
    let set = match plan.data.config.get("split") {
        Some(split) => format!("{source} {} split", value(split)),
        None => format!("{source} data.images"),
    };
    let images = plan.data.images;
    let images_why = match (
        images,
        plan.data.config.get("limit").and_then(RValue::as_i64),
    ) {
        (Some(_), Some(limit)) => {
            let full = spec.block("data").and_then(|d| {
                let mut d = d.clone();
                d.fields.shift_remove("limit");
                dataset_images(Some(&d))
            });
            match full {
                Some(full) => format!("min({full} of the {set}, limit {limit})"),
                None => format!("limit {limit}"),
            }
        }
        (Some(_), None) => set,
        (None, _) => format!("unknown until {source} is read"),
    };
    t.row(
        1,
        "images per epoch",
        images.map_or("?".into(), |n| n.to_string()),
        images_why,
    );
    if let Some(accum) = int("accum").filter(|a| *a > 1) {
        t.row(
            1,
            "micro-batch",
            (batch / accum as u64).to_string(),
            format!("batch / accum = {batch} / {accum}"),
        );
    }
    let spe = plan.optim.steps_per_epoch;
    t.row(
        1,
        "steps per epoch",
        spe.map_or("?".into(), |s| s.to_string()),
        match images {
            Some(n) => format!("floor({n} / {batch}), the last partial batch dropped"),
            None => "floor(images / batch)".into(),
        },
    );
    t.row(
        1,
        "total steps",
        plan.optim.total_steps.map_or("?".into(), |s| s.to_string()),
        match spe {
            Some(s) => format!("{epochs} epochs × {s}"),
            None => format!("{epochs} epochs × steps per epoch"),
        },
    );
    let warmup = plan.optim.schedule_config.get("warmup");
    let warmup_why = match warmup {
        Some(RValue::Quantity(x, Unit::Epochs)) => match spe {
            Some(s) => format!("floor({} epochs × {s})", number(*x)),
            None => format!("{} epochs × steps per epoch", number(*x)),
        },
        Some(RValue::Quantity(x, Unit::Steps)) => format!("{} steps as written", number(*x)),
        Some(RValue::Quantity(x, Unit::Images)) => {
            format!("floor({} images / {batch})", number(*x))
        }
        _ => "no warm-up".into(),
    };
    t.row(
        1,
        "warm-up steps",
        plan.optim
            .warmup_steps
            .map_or("?".into(), |s| s.to_string()),
        warmup_why,
    );

    let lr = plan.optim.config.get("lr").and_then(RValue::as_f64);
    let scaling = plan
        .optim
        .config
        .get("lr_scaling")
        .and_then(RValue::as_str)
        .unwrap_or("none");
    let lr_text = lr.map_or("lr".into(), float);
    let lr_why = match scaling {
        "linear" => format!("lr · batch / 256 = {lr_text} · {batch} / 256 (lr_scaling = linear)"),
        "sqrt" => {
            format!("lr · sqrt(batch / 256) = {lr_text} · sqrt({batch} / 256) (lr_scaling = sqrt)")
        }
        _ => format!("lr = {lr_text} (lr_scaling = none)"),
    };
    t.row(1, "effective lr", clean(plan.optim.effective_lr), lr_why);
    let schedule = &plan.optim.schedule;
    if !schedule.is_empty() {
        let cfg = &plan.optim.schedule_config;
        let start = cfg
            .get("warmup_start")
            .and_then(RValue::as_f64)
            .unwrap_or(0.0);
        let mut why = match plan.optim.warmup_steps {
            Some(w) if w > 0 => format!(
                "linear warm-up from {} × lr over {w} steps, then ",
                float(start)
            ),
            _ => String::new(),
        };
        match schedule.as_str() {
            "cosine" => {
                let min = cfg.get("min_lr").and_then(RValue::as_f64).unwrap_or(0.0);
                let _ = write!(why, "half-cycle cosine to min_lr {}", float(min));
                if let Some(total) = plan.optim.total_steps {
                    let _ = write!(why, " at step {total}");
                }
            }
            other => why.push_str(other),
        }
        t.row(1, "lr schedule", schedule.clone(), why);
    }

    for step in &plan.steps {
        match (&step.op, &step.out) {
            (
                crate::ir::Op::Mask {
                    network,
                    ratio,
                    strategy,
                    block,
                },
                Fact::Mask { grid, masked },
            ) => {
                let kept = grid - masked;
                let grid_why = plan
                    .network(network)
                    .and_then(|n| {
                        let image = n.config.get("image").and_then(RValue::as_i64)?;
                        let patch = n.config.get("patch").and_then(RValue::as_i64)?;
                        Some(format!("; grid ({image} / {patch})² = {grid}"))
                    })
                    .unwrap_or_default();
                let how = match strategy {
                    crate::ir::MaskStrategy::Random => "random".to_string(),
                    crate::ir::MaskStrategy::Block => format!("blocks of {block}×{block}"),
                };
                t.row(
                    1,
                    &format!("mask {}", step.name),
                    format!("{kept} visible of {grid}"),
                    format!(
                        "floor({grid} · (1 − {})) = {kept} kept, {masked} masked ({how}){grid_why}",
                        float(*ratio)
                    ),
                );
            }
            (crate::ir::Op::AddNoise { sigma }, _) => {
                t.row(
                    1,
                    &format!("noise {}", step.name),
                    format!("sigma ~ {sigma}"),
                    "per image; noise = sigma · eps, eps ~ N(0, 1)".into(),
                );
            }
            _ => {}
        }
    }

    for group in plan.batch_groups() {
        let Some(crate::ir::Op::Call { network, .. }) =
            group.first().and_then(|n| plan.step(n)).map(|s| &s.op)
        else {
            continue;
        };
        t.row(
            1,
            &format!("batched {network}"),
            format!("{} calls as 1", group.len()),
            format!(
                "{} on their inputs stacked along the batch: one network, equal shapes, \
                 independent, no BatchNorm",
                group.join(" + ")
            ),
        );
    }

    for n in &plan.networks {
        if let Role::Ema {
            source,
            momentum,
            momentum_end,
            schedule,
        } = &n.role
        {
            let why = if schedule == "cosine" {
                format!(
                    "cosine from {} to {} over {} steps",
                    float(*momentum),
                    float(*momentum_end),
                    plan.optim
                        .total_steps
                        .map_or("all".into(), |s| s.to_string())
                )
            } else {
                "constant".into()
            };
            t.row(
                1,
                &format!("momentum {}", n.name),
                if schedule == "cosine" {
                    format!("{} → {}", float(*momentum), float(*momentum_end))
                } else {
                    float(*momentum)
                },
                format!("EMA of {source}: {why}"),
            );
        }
    }

    let terms = &plan.objective.terms;
    if !terms.is_empty() {
        let weighted: Vec<String> = terms
            .iter()
            .map(|(n, w)| format!("{} · {n}", float(*w)))
            .collect();
        let sum: Vec<String> = terms.iter().map(|(_, w)| float(*w)).collect();
        t.row(
            1,
            "objective weight sum",
            clean(plan.objective.weight_sum),
            format!("{} ({})", sum.join(" + "), weighted.join(" + ")),
        );
    }

    let mut trained = 0;
    for b in spec.blocks.iter().filter(|b| b.kind == "network") {
        let name = b.name.as_deref().unwrap_or_default();
        match plan.network(name) {
            Some(n) => {
                if n.role == Role::Trained {
                    trained += n.params.total();
                }
                t.row(
                    1,
                    &format!("params {name}"),
                    thousands(n.params.total()),
                    params_why(n),
                );
            }
            None => t.row(
                1,
                &format!("params {name}"),
                "0".into(),
                "unused: the graph never calls it".into(),
            ),
        }
    }
    t.row(
        1,
        "params trained",
        thousands(trained),
        "sum over the trained networks".into(),
    );
    t
}

fn params_why(n: &NetworkPlan) -> String {
    let split = format!(
        "{} with weight decay + {} without",
        thousands(n.params.decay),
        thousands(n.params.no_decay)
    );
    match &n.role {
        Role::Trained => format!("trained: {split}"),
        Role::Untrained => format!("untrained (no weighted loss reaches it): {split}"),
        Role::Ema { source, .. } => format!("EMA of {source}, no gradient: {split}"),
    }
}

/// True if `p` lies under a block or value that exists: listed with that block (`graph.denoise`
/// under `graph`), or an argument set to `none` (`graph.n1.sigma`), not a removed block.
fn is_under_existing(p: &str, existing: &HashSet<String>) -> bool {
    let mut cur = p;
    while let Some((parent, _)) = cur.rsplit_once('.') {
        if existing.contains(parent) {
            return true;
        }
        cur = parent;
    }
    false
}

/// The files of the `extends` chain (base first), parsed again.
struct Sources {
    files: Vec<(String, String, SpecFile)>,
}

impl Sources {
    fn load(names: &[String]) -> Self {
        let files = names
            .iter()
            .filter_map(|name| {
                let text = std::fs::read_to_string(name).ok()?;
                let ast = canc_grammar::parse_file(&text, 0).ok()?;
                Some((name.clone(), text, ast))
            })
            .collect();
        Self { files }
    }

    /// `file:line:col` of a byte offset.
    fn location(name: &str, text: &str, offset: u32) -> String {
        let before = &text[..(offset as usize).min(text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before
            .rfind('\n')
            .map_or(before, |i| &before[i + 1..])
            .chars()
            .count()
            + 1;
        format!("{name}:{line}:{col}")
    }

    /// What the text at `file:line:col` adds: ` (via let x)` for a value that uses variables,
    /// ` (one value of the sweep)` for an element of a sweep; empty otherwise.
    fn note_at(&self, loc: &str) -> String {
        let mut parts = loc.rsplitn(3, ':');
        let (Some(col), Some(line), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return String::new();
        };
        let (Ok(line), Ok(col)) = (line.parse::<usize>(), col.parse::<usize>()) else {
            return String::new();
        };
        let Some((_, text, ast)) = self.files.iter().find(|f| f.0 == name) else {
            return String::new();
        };
        let Some(offset) = offset_of(text, line, col) else {
            return String::new();
        };
        let mut found = None;
        each_value(ast, &mut |_, v| {
            if found.is_none() {
                found = find_at(v, offset, false);
            }
        });
        match found {
            Some((_, true)) => " (one value of the sweep)".into(),
            Some((v, false)) => via(v),
            None => String::new(),
        }
    }

    /// Where `let name` got its value: the last write in the chain (a `let` or a top-level
    /// `name = value`), `--set` when the value differs from every write, or a sweep.
    fn let_origin(&self, name: &str, resolved: &RValue) -> String {
        let mut last: Option<(String, &Value)> = None;
        for (file, text, ast) in &self.files {
            for item in &ast.items {
                match &item.kind {
                    ItemKind::Let(n, v) if n.name == name => {
                        last = Some((Self::location(file, text, v.span.start), v));
                    }
                    ItemKind::Set(path, v) if path.len() == 1 && path[0].name == name => {
                        last = Some((Self::location(file, text, v.span.start), v));
                    }
                    _ => {}
                }
            }
        }
        let Some((loc, v)) = last else {
            return String::new();
        };
        let via = via(v);
        if !via.is_empty() {
            return format!("{loc}{via}");
        }
        match &v.kind {
            ValueKind::Sweep(xs) if xs.iter().any(|x| lossy(x) == *resolved) => {
                format!("{loc} (one value of the sweep)")
            }
            _ if lossy(v) == *resolved => loc,
            _ => format!("--set (overrides {loc})"),
        }
    }

    /// Where the block (or nested block) at `path` is written, every file of the chain that
    /// writes it, base first.
    fn declared(&self, path: &str) -> String {
        let mut locs = Vec::new();
        for (file, text, ast) in &self.files {
            let mut here: Option<u32> = None;
            for item in &ast.items {
                if let ItemKind::Block(b) = &item.kind {
                    let prefix = match &b.name {
                        Some(n) => format!("{}.{}", b.kind.name, n.name),
                        None => b.kind.name.clone(),
                    };
                    let at = b.name.as_ref().map_or(b.kind.span, |n| n.span).start;
                    if prefix == path {
                        here.get_or_insert(at);
                    }
                    for e in &b.entries {
                        if let EntryKind::Block(inner) = &e.kind
                            && format!("{prefix}.{}", inner.kind.name) == path
                        {
                            here.get_or_insert(inner.kind.span.start);
                        }
                    }
                }
            }
            if let Some(at) = here {
                locs.push(Self::location(file, text, at));
            }
        }
        locs.join(", ")
    }

    /// Every `path = none` written in the chain, with its location (removals, or values set to
    /// `none`: the caller tells them apart by what exists).
    fn removals(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (file, text, ast) in &self.files {
            each_value(ast, &mut |path, v| {
                if matches!(v.kind, ValueKind::None) {
                    let loc = Self::location(file, text, v.span.start);
                    out.retain(|(p, _)| p != path);
                    out.push((path.to_string(), loc));
                }
            });
        }
        out
    }
}

/// Calls `f` with the dotted path and value of every assignment of a file.
fn each_value<'a>(ast: &'a SpecFile, f: &mut dyn FnMut(&str, &'a Value)) {
    fn block<'a>(
        prefix: &str,
        b: &'a canc_grammar::ast::Block,
        f: &mut dyn FnMut(&str, &'a Value),
    ) {
        for e in &b.entries {
            match &e.kind {
                EntryKind::Assign(k, v) => f(&format!("{prefix}.{}", k.name), v),
                EntryKind::Block(inner) => {
                    block(&format!("{prefix}.{}", inner.kind.name), inner, f)
                }
            }
        }
    }
    for item in &ast.items {
        match &item.kind {
            ItemKind::Let(n, v) => f(&n.name, v),
            ItemKind::Set(path, v) => f(&dotted(path), v),
            ItemKind::Block(b) => {
                let prefix = match &b.name {
                    Some(n) => format!("{}.{}", b.kind.name, n.name),
                    None => b.kind.name.clone(),
                };
                block(&prefix, b, f);
            }
            ItemKind::Extends(_) => {}
        }
    }
}

fn dotted(path: &[Ident]) -> String {
    path.iter()
        .map(|i| i.name.as_str())
        .collect::<Vec<_>>()
        .join(".")
}

/// The byte offset of 1-based `line` and `col` (in characters).
fn offset_of(text: &str, line: usize, col: usize) -> Option<u32> {
    let start: usize = text
        .split_inclusive('\n')
        .take(line.checked_sub(1)?)
        .map(str::len)
        .sum();
    let rest = text.get(start..)?;
    let within = match rest.char_indices().nth(col.checked_sub(1)?) {
        Some((i, _)) => i,
        None => rest.len(),
    };
    u32::try_from(start + within).ok()
}

/// The outermost value starting at `offset`, and whether it is an element of a sweep.
fn find_at(v: &Value, offset: u32, in_sweep: bool) -> Option<(&Value, bool)> {
    if v.span.start == offset {
        return Some((v, in_sweep));
    }
    match &v.kind {
        ValueKind::List(xs) => xs.iter().find_map(|x| find_at(x, offset, false)),
        ValueKind::Sweep(xs) => xs.iter().find_map(|x| find_at(x, offset, true)),
        ValueKind::Call(_, args) => args.iter().find_map(|a| find_at(&a.value, offset, false)),
        _ => None,
    }
}

/// ` (via let a, let b)` for a value that uses variables, else empty.
fn via(v: &Value) -> String {
    let mut vars = Vec::new();
    collect_vars(v, &mut vars);
    if vars.is_empty() {
        return String::new();
    }
    let names: Vec<String> = vars.iter().map(|v| format!("let {v}")).collect();
    format!(" (via {})", names.join(", "))
}

/// The `$variables` of a value, in order of first use.
fn collect_vars(v: &Value, out: &mut Vec<String>) {
    match &v.kind {
        ValueKind::Var(i) if !out.contains(&i.name) => out.push(i.name.clone()),
        ValueKind::List(xs) | ValueKind::Sweep(xs) => xs.iter().for_each(|x| collect_vars(x, out)),
        ValueKind::Call(_, args) => args.iter().for_each(|a| collect_vars(&a.value, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_in_spec_syntax() {
        assert_eq!(value(&RValue::Float(4.0)), "4.0");
        assert_eq!(value(&RValue::Float(2.5e-4)), "2.5e-4");
        assert_eq!(value(&RValue::Float(0.05)), "0.05");
        assert_eq!(value(&RValue::Quantity(5.0, Unit::Epochs)), "5 epochs");
        assert_eq!(value(&RValue::Quantity(50.0, Unit::Percent)), "50%");
        assert_eq!(value(&RValue::Range(0.35, 1.0)), "0.35..1.0");
        assert_eq!(value(&RValue::Str("a\"b".into())), "\"a\\\"b\"");
        let call = RValue::Call(
            "add_noise".into(),
            vec![
                (None, RValue::Ident("x1".into())),
                (
                    Some("sigma".into()),
                    RValue::Call(
                        "uniform".into(),
                        vec![(None, RValue::Int(0)), (None, RValue::Float(0.05))],
                    ),
                ),
            ],
        );
        assert_eq!(value(&call), "add_noise(x1, sigma = uniform(0, 0.05))");
        assert_eq!(
            value(&RValue::List(vec![RValue::Float(0.9), RValue::Float(0.95)])),
            "[0.9, 0.95]"
        );
        assert_eq!(
            value(&RValue::Output("n1".into(), "sigma".into())),
            "n1.sigma"
        );
        assert_eq!(value(&RValue::None), "none");
    }

    #[test]
    fn computed_numbers_lose_rounding_noise() {
        // 0.03 + 0.67 + 0.3 is 1.0000000000000002 in binary floating point.
        assert_eq!(clean(0.03 + 0.67 + 0.3), "1.0");
        assert_eq!(thousands(2_673_024), "2,673,024");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
    }

    #[test]
    fn offsets_count_characters() {
        let text = "ab\n× = 1\n";
        // line 2, col 5 is `1`: `×` is 2 bytes, so the byte offset is 3 + 2 + 3 = 8.
        assert_eq!(offset_of(text, 2, 5), Some(8));
        assert_eq!(&text[8..9], "1");
    }
}
