//! Graph pictures of a plan: Graphviz DOT and Mermaid.
//!
//! Both formats draw the same picture, built once from the [`Plan`]:
//!
//! - one node per step (`s0`, `s1`, … in plan order) labelled with its value name, its operation
//!   and its type; inputs (views, labels, noise, masks), network calls (trained, EMA, untrained),
//!   tensor ops and losses have their own shapes and colours, objective terms are highlighted;
//! - one node per network's weights (`w0`, `w1`, … in network order) with an edge to every call
//!   that uses them, so shared weights show as one node with several edges, and an `EMA` edge
//!   from a source's weights to its moving average;
//! - a final `loss` node fed by every objective term, the edges labelled with the weights.
//!
//! Solid edges carry gradient back; dashed ones carry none (the producer does not depend on
//! trainable weights, the input is a mask, label, σ or selection, the consumer is `stop_grad`,
//! the weights are not trained, or the term's weight is zero).

use crate::ir::{MaskStrategy, Op, PoolMode, Port, Selection};
use crate::plan::{Plan, Role, Step};
use indexmap::IndexMap;

/// The plan as a Graphviz digraph.
pub fn to_dot(plan: &Plan) -> String {
    let g = Picture::of(plan);
    let mut out = String::new();
    out.push_str(&format!("digraph {} {{\n", dot_str(&g.title)));
    out.push_str("  // canc loss graph; solid edges carry gradient back, dashed ones carry none\n");
    out.push_str(&format!(
        "  graph [label={}, labelloc=t, rankdir=TB, fontname=\"Helvetica\"];\n",
        dot_str(&g.title)
    ));
    out.push_str("  node [fontname=\"Helvetica\", fontsize=10];\n");
    out.push_str("  edge [fontname=\"Helvetica\", fontsize=9];\n\n");
    for n in &g.nodes {
        let (shape, style, fill, line) = n.kind.dot_style();
        out.push_str(&format!(
            "  {} [label={}, shape={shape}, style={}, fillcolor=\"{fill}\", color=\"{line}\"",
            n.id,
            dot_str(&n.lines.join("\n")),
            dot_str(style),
        ));
        if n.kind == Kind::Term {
            out.push_str(", penwidth=2.5");
        }
        out.push_str("];\n");
    }
    out.push('\n');
    for e in &g.edges {
        let mut attrs = Vec::new();
        if let Some(l) = &e.label {
            attrs.push(format!("label={}", dot_str(l)));
        }
        if !e.grad {
            attrs.push("style=dashed".to_string());
        }
        match e.kind {
            EdgeKind::Data => {}
            EdgeKind::Weights if e.grad => attrs.push("color=\"#15803d\"".to_string()),
            EdgeKind::Weights => attrs.push("color=\"#6b7280\"".to_string()),
            EdgeKind::Ema => attrs.push("color=\"#6b7280\", fontcolor=\"#4b5563\"".to_string()),
            EdgeKind::Objective => {
                attrs.push("color=\"#b91c1c\", fontcolor=\"#b91c1c\", penwidth=2".to_string())
            }
        }
        out.push_str(&format!("  {} -> {}", e.from, e.to));
        if !attrs.is_empty() {
            out.push_str(&format!(" [{}]", attrs.join(", ")));
        }
        out.push_str(";\n");
    }
    out.push_str("}\n");
    out
}

/// The plan as a Mermaid flowchart.
pub fn to_mermaid(plan: &Plan) -> String {
    let g = Picture::of(plan);
    let mut out = String::from("flowchart TD\n");
    out.push_str(&format!("  %% {}\n", g.title.replace(['\n', '\r'], " ")));
    out.push_str("  %% solid edges carry gradient back, dashed ones carry none\n");
    for k in Kind::ALL {
        let (_, style, fill, line) = k.dot_style();
        let dash = if style.contains("dashed") {
            ",stroke-dasharray:4 3"
        } else {
            ""
        };
        let width = if k == Kind::Term {
            ",stroke-width:3px"
        } else {
            ""
        };
        out.push_str(&format!(
            "  classDef {} fill:{fill},stroke:{line}{dash}{width}\n",
            k.class()
        ));
    }
    for n in &g.nodes {
        let text = n
            .lines
            .iter()
            .map(|l| mermaid_escape(l))
            .collect::<Vec<_>>()
            .join("<br>");
        let (open, close) = n.kind.mermaid_shape();
        out.push_str(&format!(
            "  {}{open}\"{text}\"{close}:::{}\n",
            n.id,
            n.kind.class()
        ));
    }
    for e in &g.edges {
        let thick = e.kind == EdgeKind::Objective && e.grad;
        let arrow = match (&e.label, e.grad, thick) {
            (None, _, true) => "==>".to_string(),
            (None, true, false) => "-->".to_string(),
            (None, false, _) => "-.->".to_string(),
            (Some(l), _, true) => format!("== \"{}\" ==>", mermaid_escape(l)),
            (Some(l), true, false) => format!("-- \"{}\" -->", mermaid_escape(l)),
            (Some(l), false, _) => format!("-. \"{}\" .->", mermaid_escape(l)),
        };
        out.push_str(&format!("  {} {arrow} {}\n", e.from, e.to));
    }
    out
}

/// What a node stands for; picks its shape and colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A view, labels, noise or a mask: data that enters the graph.
    Input,
    /// A call of a trained network.
    Net,
    /// A call of an EMA network.
    EmaNet,
    /// A call of a network no weighted loss trains.
    Untrained,
    /// A tensor op without weights.
    Op,
    /// A loss that is not an objective term.
    Loss,
    /// A loss named in the objective.
    Term,
    /// A network's trainable (or untrained) weights.
    Weights,
    /// An EMA network's weights.
    EmaWeights,
    /// The weighted sum of the objective.
    Total,
}

impl Kind {
    const ALL: [Kind; 10] = [
        Kind::Input,
        Kind::Net,
        Kind::EmaNet,
        Kind::Untrained,
        Kind::Op,
        Kind::Loss,
        Kind::Term,
        Kind::Weights,
        Kind::EmaWeights,
        Kind::Total,
    ];

    /// `(shape, style, fill, stroke)` in Graphviz terms.
    fn dot_style(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Kind::Input => ("parallelogram", "filled", "#dbeafe", "#1d4ed8"),
            Kind::Net => ("box", "rounded,filled", "#fef3c7", "#b45309"),
            Kind::EmaNet => ("box", "rounded,filled,dashed", "#e5e7eb", "#4b5563"),
            Kind::Untrained => ("box", "rounded,filled", "#f3f4f6", "#9ca3af"),
            Kind::Op => ("box", "filled", "#ffffff", "#374151"),
            Kind::Loss => ("hexagon", "filled", "#fee2e2", "#b91c1c"),
            Kind::Term => ("hexagon", "filled", "#fca5a5", "#b91c1c"),
            Kind::Weights => ("cylinder", "filled", "#dcfce7", "#15803d"),
            Kind::EmaWeights => ("cylinder", "filled,dashed", "#e5e7eb", "#4b5563"),
            Kind::Total => ("doubleoctagon", "filled", "#f87171", "#7f1d1d"),
        }
    }

    /// Mermaid's brackets for the shape.
    fn mermaid_shape(self) -> (&'static str, &'static str) {
        match self {
            Kind::Input => ("[/", "/]"),
            Kind::Net | Kind::EmaNet | Kind::Untrained => ("(", ")"),
            Kind::Op => ("[", "]"),
            Kind::Loss | Kind::Term => ("{{", "}}"),
            Kind::Weights | Kind::EmaWeights => ("[(", ")]"),
            Kind::Total => ("((", "))"),
        }
    }

    /// Mermaid class name.
    fn class(self) -> &'static str {
        match self {
            Kind::Input => "input",
            Kind::Net => "net",
            Kind::EmaNet => "ema",
            Kind::Untrained => "untrained",
            Kind::Op => "op",
            Kind::Loss => "partial",
            Kind::Term => "term",
            Kind::Weights => "weights",
            Kind::EmaWeights => "emaweights",
            Kind::Total => "total",
        }
    }
}

/// What an edge connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EdgeKind {
    /// A value into a step.
    Data,
    /// Weights into a network call.
    Weights,
    /// A source's weights into its moving average.
    Ema,
    /// An objective term into the total loss.
    Objective,
}

struct PNode {
    id: String,
    lines: Vec<String>,
    kind: Kind,
}

struct PEdge {
    from: String,
    to: String,
    label: Option<String>,
    grad: bool,
    kind: EdgeKind,
}

/// The format-independent picture of a plan.
struct Picture {
    title: String,
    nodes: Vec<PNode>,
    edges: Vec<PEdge>,
}

impl Picture {
    fn of(plan: &Plan) -> Picture {
        let title = match &plan.variant {
            Some(v) => format!("{} [{v}]", plan.spec),
            None => plan.spec.clone(),
        };
        let mut nodes = Vec::new();
        let mut edges = Vec::new();

        let weights_id: IndexMap<&str, String> = plan
            .networks
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_str(), format!("w{i}")))
            .collect();
        for (net, id) in plan.networks.iter().zip(weights_id.values()) {
            let params = count(net.params.total());
            let (what, kind) = match &net.role {
                Role::Trained => ("weights", Kind::Weights),
                Role::Untrained => ("weights, untrained", Kind::Weights),
                Role::Ema { .. } => ("EMA weights", Kind::EmaWeights),
            };
            nodes.push(PNode {
                id: id.clone(),
                lines: vec![format!("{} ({what}, {params} params)", net.name)],
                kind,
            });
            if let Role::Ema {
                source,
                momentum,
                momentum_end,
                schedule,
            } = &net.role
                && let Some(src) = weights_id.get(source.as_str())
            {
                let label = if schedule == "constant" || momentum == momentum_end {
                    format!("EMA m={}", num(*momentum))
                } else {
                    format!("EMA m={}→{} {schedule}", num(*momentum), num(*momentum_end))
                };
                edges.push(PEdge {
                    from: src.clone(),
                    to: id.clone(),
                    label: Some(label),
                    grad: false,
                    kind: EdgeKind::Ema,
                });
            }
        }

        let step_id: IndexMap<&str, usize> = plan
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        let terms: IndexMap<&str, f64> = plan
            .objective
            .terms
            .iter()
            .map(|(n, w)| (n.as_str(), *w))
            .collect();
        for (i, step) in plan.steps.iter().enumerate() {
            let id = format!("s{i}");
            let kind = step_kind(plan, step, terms.contains_key(step.name.as_str()));
            nodes.push(PNode {
                id: id.clone(),
                lines: vec![
                    step.name.clone(),
                    op_text(plan, &step.op),
                    step.out.to_string(),
                ],
                kind,
            });
            if let Op::Call { network, .. } = &step.op
                && let Some(w) = weights_id.get(network.as_str())
            {
                let trained = plan
                    .network(network)
                    .is_some_and(|n| n.role == Role::Trained);
                edges.push(PEdge {
                    from: w.clone(),
                    to: id.clone(),
                    label: None,
                    grad: trained,
                    kind: EdgeKind::Weights,
                });
            }
            for input in &step.inputs {
                let Some((src, output)) = crate::plan::producer(&step_id, &input.value) else {
                    continue;
                };
                let label = match (&input.port, output) {
                    (Port::Kw(k), Some(o)) => Some(format!("{k}: {o}")),
                    (Port::Kw(k), None) => Some((*k).to_string()),
                    (Port::Arg(_), Some(o)) => Some(o.to_string()),
                    (Port::Arg(_), None) => None,
                };
                let grad = plan.steps[src].grad
                    && input.port.carries_grad()
                    && !matches!(step.op, Op::StopGrad);
                edges.push(PEdge {
                    from: format!("s{src}"),
                    to: id.clone(),
                    label,
                    grad,
                    kind: EdgeKind::Data,
                });
            }
        }

        let formula = plan
            .objective
            .terms
            .iter()
            .map(|(n, w)| format!("{} × {n}", num(*w)))
            .collect::<Vec<_>>()
            .join(" + ");
        nodes.push(PNode {
            id: "loss".into(),
            lines: vec![
                "loss".into(),
                formula,
                format!("weight sum {}", num(plan.objective.weight_sum)),
            ],
            kind: Kind::Total,
        });
        for (name, w) in &plan.objective.terms {
            let Some(&i) = step_id.get(name.as_str()) else {
                continue;
            };
            edges.push(PEdge {
                from: format!("s{i}"),
                to: "loss".into(),
                label: Some(format!("×{}", num(*w))),
                grad: plan.steps[i].grad && *w != 0.0,
                kind: EdgeKind::Objective,
            });
        }
        Picture {
            title,
            nodes,
            edges,
        }
    }
}

fn step_kind(plan: &Plan, step: &Step, term: bool) -> Kind {
    match &step.op {
        Op::View { .. } | Op::Labels | Op::AddNoise { .. } | Op::Mask { .. } => Kind::Input,
        Op::Call { network, ema, .. } => match plan.network(network).map(|n| &n.role) {
            Some(Role::Ema { .. }) => Kind::EmaNet,
            Some(Role::Untrained) => Kind::Untrained,
            _ if *ema => Kind::EmaNet,
            _ => Kind::Net,
        },
        op if op.is_loss() && term => Kind::Term,
        op if op.is_loss() => Kind::Loss,
        _ => Kind::Op,
    }
}

/// The operation with its settings, in words.
fn op_text(plan: &Plan, op: &Op) -> String {
    match op {
        Op::View { view } => format!("view({view})"),
        Op::AddNoise { sigma } => format!("add_noise(σ ~ {sigma})"),
        Op::Patchify { patch } => format!("patchify({patch}×{patch})"),
        Op::PatchNorm { eps } => format!("patch_norm(eps = {})", num(*eps)),
        Op::Mask {
            network,
            ratio,
            strategy,
            block,
        } => match strategy {
            MaskStrategy::Random => format!("mask({network}, ratio {}, random)", num(*ratio)),
            MaskStrategy::Block => format!(
                "mask({network}, ratio {}, {block}×{block} blocks)",
                num(*ratio)
            ),
        },
        Op::Pool { mode } => format!(
            "pool({})",
            match mode {
                PoolMode::Mean => "mean",
                PoolMode::MeanAll => "mean_all",
                PoolMode::Cls => "cls",
            }
        ),
        Op::Call {
            network, kind, ema, ..
        } => match plan.network(network).map(|n| &n.role) {
            Some(Role::Ema { source, .. }) => {
                format!("{network} ({}, EMA of {source})", kind.name())
            }
            Some(Role::Untrained) => format!("{network} ({}, untrained)", kind.name()),
            _ if *ema => format!("{network} ({}, EMA)", kind.name()),
            _ => format!("{network} ({})", kind.name()),
        },
        Op::InfoNce {
            temperature,
            sum_views,
        } => {
            let red = if *sum_views { ", sum_views" } else { "" };
            format!("infonce(τ = {}{red})", num(*temperature))
        }
        Op::InfoNceQk {
            temperature,
            scale_2tau,
        } => {
            let scale = if *scale_2tau { ", × 2τ" } else { "" };
            format!("infonce_qk(τ = {}{scale})", num(*temperature))
        }
        Op::SupCon {
            temperature,
            base_temperature,
        } => format!(
            "supcon(τ = {}, base {})",
            num(*temperature),
            num(*base_temperature)
        ),
        Op::Mse { on } => format!("mse(on {})", selection(*on)),
        Op::L1 { on } => format!("l1(on {})", selection(*on)),
        other => other.name().to_string(),
    }
}

fn selection(s: Selection) -> &'static str {
    match s {
        Selection::All => "all",
        Selection::Masked => "masked",
        Selection::Visible => "visible",
    }
}

/// A number for a label: up to 9 decimals without float noise, at least one decimal
/// (`1.0`, `0.03`, `0.996`); very small values in scientific notation (`1e-6`).
fn num(x: f64) -> String {
    if x != 0.0 && x.abs() < 1e-4 {
        return format!("{x:e}");
    }
    let s = format!("{x:.9}");
    let s = s.trim_end_matches('0');
    if s.ends_with('.') {
        format!("{s}0")
    } else {
        s.to_string()
    }
}

/// A parameter count: `512`, `526.3K`, `2.67M`, `1.20B`.
fn count(n: u64) -> String {
    let x = n as f64;
    if n >= 1_000_000_000 {
        format!("{:.2}B", x / 1e9)
    } else if n >= 1_000_000 {
        format!("{:.2}M", x / 1e6)
    } else if n >= 1_000 {
        format!("{:.1}K", x / 1e3)
    } else {
        n.to_string()
    }
}

/// A DOT double-quoted string; newlines become centred line breaks (`\n`).
fn dot_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Text inside a Mermaid quoted label: entity codes for the characters Mermaid would read.
fn mermaid_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '#' => out.push_str("#35;"),
            '"' => out.push_str("#quot;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '&' => out.push_str("#amp;"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(num(1.0), "1.0");
        assert_eq!(num(0.03), "0.03");
        assert_eq!(num(0.996), "0.996");
        assert_eq!(num(0.1 + 0.2), "0.3"); // 0.30000000000000004 without the noise
        assert_eq!(num(1e-6), "1e-6");
        assert_eq!(num(0.0), "0.0");
        assert_eq!(count(2_673_024), "2.67M"); // 2673024 / 1e6 = 2.673…
        assert_eq!(count(526_336), "526.3K");
        assert_eq!(count(512), "512");
    }

    #[test]
    fn escaping() {
        assert_eq!(dot_str("a \"b\" \\c\nd"), r#""a \"b\" \\c\nd""#);
        assert_eq!(
            mermaid_escape("a \"b\" <c> #d"),
            "a #quot;b#quot; #lt;c#gt; #35;d"
        );
    }
}
