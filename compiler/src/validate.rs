//! Static checks of the loss graph: type and shape inference through every node, gradient flow
//! (which values need a gradient, which networks are trained, which losses train nothing),
//! masks, and unused declarations. Changes nothing; returns a [`GraphInfo`] side table that the
//! planner requires.
//!
//! Gradient rules. A value carries gradient if it depends on the weights of a trainable (non-EMA)
//! network through positional tensor inputs (masks, labels, σ and `from` carry none).
//! `stop_grad` cuts it. An EMA network's weights take no gradient, but gradient does pass through
//! an EMA network into its input (for the backward pass it is a fixed function), so
//! `teacher(encoder(x))` still trains `encoder`. A term of weight 0 sends gradient nowhere.
//!
//! One mistake gives one diagnostic: the same problem at several places is reported once, with
//! the other places as secondary labels or notes; a value whose type could not be inferred is not
//! checked further; and if lowering failed (a cycle) the usage warnings are skipped, since the
//! missing nodes would make everything upstream of them look unused.

use crate::check::DataInfo;
use crate::codes::{self, Code};
use crate::diagnostic::{Diagnostic, Label};
use crate::ir::{LossGraph, NetKind, Op, PoolMode, Port, Selection};
use crate::resolved::{RBlock, RValue, ResolvedSpec};
use crate::shape::{Fact, kept_count};
use indexmap::IndexMap;
use petgraph::Direction;
use petgraph::graph::NodeIndex;
use std::collections::{HashMap, HashSet};

/// What validation learned about each node (indexed by node index).
#[derive(Debug, Clone, Default)]
pub struct GraphInfo {
    /// The main output's type (`None` where inference failed, already reported).
    pub facts: Vec<Option<Fact>>,
    /// The value depends on a trainable parameter through gradient-carrying edges.
    pub grad: Vec<bool>,
    /// Backpropagation from a weighted objective term reaches the node.
    pub to_loss: Vec<bool>,
    /// The node contributes to some objective term (it is computed).
    pub used: Vec<bool>,
    /// Input type of each network's weights, as first called: `(type, node name)`.
    pub net_inputs: IndexMap<String, (Fact, String)>,
    /// Networks whose weights receive gradient.
    pub trained: Vec<String>,
}

impl GraphInfo {
    /// The type of a producer's output (`noise` and `sigma` of `add_noise`).
    pub fn fact(&self, n: NodeIndex, output: Option<&str>) -> Option<Fact> {
        let f = self.facts.get(n.index())?.clone()?;
        match output {
            Some("sigma") => Some(Fact::Sigma),
            _ => Some(f),
        }
    }

    /// True if the node's activation is needed for the backward pass.
    pub fn keep_for_backward(&self, n: NodeIndex) -> bool {
        self.grad[n.index()] && self.to_loss[n.index()]
    }
}

/// Longest sub-expression written out in a message; deeper levels become `…` beyond it.
const SHOW_MAX: usize = 72;

struct V<'a> {
    spec: &'a ResolvedSpec,
    g: &'a LossGraph,
    info: GraphInfo,
    diags: Vec<Diagnostic>,
    /// Each problem reported so far, by what makes two reports the same mistake → its index in
    /// `diags`.
    seen: HashMap<String, usize>,
    /// The first call of each network's weights.
    first_call: HashMap<String, NodeIndex>,
    /// Loss nodes reported as training nothing (E0057).
    no_grad_losses: Vec<NodeIndex>,
}

/// Checks `g` (lowered from `spec`) and returns what it learned with every problem found.
pub fn validate(spec: &ResolvedSpec, g: &LossGraph) -> (GraphInfo, Vec<Diagnostic>) {
    let n = g.graph.node_count();
    let mut v = V {
        spec,
        g,
        info: GraphInfo {
            facts: vec![None; n],
            grad: vec![false; n],
            to_loss: vec![false; n],
            used: vec![false; n],
            ..GraphInfo::default()
        },
        diags: Vec::new(),
        seen: HashMap::new(),
        first_call: HashMap::new(),
        no_grad_losses: Vec::new(),
    };
    for i in g.graph.node_indices() {
        let f = v.infer(i);
        v.info.facts[i.index()] = f;
    }
    v.flow();
    // Lowering drops the nodes of a cycle and everything computed from them (reported there);
    // what remains would look unused.
    let lowered = spec
        .block("graph")
        .is_none_or(|b| b.fields.keys().all(|k| g.by_name.contains_key(k)));
    if lowered {
        v.unused();
    }
    (v.info, v.diags)
}

fn int(b: &RBlock, k: &str) -> u32 {
    b.get(k).and_then(RValue::as_i64).unwrap_or(0).max(0) as u32
}

/// `shape` for messages about widths: `[B, 128]`, `tokens of width 192`.
fn width(f: &Fact) -> String {
    match f {
        Fact::Tokens { dim, .. } => format!("tokens of width {dim}"),
        other => other.to_string(),
    }
}

/// `a`, `a and b`, `a, b and c` (with `conj` for "and").
fn list(items: &[String], conj: &str) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} {conj} {last}", rest.join(", ")),
    }
}

fn and_list(items: &[String]) -> String {
    list(items, "and")
}

impl V<'_> {
    /// A value as the spec writes it: `z1`, `n1.sigma`, or a nested expression such as
    /// `pool(encoder(x1), mode = cls)`.
    fn show(&self, n: NodeIndex, output: Option<&str>) -> String {
        if self.g.graph[n].named {
            return self.g.value_name(n, output);
        }
        (1..=6)
            .rev()
            .map(|depth| self.expr(n, depth))
            .find(|s| s.chars().count() <= SHOW_MAX)
            .unwrap_or_else(|| self.expr(n, 0))
    }

    /// `op(args)`, unnamed inputs written out `depth` levels deep (`op(…)` at 0).
    fn expr(&self, n: NodeIndex, depth: u32) -> String {
        let node = &self.g.graph[n];
        if depth == 0 {
            return format!("{}(…)", node.op.name());
        }
        let mut args = Vec::new();
        match &node.op {
            Op::View { view } => args.push(view.clone()),
            Op::Mask { network, .. } => args.push(network.clone()),
            _ => {}
        }
        for (port, src, out) in self.g.inputs(n) {
            let v = if self.g.graph[src].named {
                self.g.value_name(src, out.as_deref())
            } else {
                self.expr(src, depth - 1)
            };
            args.push(match port {
                Port::Arg(_) => v,
                Port::Kw("on") => {
                    let sel = match node.op {
                        Op::Mse { on } | Op::L1 { on } if on == Selection::Visible => "visible",
                        _ => "masked",
                    };
                    format!("on = {sel}({v})")
                }
                Port::Kw(k) => format!("{k} = {v}"),
            });
        }
        match &node.op {
            Op::Patchify { patch } => args.push(format!("patch = {patch}")),
            Op::Pool {
                mode: PoolMode::Cls,
            } => args.push("mode = cls".into()),
            Op::Pool {
                mode: PoolMode::MeanAll,
            } => args.push("mode = mean_all".into()),
            Op::Mask { ratio, .. } => args.push(format!("ratio = {ratio}")),
            _ => {}
        }
        format!("{}({})", node.op.name(), args.join(", "))
    }

    /// Where a node is, for the primary label: "in `z1`", or the sub-expression of a nested node
    /// (which shares its top-level node's span).
    fn at(&self, n: NodeIndex) -> String {
        format!("in `{}`", self.show(n, None))
    }

    fn diag(&self, code: Code, n: NodeIndex, msg: String) -> Diagnostic {
        Diagnostic::error(code, self.g.graph[n].span, msg).label(self.at(n))
    }

    /// Reports `d`, about node `n`, unless the same mistake (`key`) was reported already: then
    /// `n` is added to that report as a secondary label (or a note, if it has the same span).
    fn report(&mut self, n: NodeIndex, key: Option<String>, d: Diagnostic) {
        if let Some(k) = &key
            && let Some(&i) = self.seen.get(k)
        {
            let span = self.g.graph[n].span;
            let text = format!("the same problem {}", self.at(n));
            let first = &mut self.diags[i];
            if first.span == span || first.secondary.iter().any(|l| l.span == span) {
                first.notes.push(text);
            } else {
                first.secondary.push(Label {
                    span,
                    message: text,
                });
            }
            return;
        }
        if let Some(k) = key {
            self.seen.insert(k, self.diags.len());
        }
        self.diags.push(d);
    }

    /// Adds a secondary label where input `port` of `n` is defined, if that is elsewhere:
    /// "`z2` is [B, 256]".
    fn def_label(&self, d: Diagnostic, n: NodeIndex, port: &Port) -> Diagnostic {
        let Some((src, out)) = self.g.input(n, port) else {
            return d;
        };
        let span = self.g.graph[src].span;
        if span == d.span || d.secondary.iter().any(|l| l.span == span) {
            return d;
        }
        let Some(f) = self.info.fact(src, out.as_deref()) else {
            return d;
        };
        d.with_label(span, format!("`{}` is {f}", self.show(src, out.as_deref())))
    }

    /// The network call whose output `n` is, looking through `stop_grad`, `l2norm`, `pool` and
    /// `patch_norm`.
    fn producer_call(&self, mut n: NodeIndex) -> Option<NodeIndex> {
        loop {
            match &self.g.graph[n].op {
                Op::Call { .. } => return Some(n),
                Op::StopGrad | Op::L2Norm | Op::Pool { .. } | Op::PatchNorm { .. } => {
                    n = self.g.input(n, &Port::Arg(0))?.0;
                }
                _ => return None,
            }
        }
    }

    /// The name of the network (its weights) whose output `n` is.
    fn producer_weights(&self, n: NodeIndex) -> Option<String> {
        match &self.g.graph[self.producer_call(n)?].op {
            Op::Call { weights, .. } => Some(weights.clone()),
            _ => None,
        }
    }

    /// The `patchify` node that `n` is computed from (through `patch_norm`), if any.
    fn producer_patchify(&self, mut n: NodeIndex) -> Option<NodeIndex> {
        loop {
            match &self.g.graph[n].op {
                Op::Patchify { .. } => return Some(n),
                Op::StopGrad | Op::PatchNorm { .. } => n = self.g.input(n, &Port::Arg(0))?.0,
                _ => return None,
            }
        }
    }

    fn net(&self, name: &str) -> Option<&RBlock> {
        self.spec.named("network", name)
    }

    /// Type of input `port` of `n`; `None` if absent or unknown.
    fn input(&self, n: NodeIndex, port: Port) -> Option<(Fact, String)> {
        let (src, out) = self.g.input(n, &port)?;
        let f = self.info.fact(src, out.as_deref())?;
        Some((f, self.show(src, out.as_deref())))
    }

    /// The node feeding the `mask` port of `n`: `Ok(None)` without one, `Err` if it is not a
    /// mask (reported) or its type is unknown.
    fn mask_input(&mut self, n: NodeIndex) -> Result<Option<NodeIndex>, ()> {
        let Some((src, out)) = self.g.input(n, &Port::Kw("mask")) else {
            return Ok(None);
        };
        match self.info.fact(src, out.as_deref()) {
            Some(Fact::Mask { .. }) => Ok(Some(src)),
            Some(other) => {
                let x = self.show(src, out.as_deref());
                let d = self
                    .diag(
                        codes::WRONG_TENSOR,
                        n,
                        format!(
                            "`mask` takes a `mask(...)` node, but `{x}` is {}",
                            other.noun()
                        ),
                    )
                    .help(self.mask_hint(n));
                let d = self.def_label(d, n, &Port::Kw("mask"));
                self.report(n, None, d);
                Err(())
            }
            None => Err(()),
        }
    }

    /// Which masks could go to `n`'s `mask` port: the named masks over its encoder's grid, or
    /// how to draw one.
    fn mask_hint(&self, n: NodeIndex) -> String {
        let encoder = match &self.g.graph[n].op {
            Op::Call {
                weights,
                kind: NetKind::Vit,
                ..
            } => Some(weights.clone()),
            // A decoder: its input's encoder.
            _ => self
                .g
                .input(n, &Port::Arg(0))
                .and_then(|(s, _)| self.producer_weights(s)),
        };
        let encoder = encoder.unwrap_or_else(|| "encoder".into());
        let masks: Vec<String> = self
            .g
            .graph
            .node_indices()
            .filter(|&i| self.g.graph[i].named)
            .filter(
                |&i| matches!(&self.g.graph[i].op, Op::Mask { network, .. } if *network == encoder),
            )
            .map(|i| format!("`{}`", self.g.graph[i].name))
            .collect();
        if masks.is_empty() {
            format!(
                "draw a mask over `{encoder}`'s patch grid: `m = mask({encoder}, ratio = 0.75)`"
            )
        } else {
            format!(
                "pass a mask over `{encoder}`'s patch grid: {}",
                list(&masks, "or")
            )
        }
    }

    fn classes(&self) -> u32 {
        let d = self.spec.block("data");
        if let Some(c) = d.and_then(|d| d.get("classes")).and_then(RValue::as_i64) {
            return c as u32;
        }
        match d.and_then(|d| d.ty.as_deref()) {
            Some("cifar100") => 100,
            Some("image_folder") => 0,
            _ => 10,
        }
    }

    fn infer(&mut self, n: NodeIndex) -> Option<Fact> {
        let op = self.g.graph[n].op.clone();
        match op {
            Op::View { view } => {
                let (size0, c) = match self.input(n, Port::Kw("from")) {
                    Some((Fact::Image { c, size }, _)) => (size, c),
                    Some((f, from)) => {
                        let d = self.diag(
                            codes::WRONG_TENSOR,
                            n,
                            format!("`from` takes a view, but `{from}` is {}", f.noun()),
                        );
                        self.report(n, None, d);
                        return None;
                    }
                    None if self.g.input(n, &Port::Kw("from")).is_some() => return None,
                    None => {
                        let d = DataInfo::of(self.spec.block("data"));
                        (d.image_size.max(0) as u32, d.channels.max(0) as u32)
                    }
                };
                let size = view_size(self.spec.named("view", &view), size0);
                Some(Fact::Image { c, size })
            }
            Op::Labels => Some(Fact::Labels {
                classes: self.classes(),
            }),
            Op::AddNoise { .. } => match self.input(n, Port::Arg(0))? {
                (f @ Fact::Image { .. }, _) => Some(f),
                (f, x) => {
                    let d = self.diag(
                        codes::WRONG_TENSOR,
                        n,
                        format!(
                            "`add_noise` takes an image batch, but `{x}` is {} {f}",
                            f.noun()
                        ),
                    );
                    self.report(n, None, d);
                    None
                }
            },
            Op::Patchify { patch } => match self.input(n, Port::Arg(0))? {
                (Fact::Image { c, size }, x) => {
                    if patch == 0 || size % patch != 0 {
                        let divisors: Vec<String> = (2..size)
                            .filter(|p| size % p == 0)
                            .map(|p| p.to_string())
                            .collect();
                        let d = self
                            .diag(
                                codes::INCONSISTENT,
                                n,
                                format!(
                                    "patch {patch} does not divide the {size}×{size} images of `{x}`"
                                ),
                            )
                            .help(format!(
                                "use a patch that divides {size} ({}), normally the encoder's",
                                and_list(&divisors)
                            ));
                        self.report(n, Some(format!("patchify {patch} {size}")), d);
                        return None;
                    }
                    let side = size / patch;
                    Some(Fact::Tokens {
                        n: side * side,
                        grid: side * side,
                        cls: false,
                        dim: patch * patch * c,
                        patch,
                        channels: c,
                        visible_of: None,
                    })
                }
                (f, x) => {
                    let d = self.diag(
                        codes::WRONG_TENSOR,
                        n,
                        format!(
                            "`patchify` takes an image batch, but `{x}` is {} {f}",
                            f.noun()
                        ),
                    );
                    self.report(n, None, d);
                    None
                }
            },
            Op::PatchNorm { .. } | Op::L2Norm | Op::StopGrad => {
                let (f, x) = self.input(n, Port::Arg(0))?;
                let ok = match op {
                    Op::PatchNorm { .. } => matches!(f, Fact::Tokens { .. }),
                    Op::L2Norm => matches!(f, Fact::Tokens { .. } | Fact::Embedding { .. }),
                    _ => !matches!(f, Fact::Scalar),
                };
                if !ok {
                    let takes = match op {
                        Op::PatchNorm { .. } => "patches (`patchify(x, patch = P)`)",
                        Op::L2Norm => "tokens or an embedding",
                        _ => "a tensor, not a loss",
                    };
                    let mut d = self.diag(
                        codes::WRONG_TENSOR,
                        n,
                        format!(
                            "`{}` takes {takes}, but `{x}` is {} {f}",
                            op.name(),
                            f.noun()
                        ),
                    );
                    if matches!(op, Op::PatchNorm { .. }) && matches!(f, Fact::Image { .. }) {
                        d = d.help(format!(
                            "patchify it first: `patch_norm(patchify({x}, patch = P))`"
                        ));
                    }
                    self.report(n, None, d);
                    return None;
                }
                Some(f)
            }
            Op::Mask { network, ratio, .. } => {
                // An EMA network has its source's grid.
                let weights = self
                    .g
                    .networks
                    .get(&network)
                    .and_then(|n| n.ema_of.as_deref())
                    .unwrap_or(&network);
                let net = self.net(weights)?;
                let (image, patch) = (int(net, "image"), int(net, "patch"));
                if patch == 0 || image % patch != 0 {
                    return None; // reported with the network
                }
                let grid = (image / patch) * (image / patch);
                let kept = kept_count(grid, ratio);
                if kept == 0 {
                    // The largest ratio that keeps one patch, (grid − 1) / grid, rounded down.
                    let max = (f64::from(grid - 1) / f64::from(grid) * 1e4).floor() / 1e4;
                    let d = Diagnostic::error(
                        codes::NO_VISIBLE,
                        self.g.graph[n].span,
                        format!(
                            "mask ratio {ratio} leaves none of the {grid} patches of `{network}` visible"
                        ),
                    )
                    .label(format!("keeps floor({grid} × (1 − {ratio})) = 0 patches"))
                    .help(format!(
                        "use a ratio of at most {}/{grid} ≈ {max}, or smaller patches",
                        grid - 1
                    ));
                    self.report(n, Some(format!("no visible {network} {ratio}")), d);
                    return None;
                }
                Some(Fact::Mask {
                    grid,
                    masked: grid - kept,
                })
            }
            Op::Pool { mode } => match self.input(n, Port::Arg(0))? {
                (f @ Fact::Tokens { cls, dim, .. }, x) => {
                    if mode == PoolMode::Cls && !cls {
                        let src = self.g.input(n, &Port::Arg(0)).map(|(s, _)| s);
                        let net = src.and_then(|s| self.producer_weights(s));
                        let net = net.as_deref().unwrap_or("the encoder");
                        let d = self
                            .diag(
                                codes::INCONSISTENT,
                                n,
                                format!(
                                    "`pool(mode = cls)` reads the CLS token, but `{x}` has none \
                                     (`{net}` has `cls = false`)"
                                ),
                            )
                            .help(format!(
                                "set `cls = true` on `{net}`, or pool with `mode = mean`"
                            ));
                        self.report(n, Some(format!("cls {f}")), d);
                        return None;
                    }
                    Some(Fact::Embedding { dim })
                }
                (f, x) => {
                    let d = self.diag(
                        codes::WRONG_TENSOR,
                        n,
                        format!("`pool` takes tokens, but `{x}` is {} {f}", f.noun()),
                    );
                    self.report(n, None, d);
                    None
                }
            },
            Op::Call {
                network,
                weights,
                kind,
                ..
            } => self.call(n, &network, &weights, kind),
            Op::InfoNce { .. } | Op::InfoNceQk { .. } | Op::Cosine | Op::SupCon { .. } => {
                self.compare_embeddings(n, &op)
            }
            Op::Mse { on } | Op::L1 { on } => self.regression(n, &op, on),
            Op::Mean | Op::Sum => {
                let mut ok = true;
                let mut bad: Vec<(Port, Fact, String)> = Vec::new();
                for (port, _, _) in self.g.inputs(n) {
                    match self.input(n, port.clone()) {
                        None => ok = false,
                        Some((Fact::Scalar, _)) => {}
                        Some((f, x)) => bad.push((port, f, x)),
                    }
                }
                if let Some((_, f, _)) = bad.first() {
                    let what = if bad.iter().all(|(_, g, _)| g.noun() == f.noun()) {
                        let names: Vec<String> =
                            bad.iter().map(|(_, _, x)| format!("`{x}`")).collect();
                        let verb = if bad.len() == 1 { "is" } else { "are" };
                        format!("{} {verb} {}", and_list(&names), f.noun())
                    } else {
                        let each: Vec<String> = bad
                            .iter()
                            .map(|(_, g, x)| format!("`{x}` is {}", g.noun()))
                            .collect();
                        and_list(&each)
                    };
                    let mut d = self
                        .diag(
                            codes::WRONG_TENSOR,
                            n,
                            format!("`{}` combines losses, but {what}", op.name()),
                        )
                        .help(format!(
                            "compute a loss from each first, e.g. `{}(mse(a, target_a), mse(b, target_b))`",
                            op.name()
                        ));
                    for (port, _, _) in &bad {
                        d = self.def_label(d, n, port);
                    }
                    self.report(n, None, d);
                    return None;
                }
                ok.then_some(Fact::Scalar)
            }
        }
    }

    /// infonce, infonce_qk, cosine, supcon: two embeddings of one width (and labels).
    fn compare_embeddings(&mut self, n: NodeIndex, op: &Op) -> Option<Fact> {
        let name = op.name();
        if let Op::SupCon { .. } = op
            && let Some((f, x)) = self.input(n, Port::Kw("labels"))
            && !matches!(f, Fact::Labels { .. })
        {
            let d = self
                .diag(
                    codes::WRONG_TENSOR,
                    n,
                    format!(
                        "`supcon` groups by class labels, but its `labels` `{x}` is {} {f}",
                        f.noun()
                    ),
                )
                .help("pass the batch's labels: `labels = labels()`");
            let d = self.def_label(d, n, &Port::Kw("labels"));
            self.report(n, None, d);
        }
        let a = self.input(n, Port::Arg(0));
        let b = self.input(n, Port::Arg(1));
        let ((fa, xa), (fb, xb)) = (a?, b?);
        let bad: Vec<(&Fact, &String, Port)> = [(&fa, &xa, Port::Arg(0)), (&fb, &xb, Port::Arg(1))]
            .into_iter()
            .filter(|(f, _, _)| !matches!(f, Fact::Embedding { .. }))
            .collect();
        if let Some((f, x, _)) = bad.first() {
            let (f, x) = (*f, *x);
            let same = bad.len() == 2 && fa.noun() == fb.noun();
            let what = if same {
                format!("`{xa}` and `{xb}` are {} {f}", f.noun())
            } else {
                format!("`{x}` is {} {f}", f.noun())
            };
            let hint = match f {
                Fact::Tokens { .. } if same => {
                    format!(
                        "pool the tokens into one embedding per image: `pool({xa})`, `pool({xb})`"
                    )
                }
                Fact::Tokens { .. } => {
                    format!("pool the tokens into one embedding per image: `pool({x})`")
                }
                Fact::Image { .. } => "encode the images and pool the tokens first".to_string(),
                _ => "pass the output of a projector or predictor".to_string(),
            };
            let mut d = self
                .diag(
                    codes::WRONG_TENSOR,
                    n,
                    format!("`{name}` compares embeddings [B, d], but {what}"),
                )
                .help(hint);
            for (_, _, port) in &bad {
                d = self.def_label(d, n, port);
            }
            self.report(n, None, d);
            return None;
        }
        if fa != fb {
            let nets = (
                self.g
                    .input(n, &Port::Arg(0))
                    .and_then(|(s, _)| self.producer_weights(s)),
                self.g
                    .input(n, &Port::Arg(1))
                    .and_then(|(s, _)| self.producer_weights(s)),
            );
            let help = match nets {
                (Some(p), Some(q)) if p != q => {
                    format!("`{p}` and `{q}` end in different widths: give them the same `out`")
                }
                _ => "give both branches the same output width (`out` of their last MLP)".into(),
            };
            let d = self
                .diag(
                    codes::SHAPE_MISMATCH,
                    n,
                    format!("`{name}` compares `{xa}` {fa} with `{xb}` {fb}: the widths differ"),
                )
                .help(help);
            let d = self.def_label(d, n, &Port::Arg(0));
            let d = self.def_label(d, n, &Port::Arg(1));
            self.report(n, Some(format!("compare {fa} {fb}")), d);
            return None;
        }
        Some(Fact::Scalar)
    }

    /// A network call: checks the input against the network and earlier calls of its weights.
    fn call(&mut self, n: NodeIndex, network: &str, weights: &str, kind: NetKind) -> Option<Fact> {
        let net = self.net(weights)?.clone();
        let (f, x) = self.input(n, Port::Arg(0))?;
        let out = match kind {
            NetKind::Vit => {
                let (image, c, patch) = (
                    int(&net, "image"),
                    int(&net, "channels"),
                    int(&net, "patch"),
                );
                let Fact::Image { c: fc, size } = f else {
                    let d = self.diag(
                        codes::WRONG_TENSOR,
                        n,
                        format!(
                            "ViT `{network}` encodes images, but `{x}` is {} {f}",
                            f.noun()
                        ),
                    );
                    self.report(n, None, d);
                    return None;
                };
                if size != image || fc != c {
                    let view = self.g.input(n, &Port::Arg(0)).and_then(|(s, _)| {
                        match &self.g.graph[s].op {
                            Op::View { view } => Some(view.clone()),
                            _ => None,
                        }
                    });
                    let help = if size != image {
                        match view {
                            Some(v) => format!(
                                "give view `{v}` a crop of `size = {image}`, or set `image = {size}` on `{weights}`"
                            ),
                            None => format!(
                                "resize the images to {image} px, or set `image = {size}` on `{weights}`"
                            ),
                        }
                    } else {
                        format!("set `channels = {fc}` on `{weights}`")
                    };
                    let who = if network == weights {
                        format!("`{network}`")
                    } else {
                        format!("`{network}` (an EMA copy of `{weights}`)")
                    };
                    let d = self
                        .diag(
                            codes::SHAPE_MISMATCH,
                            n,
                            format!(
                                "`{x}` is {f}, but {who} takes [B, {c}, {image}, {image}] \
                                 (image = {image}, channels = {c})"
                            ),
                        )
                        .help(help);
                    let d = self.def_label(d, n, &Port::Arg(0));
                    self.report(n, Some(format!("image {weights} {f}")), d);
                    return None;
                }
                if patch == 0 || image % patch != 0 {
                    return None;
                }
                let side = image / patch;
                let grid = side * side;
                let mut tokens = Fact::Tokens {
                    n: grid,
                    grid,
                    cls: net.get("cls") == Some(&RValue::Bool(true)),
                    dim: int(&net, "dim"),
                    patch,
                    channels: c,
                    visible_of: None,
                };
                if let Some(src) = self.mask_input(n).ok()? {
                    let Some(Fact::Mask { grid: mg, masked }) = self.info.fact(src, None) else {
                        return None;
                    };
                    if mg != grid {
                        let m = self.show(src, None);
                        let of = match &self.g.graph[src].op {
                            Op::Mask { network: o, .. } => format!("`{o}`'s grid"),
                            _ => "a grid".into(),
                        };
                        let d = self
                            .diag(
                                codes::MASK_MISMATCH,
                                n,
                                format!(
                                    "mask `{m}` is drawn over {of} of {mg} patches, but `{network}` \
                                     has {grid} ({side}×{side} patches of {patch} px)"
                                ),
                            )
                            .help(format!(
                                "draw the mask over the network it masks: `mask({weights}, ...)`"
                            ));
                        let d = self.def_label(d, n, &Port::Kw("mask"));
                        self.report(n, Some(format!("mask grid {weights} {m}")), d);
                        return None;
                    }
                    if let Fact::Tokens { n, visible_of, .. } = &mut tokens {
                        *n = grid - masked;
                        *visible_of = Some(self.g.graph[src].name.clone());
                    }
                }
                self.same_input(n, network, weights, Fact::Image { c: fc, size }, &x)?;
                tokens
            }
            NetKind::VitDecoder => self.decoder(n, network, weights, &net, f, &x)?,
            NetKind::Mlp => {
                let Fact::Embedding { dim } = f else {
                    let mut d = self.diag(
                        codes::WRONG_TENSOR,
                        n,
                        format!(
                            "MLP `{network}` takes an embedding [B, d], but `{x}` is {} {f}",
                            f.noun()
                        ),
                    );
                    if matches!(f, Fact::Tokens { .. }) {
                        d = d.help(format!(
                            "pool the tokens into one embedding per image first: `{network}(pool({x}))`"
                        ));
                    }
                    let d = self.def_label(d, n, &Port::Arg(0));
                    self.report(n, None, d);
                    return None;
                };
                self.same_input(n, network, weights, Fact::Embedding { dim }, &x)?;
                Fact::Embedding {
                    dim: int(&net, "out"),
                }
            }
        };
        Some(out)
    }

    /// A decoder call: encoder tokens with the encoder's mask (and σ as `cond`).
    fn decoder(
        &mut self,
        n: NodeIndex,
        network: &str,
        weights: &str,
        net: &RBlock,
        f: Fact,
        x: &str,
    ) -> Option<Fact> {
        let Fact::Tokens {
            grid,
            dim,
            patch,
            channels,
            visible_of,
            cls,
            ..
        } = f.clone()
        else {
            let d = self.diag(
                codes::WRONG_TENSOR,
                n,
                format!(
                    "decoder `{network}` takes encoder tokens, but `{x}` is {} {f}",
                    f.noun()
                ),
            );
            let d = self.def_label(d, n, &Port::Arg(0));
            self.report(n, None, d);
            return None;
        };
        let given = self
            .mask_input(n)
            .ok()?
            .map(|s| self.g.graph[s].name.clone());
        let problem = match (&visible_of, &given) {
            (Some(m), None) => Some((
                format!(
                    "`{x}` holds only the patches mask `{m}` keeps, but decoder `{network}` is not \
                     given the mask, so it cannot place them on the grid"
                ),
                format!("pass the encoder's mask: add `mask = {m}` to the `{network}(...)` call"),
            )),
            (Some(m), Some(g)) if m != g => Some((
                format!(
                    "`{x}` was encoded with mask `{m}`, but decoder `{network}` is given `{g}`"
                ),
                format!("pass the mask the encoder used: `mask = {m}`"),
            )),
            (None, Some(g)) => {
                let enc = self
                    .g
                    .input(n, &Port::Arg(0))
                    .and_then(|(s, _)| self.producer_call(s))
                    .and_then(|c| {
                        let (i, o) = self.g.input(c, &Port::Arg(0))?;
                        Some(format!(
                            "`{}({}, mask = {g})`",
                            self.g.graph[c].op.name(),
                            self.show(i, o.as_deref())
                        ))
                    })
                    .unwrap_or_else(|| format!("`mask = {g}` on the encoder call"));
                Some((
                    format!(
                        "`{x}` was encoded without a mask, but decoder `{network}` is given `{g}`"
                    ),
                    format!(
                        "mask the encoder with the same mask: {enc}; or drop the decoder's `mask`"
                    ),
                ))
            }
            _ => None,
        };
        if let Some((msg, help)) = problem {
            let d = self.diag(codes::MASK_MISMATCH, n, msg).help(help);
            self.report(n, None, d);
            return None;
        }
        if let Some((src, out)) = self.g.input(n, &Port::Kw("cond"))
            && let Some(cf) = self.info.fact(src, out.as_deref())
            && cf != Fact::Sigma
        {
            let cx = self.show(src, out.as_deref());
            let help = match &self.g.graph[src].op {
                Op::AddNoise { .. } => {
                    format!(
                        "pass its noise level: `cond = {}.sigma`",
                        self.show(src, None)
                    )
                }
                _ => "pass the `sigma` output of an `add_noise` node: `cond = n.sigma`".into(),
            };
            let d = self
                .diag(
                    codes::WRONG_TENSOR,
                    n,
                    format!(
                        "`cond` takes a noise level [B] (`node.sigma`), but `{cx}` is {} {cf}",
                        cf.noun()
                    ),
                )
                .help(help);
            self.report(n, None, d);
            return None;
        }
        let width = match net.get("out") {
            Some(RValue::Int(d)) => *d as u32,
            _ => patch * patch * channels,
        };
        let encoder_tokens = Fact::Tokens {
            n: grid,
            grid,
            cls,
            dim,
            patch,
            channels,
            visible_of: None,
        };
        self.same_input(n, network, weights, encoder_tokens, x)?;
        Some(Fact::Tokens {
            n: grid,
            grid,
            cls: false,
            dim: width,
            patch,
            channels,
            visible_of: None,
        })
    }

    /// Every call of one set of weights (an EMA copy's included) must see the same input type.
    fn same_input(
        &mut self,
        n: NodeIndex,
        network: &str,
        weights: &str,
        f: Fact,
        x: &str,
    ) -> Option<()> {
        let Some((first, _)) = self.info.net_inputs.get(weights).cloned() else {
            let here = self.g.graph[n].name.clone();
            self.info.net_inputs.insert(weights.to_string(), (f, here));
            self.first_call.insert(weights.to_string(), n);
            return Some(());
        };
        if first == f {
            return Some(());
        }
        let at = self.first_call[weights];
        let first_x = self
            .g
            .input(at, &Port::Arg(0))
            .map(|(s, o)| self.show(s, o.as_deref()))
            .unwrap_or_default();
        let who = if network == weights {
            format!("`{network}`")
        } else {
            format!("`{network}` (an EMA copy of `{weights}`)")
        };
        let (here_w, first_w) = match (width(&f), width(&first)) {
            (a, b) if a == b => (f.to_string(), first.to_string()),
            ab => ab,
        };
        let mut d = self
            .diag(
                codes::SHAPE_MISMATCH,
                n,
                format!(
                    "{who} is given {here_w} here, but {first_w} in `{}`",
                    self.g.graph[at].name
                ),
            )
            .note(
                "a network has one input width: every call shares its weights, and an EMA copy \
                 has its source's",
            );
        if self.g.graph[at].span != d.span {
            d = d.with_label(
                self.g.graph[at].span,
                format!("first called on `{first_x}` {first}"),
            );
        }
        let first_net = self
            .g
            .input(at, &Port::Arg(0))
            .and_then(|(s, _)| self.producer_weights(s));
        let here_net = self
            .g
            .input(n, &Port::Arg(0))
            .and_then(|(s, _)| self.producer_weights(s));
        let at_name = &self.g.graph[at].name;
        d = d.help(match first_net {
            Some(p) if here_net.as_deref() != Some(&p) => {
                let copies: Vec<String> = self
                    .g
                    .networks
                    .values()
                    .filter(|e| e.ema_of.as_deref() == Some(&p))
                    .map(|e| format!("`{}`", e.name))
                    .collect();
                if network == weights || copies.is_empty() {
                    format!("pass `{x}` through `{p}` first, as in `{at_name}`")
                } else {
                    format!(
                        "pass `{x}` through {} first, as `{weights}`'s input is in `{at_name}`",
                        list(&copies, "or")
                    )
                }
            }
            _ => format!("give every call of `{network}` {first_w}, as in `{at_name}`"),
        });
        self.report(n, Some(format!("input {weights} {f}")), d);
        None
    }

    fn regression(&mut self, n: NodeIndex, op: &Op, on: Selection) -> Option<Fact> {
        let a = self.input(n, Port::Arg(0));
        let b = self.input(n, Port::Arg(1));
        let sel = self.input(n, Port::Kw("on"));
        let ((fa, xa), (fb, xb)) = (a?, b?);
        let name = op.name();
        match (&fa, &fb) {
            (Fact::Embedding { .. }, Fact::Embedding { .. }) if on == Selection::All => {
                if fa != fb {
                    let d = self.diag(
                        codes::SHAPE_MISMATCH,
                        n,
                        format!(
                            "`{name}` compares `{xa}` {fa} with `{xb}` {fb}: the widths differ"
                        ),
                    );
                    let d = self.def_label(d, n, &Port::Arg(0));
                    let d = self.def_label(d, n, &Port::Arg(1));
                    self.report(n, Some(format!("compare {fa} {fb}")), d);
                    return None;
                }
                return Some(Fact::Scalar);
            }
            (Fact::Tokens { .. }, Fact::Tokens { .. }) => {}
            _ => {
                let (bad, x, port) = if matches!(fa, Fact::Tokens { .. }) {
                    (&fb, &xb, Port::Arg(1))
                } else {
                    (&fa, &xa, Port::Arg(0))
                };
                let patch = match &fa {
                    Fact::Tokens { patch, .. } => patch.to_string(),
                    _ => "P".into(),
                };
                let mut d = self.diag(
                    codes::WRONG_TENSOR,
                    n,
                    format!(
                        "`{name}` compares per-patch values (tokens), but `{x}` is {} {bad}",
                        bad.noun()
                    ),
                );
                if matches!(bad, Fact::Image { .. }) {
                    d = d.help(format!(
                        "patchify the image: `patch_norm(patchify({x}, patch = {patch}))`"
                    ));
                } else if matches!(bad, Fact::Embedding { .. }) && on != Selection::All {
                    d = d.help("`on = masked(...)` selects patches: compare tokens, or drop `on`");
                }
                let d = self.def_label(d, n, &port);
                self.report(n, Some(format!("regress {fa} {fb}")), d);
                return None;
            }
        }
        let (
            Fact::Tokens {
                n: na,
                grid: ga,
                cls: ca,
                dim: da,
                patch: pa,
                channels: cha,
                ..
            },
            Fact::Tokens {
                n: nb,
                grid: gb,
                cls: cb,
                dim: db,
                patch: pb,
                channels: chb,
                ..
            },
        ) = (&fa, &fb)
        else {
            return None;
        };
        if da != db || na != nb || ca != cb || ga != gb {
            let help = if pa != pb {
                let target = [(1, pb), (0, pa)].into_iter().find(|(i, _)| {
                    self.g
                        .input(n, &Port::Arg(*i))
                        .and_then(|(s, _)| self.producer_patchify(s))
                        .is_some()
                });
                let facts = format!(
                    "`{xa}` has {ga} patches of {pa}×{pa}×{cha} = {da} values, `{xb}` {gb} of \
                     {pb}×{pb}×{chb} = {db}"
                );
                Some(match target {
                    Some((i, p)) => {
                        let want = if i == 1 { pa } else { pb };
                        format!(
                            "{facts}: patchify the target with the encoder's patch, `patch = {want}` \
                             (not {p})"
                        )
                    }
                    None => format!("{facts}: use one patch size for both"),
                })
            } else if na != nb {
                Some(
                    "one side holds only the visible patches: decode them first, or compare full grids"
                        .into(),
                )
            } else if ca != cb {
                Some("only one side has a CLS token: compare patch tokens with patch tokens".into())
            } else if da != db {
                Some(format!(
                    "`{xa}` has {da} values per patch and `{xb}` {db}: a decoder's `out` must match its target"
                ))
            } else {
                None
            };
            let d = self
                .diag(
                    codes::SHAPE_MISMATCH,
                    n,
                    format!("`{name}` compares `{xa}` {fa} with `{xb}` {fb}"),
                )
                .maybe_help(help);
            let d = self.def_label(d, n, &Port::Arg(0));
            let d = self.def_label(d, n, &Port::Arg(1));
            self.report(n, Some(format!("regress {fa} {fb}")), d);
            return None;
        }
        if on != Selection::All {
            let sel_word = if on == Selection::Masked {
                "masked"
            } else {
                "visible"
            };
            match sel {
                Some((Fact::Mask { grid, .. }, m)) => {
                    if grid != *ga {
                        let d = self.diag(
                            codes::MASK_MISMATCH,
                            n,
                            format!(
                                "mask `{m}` covers {grid} patches, but the compared tokens have {ga}"
                            ),
                        );
                        let d = self.def_label(d, n, &Port::Kw("on"));
                        self.report(n, None, d);
                        return None;
                    }
                    if na != ga {
                        let d = self.diag(
                            codes::MASK_MISMATCH,
                            n,
                            format!(
                                "`on = {sel_word}({m})` selects grid positions, but `{xa}` holds \
                                 only {na} of the {ga}"
                            ),
                        )
                        .help("decode the visible tokens to the full grid first");
                        self.report(n, None, d);
                        return None;
                    }
                }
                Some((f, m)) => {
                    let decoder_mask = self
                        .g
                        .input(n, &Port::Arg(0))
                        .and_then(|(s, _)| self.producer_call(s))
                        .and_then(|c| self.g.input(c, &Port::Kw("mask")))
                        .map(|(s, _)| self.g.graph[s].name.clone());
                    let help = match decoder_mask {
                        Some(dm) => format!(
                            "select by the mask the decoder was given: `on = {sel_word}({dm})`"
                        ),
                        None => format!("select by a `mask(...)` node: `on = {sel_word}(m)`"),
                    };
                    let d = self
                        .diag(
                            codes::WRONG_TENSOR,
                            n,
                            format!(
                                "`on = {sel_word}(...)` takes a mask, but `{m}` is {} {f}",
                                f.noun()
                            ),
                        )
                        .help(help);
                    let d = self.def_label(d, n, &Port::Kw("on"));
                    self.report(n, None, d);
                    return None;
                }
                None => return None,
            }
        }
        Some(Fact::Scalar)
    }

    /// Gradient flow, trained networks, losses that train nothing.
    fn flow(&mut self) {
        let g = &self.g.graph;
        for i in g.node_indices() {
            let from_inputs = self
                .g
                .inputs(i)
                .iter()
                .any(|(p, s, _)| p.carries_grad() && self.info.grad[s.index()]);
            self.info.grad[i.index()] = match &g[i].op {
                Op::StopGrad => false,
                Op::Call { ema: false, .. } => true,
                _ => from_inputs,
            };
        }
        for t in &self.g.terms {
            self.info.used[t.node.index()] = true;
            if t.weight != 0.0 {
                self.info.to_loss[t.node.index()] = true;
            }
        }
        for i in g.node_indices().rev() {
            let (used, back) = (self.info.used[i.index()], self.info.to_loss[i.index()]);
            let through = !matches!(g[i].op, Op::StopGrad);
            for (p, s, _) in self.g.inputs(i) {
                if used {
                    self.info.used[s.index()] = true;
                }
                if back && through && p.carries_grad() {
                    self.info.to_loss[s.index()] = true;
                }
            }
        }
        let mut trained: Vec<String> = Vec::new();
        for i in g.node_indices() {
            if let Op::Call {
                weights,
                ema: false,
                ..
            } = &g[i].op
                && self.info.to_loss[i.index()]
                && !trained.contains(weights)
            {
                trained.push(weights.clone());
            }
        }
        self.info.trained = trained;
        for t in self.g.terms.clone() {
            if t.weight != 0.0 {
                self.constant_losses(t.node, &t);
            }
        }
    }

    /// Reports `loss` (of objective term `t`) if it depends on no trainable parameter; else
    /// looks for such losses inside it (`mean`/`sum` of losses).
    fn constant_losses(&mut self, loss: NodeIndex, t: &crate::ir::Term) {
        if self.info.facts[loss.index()].is_none() {
            return;
        }
        if self.info.grad[loss.index()] {
            if matches!(self.g.graph[loss].op, Op::Mean | Op::Sum) {
                for (_, s, _) in self.g.inputs(loss) {
                    self.constant_losses(s, t);
                }
            }
            return;
        }
        let (stops, emas, networks) = self.blockers(loss);
        let why = if !stops.is_empty() {
            format!("every input reaches it through {}", and_list(&stops))
        } else if !emas.is_empty() {
            format!(
                "its inputs come only from EMA networks ({}), which gradient does not train",
                and_list(&emas)
            )
        } else if networks {
            "its inputs do not depend on any network's output".to_string()
        } else {
            "no network computes its inputs: it compares fixed data".to_string()
        };
        let help = if !stops.is_empty() {
            "keep `stop_grad` on the target branch only; the online branch must pass gradient"
        } else if !emas.is_empty() {
            "compare a trained (online) branch with the EMA branch, e.g. `cosine(q1, stop_grad(k2))`"
        } else {
            "compare a network's output with this target, or drop the term"
        };
        let node = &self.g.graph[loss];
        let (msg, label) = if loss == t.node {
            (
                format!(
                    "loss `{}` does not depend on any trainable parameter",
                    t.name
                ),
                "trains nothing".to_string(),
            )
        } else {
            let sub = self.show(loss, None);
            (
                format!(
                    "`{sub}` in loss `{}` does not depend on any trainable parameter",
                    t.name
                ),
                format!("`{sub}` trains nothing"),
            )
        };
        let d = Diagnostic::error(codes::NO_GRADIENT, node.span, msg)
            .label(label)
            .with_label(t.span, format!("weighted {} in the objective", t.weight))
            .note(why)
            .help(help);
        self.no_grad_losses.push(loss);
        self.report(loss, None, d);
    }

    /// Why `loss` has no gradient: the `stop_grad`s cutting it, the EMA networks feeding it,
    /// and whether any network is upstream at all.
    fn blockers(&self, loss: NodeIndex) -> (Vec<String>, Vec<String>, bool) {
        let (mut stops, mut emas, mut networks) = (Vec::new(), Vec::new(), false);
        let mut stack = vec![loss];
        let mut seen = HashSet::new();
        while let Some(i) = stack.pop() {
            if !seen.insert(i) {
                continue;
            }
            match &self.g.graph[i].op {
                Op::StopGrad => {
                    stops.push(i);
                    networks |= self
                        .upstream(i)
                        .any(|u| matches!(self.g.graph[u].op, Op::Call { .. }));
                    continue;
                }
                Op::Call { ema: true, .. } => {
                    networks = true;
                    emas.push(i);
                }
                Op::Call { .. } => networks = true,
                _ => {}
            }
            stack.extend(
                self.g
                    .inputs(i)
                    .into_iter()
                    .filter(|(p, _, _)| p.carries_grad())
                    .map(|(_, s, _)| s),
            );
        }
        stops.sort();
        emas.sort();
        let stops = stops.into_iter().map(|i| self.stop_desc(i)).collect();
        let mut names: Vec<String> = Vec::new();
        for i in emas {
            let name = format!("`{}`", self.g.graph[i].op.name());
            if !names.contains(&name) {
                names.push(name);
            }
        }
        (stops, names, networks)
    }

    /// A `stop_grad` node for messages: "`stop_grad(z1)`", or "the `stop_grad` of `z2`" for a
    /// named one.
    fn stop_desc(&self, i: NodeIndex) -> String {
        if self.g.graph[i].named {
            format!("the `stop_grad` of `{}`", self.g.graph[i].name)
        } else {
            format!("`{}`", self.show(i, None))
        }
    }

    /// Every node `n` is computed from, through any input.
    fn upstream(&self, n: NodeIndex) -> impl Iterator<Item = NodeIndex> + '_ {
        let mut dfs = petgraph::visit::Dfs::new(petgraph::visit::Reversed(&self.g.graph), n);
        std::iter::from_fn(move || dfs.next(petgraph::visit::Reversed(&self.g.graph)))
            .filter(move |&u| u != n)
    }

    /// Unused nodes, networks and views; networks that receive no gradient.
    fn unused(&mut self) {
        let g = &self.g.graph;
        // Unused named nodes, each reported at the last one of its unused chain.
        let unused = |i: NodeIndex| !self.info.used[i.index()];
        let mut warn = Vec::new();
        for i in g.node_indices().filter(|&i| g[i].named && unused(i)) {
            if g.neighbors_directed(i, Direction::Outgoing).any(unused) {
                continue; // reported with the node that uses it
            }
            let node = &g[i];
            // Named unused nodes computed only for this one, in computation order.
            let mut only_for: Vec<NodeIndex> = self
                .upstream(i)
                .filter(|&u| g[u].named && unused(u))
                .filter(|&u| g.neighbors_directed(u, Direction::Outgoing).all(unused))
                .collect();
            only_for.sort();
            let feeds: Vec<String> = only_for
                .iter()
                .map(|&u| format!("`{}`", g[u].name))
                .collect();
            let removals: Vec<String> = std::iter::once(i)
                .chain(only_for.iter().rev().copied())
                .map(|u| format!("`{} = none`", g[u].name))
                .collect();
            let mut d = Diagnostic::error(
                codes::UNUSED_NODE,
                node.span,
                format!("node `{}` does not contribute to the objective", node.name),
            )
            .label("no objective term uses it")
            .help(format!(
                "use it in a loss, or remove it ({} in an extending spec)",
                removals.join(", ")
            ));
            if !feeds.is_empty() {
                d = d.note(format!(
                    "{} {} only computed for it",
                    and_list(&feeds),
                    if feeds.len() == 1 { "is" } else { "are" }
                ));
            }
            warn.push(d);
        }
        let mut calls: HashSet<&str> = HashSet::new();
        let mut masks: HashSet<&str> = HashSet::new();
        // Named nodes that call a network without being used, by network.
        let mut callers: HashMap<&str, Vec<&str>> = HashMap::new();
        for i in g.node_indices() {
            match &g[i].op {
                Op::Call { network, .. } => {
                    if self.info.used[i.index()] {
                        calls.insert(network);
                    } else {
                        // A nested node is named `parent/op`.
                        let parent = g[i].name.split('/').next().unwrap_or_default();
                        let list = callers.entry(network).or_default();
                        if !list.contains(&parent) {
                            list.push(parent);
                        }
                    }
                }
                Op::Mask { network, .. } if self.info.used[i.index()] => {
                    masks.insert(network);
                }
                _ => {}
            }
        }
        // Networks whose output feeds a loss reported as training nothing: already explained.
        let explained: HashSet<String> = self
            .no_grad_losses
            .iter()
            .flat_map(|&l| self.upstream(l))
            .filter_map(|u| match &g[u].op {
                Op::Call { network, .. } => Some(network.clone()),
                _ => None,
            })
            .collect();
        for (name, net) in &self.g.networks {
            let name = name.as_str();
            let followed = self
                .g
                .networks
                .values()
                .any(|e| e.ema_of.as_deref() == Some(name) && calls.contains(e.name.as_str()));
            if !calls.contains(name) && !followed {
                let (msg, label) = if masks.contains(name) {
                    (
                        format!(
                            "network `{name}` is never called; `mask({name}, ...)` only reads its patch grid"
                        ),
                        "its weights are never used",
                    )
                } else if let Some(callers) = callers.get(name) {
                    let names: Vec<String> = callers.iter().map(|c| format!("`{c}`")).collect();
                    warn.push(
                        Diagnostic::error(
                            codes::UNUSED_DECL,
                            net.span,
                            format!(
                                "network `{name}` is only called by {}, which no objective term uses",
                                and_list(&names)
                            ),
                        )
                        .label("not built")
                        .help(format!(
                            "use {} in a loss, or remove {} and the network",
                            and_list(&names),
                            if names.len() == 1 { "it" } else { "them" }
                        )),
                    );
                    continue;
                } else {
                    (format!("network `{name}` is never used"), "declared here")
                };
                warn.push(
                    Diagnostic::error(codes::UNUSED_DECL, net.span, msg)
                        .label(label)
                        .help(format!(
                            "call it in the graph, e.g. `z = {name}(x)`, or remove it (`network.{name} = none` in an extending spec)"
                        )),
                );
                continue;
            }
            let weights = net.ema_of.as_deref().unwrap_or(name);
            if !calls.contains(name)
                || self.info.trained.iter().any(|t| t == weights)
                || explained.contains(name)
            {
                continue;
            }
            let d = if let Some(src) = &net.ema_of {
                Diagnostic::error(
                    codes::UNTRAINED,
                    net.span,
                    format!("EMA network `{name}` follows `{src}`, which receives no gradient"),
                )
                .label("stays at its initial weights")
                .help(format!(
                    "train `{src}`: call it in the online branch of a weighted loss"
                ))
            } else {
                let why = self.untrained_reason(name);
                let mut d = Diagnostic::error(
                    codes::UNTRAINED,
                    net.span,
                    format!("network `{name}` receives no gradient"),
                )
                .label("stays at its initial weights")
                .note(why.0);
                if why.1 {
                    d = d.help(format!(
                        "remove the `stop_grad`; or, for a slowly updated copy of a trained network, \
                         declare `network {name}: ema {{ source = ... }}`"
                    ));
                } else {
                    d = d.help(
                        "give the term a weight above 0, or remove it and the networks only it uses",
                    );
                }
                d
            };
            warn.push(d);
        }
        for (view, span) in &self.g.views {
            let used = g.node_indices().any(|i| {
                self.info.used[i.index()] && matches!(&g[i].op, Op::View { view: v } if v == view)
            });
            if !used {
                warn.push(
                    Diagnostic::error(
                        codes::UNUSED_DECL,
                        *span,
                        format!("view `{view}` is never used"),
                    )
                    .label("declared here")
                    .help(format!(
                        "draw it in the graph, `x = view({view})`, or remove it (`view.{view} = none` in an extending spec)"
                    )),
                );
            }
        }
        self.diags.extend(warn);
    }

    /// Why the used network `name` gets no gradient: a note naming the `stop_grad`s or the
    /// zero-weight terms in the way, and whether it was `stop_grad`.
    fn untrained_reason(&self, name: &str) -> (String, bool) {
        let g = &self.g.graph;
        let mut stops = Vec::new();
        for i in g.node_indices() {
            if matches!(g[i].op, Op::StopGrad)
                && self.info.used[i.index()]
                && self
                    .upstream(i)
                    .any(|u| matches!(&g[u].op, Op::Call { network, .. } if network == name))
            {
                let s = self.stop_desc(i);
                if !stops.contains(&s) {
                    stops.push(s);
                }
            }
        }
        if !stops.is_empty() {
            return (
                format!(
                    "its output reaches the objective only through {}",
                    and_list(&stops)
                ),
                true,
            );
        }
        let zero: Vec<String> = self
            .g
            .terms
            .iter()
            .filter(|t| t.weight == 0.0)
            .map(|t| format!("`{}`", t.name))
            .collect();
        (
            format!(
                "it only feeds objective terms of weight 0 ({})",
                and_list(&zero)
            ),
            false,
        )
    }
}

/// The side of a view's output: the last resizing augmentation's `size`, else its input's.
fn view_size(view: Option<&RBlock>, input: u32) -> u32 {
    let mut size = input;
    for a in view.map(|v| v.children.as_slice()).unwrap_or_default() {
        if matches!(
            a.kind.as_str(),
            "random_resized_crop" | "resize" | "center_crop" | "shift_crop"
        ) && let Some(s) = a.get("size").and_then(RValue::as_i64)
        {
            size = s as u32;
        }
    }
    size
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{lower, resolve_source};

    /// A small spec: a view `v` (28 px), a ViT `encoder` (patch 4, dim 64: a 7×7 grid), an MLP
    /// `projector` (64 → 32), the extra declarations `decls`, `graph` and `objective`.
    fn spec(decls: &str, graph: &str, objective: &str) -> String {
        format!(
            "data: fashion_mnist {{ split = train }}\n\
             view v {{ random_resized_crop {{ scale = 0.35..1.0 }} }}\n\
             network encoder: vit {{ patch = 4, dim = 64, depth = 1, heads = 1 }}\n\
             network projector: mlp {{ hidden = 64, out = 32 }}\n\
             {decls}\n\
             graph {{\n{graph}\n}}\n\
             objective {{ {objective} }}\n\
             optimizer: adamw {{ lr = 1e-4 }}\n\
             train {{ epochs = 1, batch = 8 }}\n"
        )
    }

    /// Diagnostics of the whole pipeline, as `(code, message)`.
    fn diags(text: &str) -> Vec<(&'static str, String)> {
        resolve_source("t.canspec", text, &[])
            .diagnostics
            .into_iter()
            .map(|d| (d.code.id, d.message))
            .collect()
    }

    /// The errors of `diags`.
    fn errors(text: &str) -> Vec<(&'static str, String)> {
        diags(text)
            .into_iter()
            .filter(|(c, _)| c.starts_with('E'))
            .collect()
    }

    /// Lowers and validates a spec that resolves; panics (a test failure) otherwise.
    fn info(text: &str) -> (GraphInfo, LossGraph, Vec<Diagnostic>) {
        let res = resolve_source("t.canspec", text, &[]);
        let spec = res
            .variants
            .first()
            .unwrap_or_else(|| panic!("spec has errors: {:?}", diags(text)));
        let (g, d) = lower::lower(spec);
        assert!(d.is_empty(), "lowering: {d:?}");
        let (info, d) = validate(spec, &g);
        (info, g, d)
    }

    fn node(g: &LossGraph, name: &str) -> usize {
        g.by_name[name].index()
    }

    const TWO_VIEWS: &str = "x1 = view(v)\nx2 = view(v)\n";

    #[test]
    fn gradient_flows_through_an_ema_network_into_its_input() {
        // `teacher(encoder(x))`: the EMA projector's weights take no gradient, but the encoder
        // under it does.
        let text = spec(
            "network teacher: ema { source = projector }",
            &format!(
                "{TWO_VIEWS}z1 = projector(pool(encoder(x1)))\n\
                 k2 = teacher(pool(encoder(x2)))\nnce = infonce(z1, k2)"
            ),
            "nce = 1.0",
        );
        let (info, g, d) = info(&text);
        assert!(d.is_empty(), "{d:?}");
        assert!(info.grad[node(&g, "k2")]);
        assert!(info.to_loss[node(&g, "k2")]);
        assert_eq!(info.trained, ["encoder", "projector"]);
    }

    #[test]
    fn ema_of_a_view_has_no_gradient() {
        // Only EMA weights between the view and the loss: the key branch is constant.
        let text = spec(
            "network teacher: ema { source = encoder }",
            &format!(
                "{TWO_VIEWS}z1 = projector(pool(encoder(x1)))\n\
                 k2 = projector(pool(teacher(x2)))\nnce = infonce(z1, stop_grad(k2))"
            ),
            "nce = 1.0",
        );
        let (info, g, d) = info(&text);
        assert!(d.is_empty(), "{d:?}");
        let teacher_call = g
            .graph
            .node_indices()
            .find(|&i| g.graph[i].op.name() == "teacher")
            .expect("teacher is called");
        assert!(!info.grad[teacher_call.index()]);
        // Both are still trained through z1.
        assert_eq!(info.trained, ["encoder", "projector"]);
    }

    #[test]
    fn stop_grad_blocks_gradient_into_a_network() {
        let text = spec(
            "network target: mlp { hidden = 64, out = 32 }",
            &format!(
                "{TWO_VIEWS}z1 = projector(pool(encoder(x1)))\n\
                 z2 = stop_grad(target(pool(encoder(x2))))\nnce = infonce(z1, z2)"
            ),
            "nce = 1.0",
        );
        let (info, g, d) = info(&text);
        assert!(!info.grad[node(&g, "z2")]);
        assert!(!info.trained.contains(&"target".to_string()));
        let codes: Vec<&str> = d.iter().map(|d| d.code.id).collect();
        assert_eq!(codes, ["W0005"]);
        assert!(d[0].message.contains("`target`"), "{}", d[0].message);
        assert!(
            d[0].notes[0].contains("the `stop_grad` of `z2`"),
            "{:?}",
            d[0].notes
        );
    }

    #[test]
    fn a_weight_zero_term_does_not_train() {
        let text = spec(
            "network head: mlp { hidden = 64, out = 32 }",
            &format!(
                "{TWO_VIEWS}z1 = projector(pool(encoder(x1)))\n\
                 z2 = projector(pool(encoder(x2)))\nnce = infonce(z1, z2)\n\
                 aux = cosine(head(pool(encoder(x1))), z2)"
            ),
            "nce = 1.0\naux = 0",
        );
        let (info, g, d) = info(&text);
        let aux = node(&g, "aux");
        assert!(info.used[aux], "a weight-0 term is still computed");
        assert!(!info.to_loss[aux]);
        assert!(!info.trained.contains(&"head".to_string()));
        let codes: Vec<&str> = d.iter().map(|d| d.code.id).collect();
        assert_eq!(codes, ["W0005"]);
        assert!(
            d[0].notes[0].contains("weight 0 (`aux`)"),
            "{:?}",
            d[0].notes
        );
    }

    #[test]
    fn a_constant_loss_inside_a_sum_is_reported() {
        let text = spec(
            "",
            &format!(
                "{TWO_VIEWS}z1 = projector(pool(encoder(x1)))\nz2 = projector(pool(encoder(x2)))\n\
                 nce = sum(infonce(z1, z2), infonce(stop_grad(z1), stop_grad(z2)))"
            ),
            "nce = 1.0",
        );
        let d = diags(&text);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].0, "E0057");
        assert!(
            d[0].1
                .starts_with("`infonce(stop_grad(z1), stop_grad(z2))` in loss `nce`"),
            "{}",
            d[0].1
        );
    }

    #[test]
    fn a_loss_of_stop_grads_is_reported_once_without_untrained_warnings() {
        let text = spec(
            "",
            &format!(
                "{TWO_VIEWS}z1 = projector(pool(encoder(x1)))\nz2 = projector(pool(encoder(x2)))\n\
                 nce = infonce(stop_grad(z1), stop_grad(z2))"
            ),
            "nce = 1.0",
        );
        let codes: Vec<&str> = diags(&text).into_iter().map(|(c, _)| c).collect();
        assert_eq!(codes, ["E0057"]);
    }

    #[test]
    fn a_cycle_is_reported_once_and_nothing_else() {
        // Without the guard, x1, x2, both networks and the view would be reported unused.
        let text = spec(
            "",
            "x1 = view(v)\nz1 = projector(pool(h1))\nh1 = encoder(view(v, from = z1))\n\
             nce = infonce(z1, z1)",
            "nce = 1.0",
        );
        let d = diags(&text);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].0, "E0056");
        assert_eq!(d[0].1, "the graph has a cycle: `z1` → `h1` → `z1`");
    }

    #[test]
    fn one_mistake_at_two_call_sites_is_one_error() {
        let text = spec(
            "view small { random_resized_crop { size = 24, scale = 0.35..1.0 } }",
            "x1 = view(small)\nx2 = view(small)\nz1 = projector(pool(encoder(x1)))\n\
             z2 = projector(pool(encoder(x2)))\nnce = infonce(z1, z2)",
            "nce = 1.0",
        );
        let res = resolve_source("t.canspec", &text, &[]);
        let errors: Vec<&Diagnostic> = res.diagnostics.iter().filter(|d| d.is_error()).collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        let d = errors[0];
        assert_eq!(d.code.id, "E0055");
        assert_eq!(
            d.message,
            "`x1` is [B, 1, 24, 24], but `encoder` takes [B, 1, 28, 28] (image = 28, channels = 1)"
        );
        assert_eq!(d.label, "in `encoder(x1)`");
        // The second call and the view's definition.
        let secondary: Vec<&str> = d.secondary.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(
            secondary,
            [
                "`x1` is [B, 1, 24, 24]",
                "the same problem in `encoder(x2)`"
            ]
        );
    }

    #[test]
    fn mask_ratio_must_keep_one_of_49_patches() {
        let graph = |ratio: &str| {
            spec(
                "network decoder: vit_decoder { dim = 32, depth = 1, heads = 1 }",
                &format!(
                    "x = view(v)\nm = mask(encoder, ratio = {ratio})\ny = decoder(encoder(x, mask = m), mask = m)\n\
                     rec = mse(y, patchify(x, patch = 4), on = masked(m))"
                ),
                "rec = 1.0",
            )
        };
        // 49 × (1 − 0.9795) = 1.0045: one patch stays visible.
        assert_eq!(errors(&graph("0.9795")), []);
        // 49 × (1 − 0.9796) = 0.9996: none does.
        let d = errors(&graph("0.9796"));
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].0, "E0059");
    }

    #[test]
    fn nested_values_are_named_as_written() {
        let text = spec(
            "network headless: vit { patch = 4, dim = 64, depth = 1, heads = 1, cls = false }",
            &format!(
                "{TWO_VIEWS}z1 = projector(pool(headless(x1), mode = cls))\n\
                 z2 = projector(pool(encoder(x2)))\nnce = infonce(z1, z2)"
            ),
            "nce = 1.0",
        );
        let res = resolve_source("t.canspec", &text, &[]);
        let d = &res.diagnostics[0];
        assert_eq!(d.code.id, "E0051");
        assert_eq!(
            d.message,
            "`pool(mode = cls)` reads the CLS token, but `headless(x1)` has none (`headless` has `cls = false`)"
        );
        assert_eq!(d.label, "in `pool(headless(x1), mode = cls)`");
    }

    #[test]
    fn long_expressions_are_shortened() {
        // A wrong MLP input deep in a chain: the shown value keeps the outer calls.
        let text = spec(
            "network predictor: mlp { hidden = 64, out = 32 }\nnetwork head: mlp { hidden = 64, out = 32 }",
            &format!(
                "{TWO_VIEWS}z1 = head(predictor(projector(pool(encoder(view(v, from = x1)), mode = mean_all))))\n\
                 z2 = head(predictor(projector(pool(encoder(x2)))))\nnce = infonce(z1, encoder(x2))"
            ),
            "nce = 1.0",
        );
        let res = resolve_source("t.canspec", &text, &[]);
        let labels: Vec<String> = res.diagnostics.iter().map(|d| d.label.clone()).collect();
        assert!(
            labels.iter().all(|l| l.chars().count() <= SHOW_MAX + 6),
            "{labels:?}"
        );
        assert!(
            res.diagnostics
                .iter()
                .any(|d| d.message.contains("`encoder(x2)` is tokens")),
            "{:?}",
            res.diagnostics
        );
    }

    #[test]
    fn a_mask_over_an_ema_network_uses_its_source_grid() {
        // Before the fix this mask silently had no type and the plan lost every node after it.
        let text = spec(
            "network teacher: ema { source = encoder }\n\
             network decoder: vit_decoder { dim = 32, depth = 1, heads = 1 }",
            "x = view(v)\nm = mask(teacher, ratio = 0.5)\n\
             y = decoder(encoder(x, mask = m), mask = m)\n\
             rec = mse(y, patchify(x, patch = 4), on = masked(m))",
            "rec = 1.0",
        );
        let (info, g, _) = info(&text);
        // 7×7 grid; floor(49 × 0.5) = 24 kept, 25 masked.
        assert_eq!(
            info.facts[node(&g, "m")],
            Some(Fact::Mask {
                grid: 49,
                masked: 25
            })
        );
    }

    #[test]
    fn every_used_node_of_the_spec_library_has_a_type() {
        let mut paths: Vec<std::path::PathBuf> = Vec::new();
        for dir in ["../specs", "../specs/ablations", "../tests/bad/bases"] {
            for e in std::fs::read_dir(dir).expect("spec directory").flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "canspec")
                    && !p.to_string_lossy().contains("cycle_")
                {
                    paths.push(p);
                }
            }
        }
        assert!(paths.len() >= 15, "{paths:?}");
        for p in paths {
            let res = crate::resolve_path(&p, &[]);
            assert_eq!(res.diagnostics, [], "{}", p.display());
            for spec in &res.variants {
                let (g, _) = lower::lower(spec);
                let (info, d) = validate(spec, &g);
                assert!(d.is_empty(), "{}: {d:?}", p.display());
                for i in g.graph.node_indices().filter(|i| info.used[i.index()]) {
                    assert!(
                        info.facts[i.index()].is_some(),
                        "{}: `{}` has no type",
                        p.display(),
                        g.graph[i].name
                    );
                }
            }
        }
    }
}
