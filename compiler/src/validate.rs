//! Static checks of the loss graph: type and shape inference through every node, gradient flow
//! (which values need a gradient, which networks are trained, which losses train nothing),
//! masks, and unused declarations. Changes nothing; returns a [`GraphInfo`] side table that the
//! planner requires.

use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::ir::{LossGraph, NetKind, Op, PoolMode, Port, Selection};
use crate::resolved::{RBlock, RValue, ResolvedSpec};
use crate::shape::{Fact, kept_count};
use indexmap::IndexMap;
use petgraph::graph::NodeIndex;

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

struct V<'a> {
    spec: &'a ResolvedSpec,
    g: &'a LossGraph,
    info: GraphInfo,
    diags: Vec<Diagnostic>,
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
    };
    for i in g.graph.node_indices() {
        let f = v.infer(i);
        v.info.facts[i.index()] = f;
    }
    v.flow();
    v.unused();
    (v.info, v.diags)
}

fn int(b: &RBlock, k: &str) -> u32 {
    b.get(k).and_then(RValue::as_i64).unwrap_or(0).max(0) as u32
}

impl V<'_> {
    fn err(&mut self, code: crate::codes::Code, n: NodeIndex, msg: String) -> &mut Diagnostic {
        let node = &self.g.graph[n];
        let label = if node.named {
            format!("in `{}`", node.name)
        } else {
            format!("in `{}` (inside `{}`)", node.op.name(), node.name)
        };
        self.diags
            .push(Diagnostic::error(code, node.span, msg).label(label));
        self.diags.last_mut().expect("just pushed")
    }

    fn net(&self, name: &str) -> Option<&RBlock> {
        self.spec.named("network", name)
    }

    /// Type of input `port` of `n`; `None` if absent or unknown.
    fn input(&self, n: NodeIndex, port: Port) -> Option<(Fact, String)> {
        let (src, out) = self.g.input(n, &port)?;
        let f = self.info.fact(src, out.as_deref())?;
        Some((f, self.g.value_name(src, out.as_deref())))
    }

    fn data_image(&self) -> (u32, u32) {
        let d = self.spec.block("data");
        let size = d
            .and_then(|d| d.get("image_size"))
            .and_then(RValue::as_i64)
            .map(|x| x as u32);
        let (s, c) = match d.and_then(|d| d.ty.as_deref()) {
            Some("cifar10") | Some("cifar100") => (32, 3),
            Some("fashion_mnist") | None => (28, 1),
            _ => (
                size.unwrap_or(32),
                d.map(|d| int(d, "channels")).unwrap_or(3),
            ),
        };
        (s, c)
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
                        self.err(
                            codes::WRONG_TENSOR,
                            n,
                            format!("`from` must be a view, but `{from}` is {}", f.noun()),
                        );
                        return None;
                    }
                    None if self.g.input(n, &Port::Kw("from")).is_some() => return None,
                    None => self.data_image(),
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
                    self.err(
                        codes::WRONG_TENSOR,
                        n,
                        format!(
                            "`add_noise` takes an image batch, but `{x}` is {}",
                            f.noun()
                        ),
                    );
                    None
                }
            },
            Op::Patchify { patch } => match self.input(n, Port::Arg(0))? {
                (Fact::Image { c, size }, x) => {
                    if patch == 0 || size % patch != 0 {
                        self.err(
                            codes::INCONSISTENT,
                            n,
                            format!("patch {patch} does not divide `{x}`'s {size}×{size} images"),
                        )
                        .help = Some(format!("pick a patch that divides {size}"));
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
                    self.err(
                        codes::WRONG_TENSOR,
                        n,
                        format!("`patchify` takes an image batch, but `{x}` is {}", f.noun()),
                    );
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
                    self.err(
                        codes::WRONG_TENSOR,
                        n,
                        format!("`{}` takes {takes}, but `{x}` is {}", op.name(), f.noun()),
                    );
                    return None;
                }
                Some(f)
            }
            Op::Mask { network, ratio, .. } => {
                let net = self.net(&network)?;
                let (image, patch) = (int(net, "image"), int(net, "patch"));
                if patch == 0 || image % patch != 0 {
                    return None; // reported with the network
                }
                let grid = (image / patch) * (image / patch);
                let kept = kept_count(grid, ratio);
                if kept == 0 {
                    self.err(
                        codes::NO_VISIBLE,
                        n,
                        format!(
                            "mask ratio {ratio} hides all {grid} patches of `{network}`'s grid"
                        ),
                    )
                    .help = Some(format!(
                        "the encoder keeps floor({grid} · (1 − ratio)) patches; use a ratio below {:.4}",
                        1.0 - 1.0 / f64::from(grid)
                    ));
                    return None;
                }
                Some(Fact::Mask {
                    grid,
                    masked: grid - kept,
                })
            }
            Op::Pool { mode } => match self.input(n, Port::Arg(0))? {
                (Fact::Tokens { cls, dim, .. }, x) => {
                    if mode == PoolMode::Cls && !cls {
                        self.err(
                            codes::INCONSISTENT,
                            n,
                            format!("`pool(mode = cls)` needs a CLS token, but `{x}` has none"),
                        )
                        .help = Some(
                            "set `cls = true` on the encoder, or pool with `mode = mean`".into(),
                        );
                        return None;
                    }
                    Some(Fact::Embedding { dim })
                }
                (f, x) => {
                    self.err(
                        codes::WRONG_TENSOR,
                        n,
                        format!("`pool` takes tokens, but `{x}` is {} {f}", f.noun()),
                    );
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
                let a = self.input(n, Port::Arg(0));
                let b = self.input(n, Port::Arg(1));
                if let Op::SupCon { .. } = op {
                    match self.input(n, Port::Kw("labels")) {
                        Some((Fact::Labels { .. }, _)) | None => {}
                        Some((f, x)) => {
                            self.err(
                                codes::WRONG_TENSOR,
                                n,
                                format!("`labels` must be `labels()`, but `{x}` is {}", f.noun()),
                            );
                        }
                    }
                }
                let ((fa, xa), (fb, xb)) = (a?, b?);
                for (f, x) in [(&fa, &xa), (&fb, &xb)] {
                    if !matches!(f, Fact::Embedding { .. }) {
                        let hint = if matches!(f, Fact::Tokens { .. }) {
                            format!("pool the tokens first: `pool({x})`")
                        } else {
                            "pass the output of a projector or predictor".to_string()
                        };
                        self.err(
                            codes::WRONG_TENSOR,
                            n,
                            format!(
                                "`{}` compares embeddings [B, d], but `{x}` is {} {f}",
                                op.name(),
                                f.noun()
                            ),
                        )
                        .help = Some(hint);
                        return None;
                    }
                }
                if fa != fb {
                    self.err(
                        codes::SHAPE_MISMATCH,
                        n,
                        format!(
                            "`{}` compares `{xa}` {fa} with `{xb}` {fb}: the widths differ",
                            op.name()
                        ),
                    )
                    .help = Some(
                        "give both branches the same output width (`out` of the last MLP)".into(),
                    );
                    return None;
                }
                Some(Fact::Scalar)
            }
            Op::Mse { on } | Op::L1 { on } => self.regression(n, &op, on),
            Op::Mean | Op::Sum => {
                let inputs = self.g.inputs(n);
                let mut ok = true;
                for (port, _, _) in inputs {
                    let Some((f, x)) = self.input(n, port) else {
                        ok = false;
                        continue;
                    };
                    if f != Fact::Scalar {
                        self.err(
                            codes::WRONG_TENSOR,
                            n,
                            format!(
                                "`{}` combines losses, but `{x}` is {} {f}",
                                op.name(),
                                f.noun()
                            ),
                        );
                        ok = false;
                    }
                }
                ok.then_some(Fact::Scalar)
            }
        }
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
                    self.err(
                        codes::WRONG_TENSOR,
                        n,
                        format!(
                            "ViT `{network}` encodes images, but `{x}` is {} {f}",
                            f.noun()
                        ),
                    );
                    return None;
                };
                if size != image || fc != c {
                    let d = self.err(
                        codes::SHAPE_MISMATCH,
                        n,
                        format!(
                            "`{x}` is {f} but `{network}` takes [B, {c}, {image}, {image}] \
                             (image = {image}, channels = {c})"
                        ),
                    );
                    d.help = Some(if size != image {
                        format!(
                            "make the view's crop `size = {image}`, or set `image = {size}` on `{weights}`"
                        )
                    } else {
                        format!("set `channels = {fc}` on `{weights}`")
                    });
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
                if let Some((src, _)) = self.g.input(n, &Port::Kw("mask")) {
                    match self.info.fact(src, None) {
                        Some(Fact::Mask { grid: mg, masked }) => {
                            if mg != grid {
                                self.err(
                                    codes::MASK_MISMATCH,
                                    n,
                                    format!(
                                        "mask `{}` covers {mg} patches but `{network}` has {grid}",
                                        self.g.graph[src].name
                                    ),
                                );
                                return None;
                            }
                            if let Fact::Tokens { n, visible_of, .. } = &mut tokens {
                                *n = grid - masked;
                                *visible_of = Some(self.g.graph[src].name.clone());
                            }
                        }
                        Some(other) => {
                            self.err(
                                codes::WRONG_TENSOR,
                                n,
                                format!(
                                    "`mask` must be a `mask(...)` node, but `{}` is {}",
                                    self.g.graph[src].name,
                                    other.noun()
                                ),
                            );
                            return None;
                        }
                        None => return None,
                    }
                }
                self.same_input(n, weights, Fact::Image { c: fc, size }, &x)?;
                tokens
            }
            NetKind::VitDecoder => {
                let Fact::Tokens {
                    grid,
                    dim,
                    patch,
                    channels,
                    visible_of,
                    n: count,
                    cls,
                } = f.clone()
                else {
                    self.err(
                        codes::WRONG_TENSOR,
                        n,
                        format!(
                            "decoder `{network}` takes encoder tokens, but `{x}` is {} {f}",
                            f.noun()
                        ),
                    );
                    return None;
                };
                let given = self
                    .g
                    .input(n, &Port::Kw("mask"))
                    .map(|(s, _)| self.g.graph[s].name.clone());
                match (&visible_of, &given) {
                    (Some(m), None) => {
                        self.err(
                            codes::MASK_MISMATCH,
                            n,
                            format!("`{x}` holds only the patches mask `{m}` keeps, but the decoder is not given the mask"),
                        )
                        .help = Some(format!("pass it: `{network}({x}, mask = {m})`"));
                        return None;
                    }
                    (Some(m), Some(g)) if m != g => {
                        self.err(
                            codes::MASK_MISMATCH,
                            n,
                            format!(
                                "`{x}` was encoded with mask `{m}`, but the decoder is given `{g}`"
                            ),
                        )
                        .help = Some(format!("pass the encoder's mask: `mask = {m}`"));
                        return None;
                    }
                    (None, Some(g)) => {
                        self.err(
                            codes::MASK_MISMATCH,
                            n,
                            format!(
                                "`{x}` was encoded without a mask, but the decoder is given `{g}`"
                            ),
                        )
                        .help = Some(format!("mask the encoder too: `encoder(x, mask = {g})`"));
                        return None;
                    }
                    _ => {}
                }
                if let Some((cf, cx)) = self.input(n, Port::Kw("cond"))
                    && cf != Fact::Sigma
                {
                    self.err(
                        codes::WRONG_TENSOR,
                        n,
                        format!(
                            "`cond` must be a noise level (`node.sigma`), but `{cx}` is {}",
                            cf.noun()
                        ),
                    );
                    return None;
                }
                let width = match net.get("out") {
                    Some(RValue::Int(d)) => *d as u32,
                    _ => patch * patch * channels,
                };
                let _ = count;
                let encoder_tokens = Fact::Tokens {
                    n: grid,
                    grid,
                    cls,
                    dim,
                    patch,
                    channels,
                    visible_of: None,
                };
                self.same_input(n, weights, encoder_tokens, &x)?;
                Fact::Tokens {
                    n: grid,
                    grid,
                    cls: false,
                    dim: width,
                    patch,
                    channels,
                    visible_of: None,
                }
            }
            NetKind::Mlp => {
                let Fact::Embedding { dim } = f else {
                    let d = self.err(
                        codes::WRONG_TENSOR,
                        n,
                        format!(
                            "MLP `{network}` takes an embedding [B, d], but `{x}` is {} {f}",
                            f.noun()
                        ),
                    );
                    if matches!(f, Fact::Tokens { .. }) {
                        d.help = Some(format!("pool the tokens first: `{network}(pool({x}))`"));
                    }
                    return None;
                };
                self.same_input(n, weights, Fact::Embedding { dim }, &x)?;
                Fact::Embedding {
                    dim: int(&net, "out"),
                }
            }
        };
        Some(out)
    }

    /// Every call of one set of weights must see the same input type.
    fn same_input(&mut self, n: NodeIndex, weights: &str, f: Fact, x: &str) -> Option<()> {
        let here = self.g.graph[n].name.clone();
        match self.info.net_inputs.get(weights) {
            None => {
                self.info.net_inputs.insert(weights.to_string(), (f, here));
                Some(())
            }
            Some((first, at)) if *first != f => {
                let (first, at) = (first.clone(), at.clone());
                let what = |f: &Fact| match f {
                    Fact::Embedding { dim } | Fact::Tokens { dim, .. } => format!("width {dim}"),
                    other => other.to_string(),
                };
                self.err(
                    codes::SHAPE_MISMATCH,
                    n,
                    format!(
                        "`{weights}` takes input of {} (first call, in `{at}`), but `{x}` here has {}",
                        what(&first),
                        what(&f)
                    ),
                )
                .notes
                .push("one network has one input width; every call (and every EMA copy's call) shares its weights".into());
                None
            }
            Some(_) => Some(()),
        }
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
                    self.err(
                        codes::SHAPE_MISMATCH,
                        n,
                        format!("`{name}` compares `{xa}` {fa} with `{xb}` {fb}"),
                    );
                    return None;
                }
                return Some(Fact::Scalar);
            }
            (Fact::Tokens { .. }, Fact::Tokens { .. }) => {}
            _ => {
                let bad = if matches!(fa, Fact::Tokens { .. }) {
                    (&fb, &xb)
                } else {
                    (&fa, &xa)
                };
                let d = self.err(
                    codes::WRONG_TENSOR,
                    n,
                    format!(
                        "`{name}` compares per-patch values (tokens), but `{}` is {} {}",
                        bad.1,
                        bad.0.noun(),
                        bad.0
                    ),
                );
                if matches!(bad.0, Fact::Image { .. }) {
                    d.help = Some(format!(
                        "patchify the image: `patchify({}, patch = P)`",
                        bad.1
                    ));
                }
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
            let d = self.err(
                codes::SHAPE_MISMATCH,
                n,
                format!("`{name}` compares `{xa}` {fa} with `{xb}` {fb}"),
            );
            if da != db && pa != pb {
                d.help = Some(format!(
                    "`{xa}` has {pa}×{pa}×{cha} = {da} values per patch and `{xb}` {pb}×{pb}×{chb} = {db}: use patch = {pa} for both"
                ));
            } else if na != nb {
                d.help = Some(
                    "one side has only the visible patches; decode them first, or compare full grids"
                        .into(),
                );
            }
            return None;
        }
        if on != Selection::All {
            match sel {
                Some((Fact::Mask { grid, .. }, m)) => {
                    if grid != *ga {
                        self.err(
                            codes::MASK_MISMATCH,
                            n,
                            format!(
                                "mask `{m}` covers {grid} patches but the compared tokens have {ga}"
                            ),
                        );
                        return None;
                    }
                    if na != ga {
                        self.err(
                            codes::MASK_MISMATCH,
                            n,
                            format!(
                                "`on = {}({m})` selects grid positions, but `{xa}` holds only {na} of {ga}",
                                if on == Selection::Masked { "masked" } else { "visible" }
                            ),
                        );
                        return None;
                    }
                }
                Some((f, m)) => {
                    self.err(
                        codes::WRONG_TENSOR,
                        n,
                        format!("`on` selects by a mask, but `{m}` is {}", f.noun()),
                    )
                    .help = Some("use a `mask(...)` node: `on = masked(m)`".into());
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
        for t in &self.g.terms {
            if t.weight != 0.0
                && !self.info.grad[t.node.index()]
                && self.info.facts[t.node.index()].is_some()
            {
                self.diags.push(
                    Diagnostic::error(
                        codes::NO_GRADIENT,
                        t.span,
                        format!("loss `{}` does not depend on any trainable parameter", t.name),
                    )
                    .label("this term trains nothing")
                    .with_label(self.g.graph[t.node].span, "every path from here to a network passes through `stop_grad` or an EMA network")
                    .help("remove a `stop_grad` from the online branch, or drop the term"),
                );
            }
        }
    }

    /// Unused nodes, networks and views; networks that receive no gradient.
    fn unused(&mut self) {
        let g = &self.g.graph;
        for i in g.node_indices() {
            let node = &g[i];
            if node.named && !self.info.used[i.index()] {
                self.diags.push(
                    Diagnostic::error(
                        codes::UNUSED_NODE,
                        node.span,
                        format!("node `{}` does not contribute to the objective", node.name),
                    )
                    .label("never computed")
                    .help(format!(
                        "use it in a loss, or remove it (`{} = none` in an extending spec)",
                        node.name
                    )),
                );
            }
        }
        let mut calls: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for i in g.node_indices().filter(|i| self.info.used[i.index()]) {
            if let Op::Call { network, .. } | Op::Mask { network, .. } = &g[i].op {
                calls.insert(network);
            }
        }
        let called = |name: &str| calls.contains(name);
        let mut warn = Vec::new();
        for (name, net) in &self.g.networks {
            let followed = self
                .g
                .networks
                .values()
                .any(|e| e.ema_of.as_deref() == Some(name) && called(&e.name));
            if !called(name) && !followed {
                warn.push(
                    Diagnostic::error(
                        codes::UNUSED_DECL,
                        net.span,
                        format!("network `{name}` is never used"),
                    )
                    .label("declared here")
                    .help(format!(
                        "call it in the graph, e.g. `z = {name}(x)`, or remove it"
                    )),
                );
                continue;
            }
            let weights = net.ema_of.as_deref().unwrap_or(name);
            if called(name) && !self.info.trained.iter().any(|t| t == weights) {
                let d = if let Some(src) = &net.ema_of {
                    Diagnostic::error(
                        codes::UNTRAINED,
                        net.span,
                        format!("EMA network `{name}` follows `{src}`, which receives no gradient"),
                    )
                    .label("stays at its initial weights")
                    .help(format!("train `{src}` through a weighted loss"))
                } else {
                    Diagnostic::error(
                        codes::UNTRAINED,
                        net.span,
                        format!("network `{name}` receives no gradient"),
                    )
                    .label("stays at its initial weights")
                    .help("its outputs reach the objective only through `stop_grad` or zero-weight terms")
                };
                warn.push(d);
            }
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
                        "use it in the graph: `x = view({view})`, or remove it"
                    )),
                );
            }
        }
        self.diags.extend(warn);
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
