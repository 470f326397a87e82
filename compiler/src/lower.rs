//! Lowering: a resolved spec's `graph` and `objective` blocks become a [`LossGraph`]. Nested
//! expressions become nodes of their own (`z1 = projector(pool(h1))` gives `z1/pool` and `z1`);
//! references may point forward; a cycle of references is an error, reported once per cycle.
//!
//! Names, arities and argument types were checked before (by `check`), so an expression this
//! stage cannot read is skipped silently rather than reported twice.

use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::ir::{
    Dist, Edge, LossGraph, MaskStrategy, NetKind, Network, Node, Op, PoolMode, Port, Selection,
    Term,
};
use crate::resolved::{RValue, ResolvedSpec};
use canc_grammar::Span;
use indexmap::IndexMap;
use petgraph::graph::NodeIndex;

type Args = [(Option<String>, RValue)];

enum State {
    Lowering,
    Done(Option<NodeIndex>),
}

struct Lower<'a> {
    spec: &'a ResolvedSpec,
    exprs: &'a IndexMap<String, RValue>,
    g: LossGraph,
    state: IndexMap<String, State>,
    /// The chain of named nodes being lowered, for cycle messages.
    stack: Vec<String>,
    diags: Vec<Diagnostic>,
    fallback: Span,
    /// Names given to nested nodes so far.
    taken: std::collections::HashSet<String>,
}

/// Builds the loss graph of `spec`; reports reference cycles.
pub fn lower(spec: &ResolvedSpec) -> (LossGraph, Vec<Diagnostic>) {
    let empty = IndexMap::new();
    let exprs = spec.block("graph").map_or(&empty, |b| &b.fields);
    let fallback = spec
        .spans
        .get("graph")
        .copied()
        .unwrap_or(Span::new(0, 0, 0));
    let mut l = Lower {
        spec,
        exprs,
        g: LossGraph::default(),
        state: IndexMap::new(),
        stack: Vec::new(),
        diags: Vec::new(),
        fallback,
        taken: exprs.keys().cloned().collect(),
    };
    l.declarations();
    for name in exprs.keys() {
        l.named(name);
    }
    if let Some(obj) = spec.block("objective") {
        for (name, w) in &obj.fields {
            let (Some(&node), Some(weight)) = (l.g.by_name.get(name), w.as_f64()) else {
                continue;
            };
            let span = l.span_of(&format!("objective.{name}"));
            l.g.terms.push(Term {
                name: name.clone(),
                node,
                weight,
                span,
            });
        }
    }
    (l.g, l.diags)
}

impl Lower<'_> {
    fn span_of(&self, path: &str) -> Span {
        self.spec.spans.get(path).copied().unwrap_or(self.fallback)
    }

    fn declarations(&mut self) {
        let kind_of = |ty: &str| match ty {
            "vit" => Some(NetKind::Vit),
            "vit_decoder" => Some(NetKind::VitDecoder),
            "mlp" => Some(NetKind::Mlp),
            _ => None,
        };
        for b in self.spec.blocks.iter().filter(|b| b.kind == "network") {
            let (Some(name), Some(ty)) = (&b.name, &b.ty) else {
                continue;
            };
            let (kind, ema_of) = if ty == "ema" {
                let src = b.get("source").and_then(RValue::as_str).unwrap_or_default();
                let kind = self
                    .spec
                    .named("network", src)
                    .and_then(|s| s.ty.as_deref())
                    .and_then(kind_of);
                (kind, Some(src.to_string()))
            } else {
                (kind_of(ty), None)
            };
            let Some(kind) = kind else { continue };
            let span = self.span_of(&format!("network.{name}"));
            self.g.networks.insert(
                name.clone(),
                Network {
                    name: name.clone(),
                    kind,
                    ema_of,
                    span,
                },
            );
        }
        for b in self.spec.blocks.iter().filter(|b| b.kind == "view") {
            if let Some(name) = &b.name {
                let span = self.span_of(&format!("view.{name}"));
                self.g.views.insert(name.clone(), span);
            }
        }
    }

    /// Lowers the named node (once); `None` if it cannot be built.
    fn named(&mut self, name: &str) -> Option<NodeIndex> {
        match self.state.get(name) {
            Some(State::Done(n)) => return *n,
            Some(State::Lowering) => {
                self.cycle(name);
                return None;
            }
            None => {}
        }
        let expr = self.exprs.get(name)?;
        self.state.insert(name.to_string(), State::Lowering);
        self.stack.push(name.to_string());
        let span = self.span_of(&format!("graph.{name}"));
        let n = self.expr(expr, name, name, span, true);
        self.stack.pop();
        self.state.insert(name.to_string(), State::Done(n));
        if let Some(n) = n {
            self.g.by_name.insert(name.to_string(), n);
        }
        n
    }

    /// Reports the cycle that a reference to `name`, which is being lowered, closes: once, at
    /// the node whose reference closes it, with the other references of the cycle as secondary
    /// labels. Every node of the cycle then fails to lower, so nothing else reports it again.
    fn cycle(&mut self, name: &str) {
        let start = self.stack.iter().position(|s| s == name).unwrap_or(0);
        let members = self.stack[start..].to_vec();
        let last = members.last().map_or(name, String::as_str);
        let span = self.span_of(&format!("graph.{last}"));
        let d = if members.len() <= 1 {
            Diagnostic::error(
                codes::GRAPH_CYCLE,
                span,
                format!("node `{name}` is computed from itself"),
            )
            .label(format!("`{name}` uses `{name}`"))
            .help("refer to the node it should be computed from")
        } else {
            let path: Vec<String> = members
                .iter()
                .chain(std::iter::once(&name.to_string()))
                .map(|m| format!("`{m}`"))
                .collect();
            let mut d = Diagnostic::error(
                codes::GRAPH_CYCLE,
                span,
                format!("the graph has a cycle: {}", path.join(" → ")),
            )
            .label(format!("`{last}` uses `{name}`, closing the cycle"))
            .help("one of these references should name another node");
            for pair in members.windows(2) {
                d = d.with_label(
                    self.span_of(&format!("graph.{}", pair[0])),
                    format!("`{}` uses `{}`", pair[0], pair[1]),
                );
            }
            d
        };
        self.diags.push(d.note(
            "each node is computed from nodes computed before it, so references cannot loop",
        ));
    }

    /// A tensor argument: a reference, `node.output`, or a nested call.
    fn tensor(
        &mut self,
        v: &RValue,
        parent: &str,
        span: Span,
    ) -> Option<(NodeIndex, Option<String>)> {
        match v {
            RValue::Ident(n) => self.named(n).map(|i| (i, None)),
            RValue::Output(n, o) => self.named(n).map(|i| (i, Some(o.clone()))),
            RValue::Call(..) => {
                let name = self.fresh(parent, v);
                self.expr(v, &name, parent, span, false).map(|i| (i, None))
            }
            _ => None,
        }
    }

    /// `parent/op`, `parent/op2`, … for a nested call.
    fn fresh(&mut self, parent: &str, v: &RValue) -> String {
        let op = match v {
            RValue::Call(f, _) => f.as_str(),
            _ => "expr",
        };
        let base = format!("{parent}/{op}");
        let name = if self.taken.contains(&base) {
            (2..)
                .map(|k| format!("{base}{k}"))
                .find(|s| !self.taken.contains(s))
                .unwrap_or(base)
        } else {
            base
        };
        self.taken.insert(name.clone());
        name
    }

    fn expr(
        &mut self,
        v: &RValue,
        name: &str,
        parent: &str,
        span: Span,
        named: bool,
    ) -> Option<NodeIndex> {
        let RValue::Call(f, args) = v else {
            return None;
        };
        let mut inputs: Vec<(Port, NodeIndex, Option<String>)> = Vec::new();
        let mut arg = 0u32;
        // Positional tensor inputs (views and networks are names, not tensors).
        let positional: Vec<&RValue> = args
            .iter()
            .filter(|(k, _)| k.is_none())
            .map(|(_, v)| v)
            .collect();
        let names_first = matches!(f.as_str(), "view" | "mask");
        for (i, p) in positional.iter().enumerate() {
            if names_first && i == 0 {
                continue;
            }
            let (n, o) = self.tensor(p, parent, span)?;
            inputs.push((Port::Arg(arg), n, o));
            arg += 1;
        }
        for key in ["from", "mask", "cond", "labels"] {
            if let Some(r) = kw(args, key)
                && !matches!(r, RValue::None)
            {
                let (n, o) = self.tensor(r, parent, span)?;
                inputs.push((Port::Kw(key), n, o));
            }
        }
        let on = match kw(args, "on") {
            Some(RValue::Call(sel, a)) => {
                let m = a.first().map(|(_, v)| v)?;
                let (n, o) = self.tensor(m, parent, span)?;
                inputs.push((Port::Kw("on"), n, o));
                if sel == "masked" {
                    Selection::Masked
                } else {
                    Selection::Visible
                }
            }
            _ => Selection::All,
        };
        let op = self.op(f, args, &positional, on)?;
        let idx = self.g.graph.add_node(Node {
            name: name.to_string(),
            op,
            span,
            named,
        });
        for (port, src, output) in inputs {
            self.g.graph.add_edge(src, idx, Edge { port, output });
        }
        Some(idx)
    }

    fn op(&self, f: &str, args: &Args, positional: &[&RValue], on: Selection) -> Option<Op> {
        let num = |k: &str, d: f64| kw(args, k).and_then(RValue::as_f64).unwrap_or(d);
        let int = |k: &str, d: i64| kw(args, k).and_then(RValue::as_i64).unwrap_or(d) as u32;
        let ident = |k: &str| kw(args, k).and_then(RValue::as_str).unwrap_or_default();
        let yes = |k: &str, d: bool| match kw(args, k) {
            Some(RValue::Bool(b)) => *b,
            _ => d,
        };
        let first_name = || {
            positional
                .first()
                .and_then(|v| v.as_str())
                .map(String::from)
        };
        Some(match f {
            "view" => Op::View {
                view: first_name()?,
            },
            "labels" => Op::Labels,
            "add_noise" => Op::AddNoise {
                sigma: dist(kw(args, "sigma")?)?,
            },
            "patchify" => Op::Patchify {
                patch: int("patch", 16),
            },
            "patch_norm" => Op::PatchNorm {
                eps: num("eps", 1e-6),
            },
            "mask" => Op::Mask {
                network: first_name()?,
                ratio: num("ratio", 0.75),
                strategy: if ident("strategy") == "block" {
                    MaskStrategy::Block
                } else {
                    MaskStrategy::Random
                },
                block: int("block", 2),
            },
            "pool" => Op::Pool {
                mode: match ident("mode") {
                    "cls" => PoolMode::Cls,
                    "mean_all" => PoolMode::MeanAll,
                    _ => PoolMode::Mean,
                },
            },
            "stop_grad" => Op::StopGrad,
            "l2norm" => Op::L2Norm,
            "infonce" => Op::InfoNce {
                temperature: num("temperature", 0.1),
                sum_views: ident("reduction") == "sum_views",
            },
            "infonce_qk" => Op::InfoNceQk {
                temperature: num("temperature", 0.2),
                scale_2tau: yes("scale_2tau", true),
            },
            "supcon" => Op::SupCon {
                temperature: num("temperature", 0.07),
                base_temperature: num("base_temperature", 0.07),
            },
            "mse" => Op::Mse { on },
            "l1" => Op::L1 { on },
            "cosine" => Op::Cosine,
            "mean" => Op::Mean,
            "sum" => Op::Sum,
            net => {
                let n = self.g.networks.get(net)?;
                Op::Call {
                    network: net.to_string(),
                    weights: n.ema_of.clone().unwrap_or_else(|| net.to_string()),
                    kind: n.kind,
                    ema: n.ema_of.is_some(),
                }
            }
        })
    }
}

fn kw<'a>(args: &'a Args, key: &str) -> Option<&'a RValue> {
    args.iter()
        .find(|(k, _)| k.as_deref() == Some(key))
        .map(|(_, v)| v)
}

fn dist(v: &RValue) -> Option<Dist> {
    if let Some(x) = v.as_f64() {
        return Some(Dist::Const(x));
    }
    let RValue::Call(f, a) = v else { return None };
    let x = a.first()?.1.as_f64()?;
    let y = a.get(1)?.1.as_f64()?;
    Some(match f.as_str() {
        "uniform" => Dist::Uniform(x, y),
        "loguniform" => Dist::LogUniform(x, y),
        "normal" => Dist::Normal(x, y),
        _ => return None,
    })
}
