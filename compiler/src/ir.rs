//! The loss graph: typed operations wired by tensor edges, built by [`crate::lower`] from a
//! resolved spec and checked by [`crate::validate`].
//!
//! Nodes are operations in creation order, which is a topological order (inputs are lowered
//! before the nodes that read them). Parameters are not nodes: each network call names the
//! network whose weights it uses, so two calls of one network share weights, and an EMA network
//! names the network it follows.

use canc_grammar::Span;
use indexmap::IndexMap;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::Serialize;
use std::fmt;

/// A distribution of a per-image random value (a noise level).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub enum Dist {
    /// Always this value.
    Const(f64),
    /// Uniform on `[lo, hi]`.
    Uniform(f64, f64),
    /// Log-uniform on `[lo, hi]`.
    LogUniform(f64, f64),
    /// Normal with mean and standard deviation.
    Normal(f64, f64),
}

impl fmt::Display for Dist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dist::Const(x) => write!(f, "{x}"),
            Dist::Uniform(a, b) => write!(f, "U({a}, {b})"),
            Dist::LogUniform(a, b) => write!(f, "logU({a}, {b})"),
            Dist::Normal(m, s) => write!(f, "N({m}, {s}²)"),
        }
    }
}

/// Which patch positions a per-patch loss averages over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum Selection {
    /// Every position.
    All,
    /// Positions the mask hides (the mask is the `on` input).
    Masked,
    /// Positions the mask keeps.
    Visible,
}

/// How masked positions are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum MaskStrategy {
    /// Independent random positions (a random permutation per image).
    Random,
    /// Square blocks of `block × block` patches.
    Block,
}

/// How tokens become one embedding per image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum PoolMode {
    /// Mean of the patch tokens.
    Mean,
    /// Mean of all tokens, CLS included.
    MeanAll,
    /// The CLS token.
    Cls,
}

/// The kind of a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum NetKind {
    /// ViT encoder.
    Vit,
    /// MAE-style ViT decoder.
    VitDecoder,
    /// MLP projector or predictor.
    Mlp,
}

impl NetKind {
    /// The spec's type name.
    pub fn name(self) -> &'static str {
        match self {
            NetKind::Vit => "vit",
            NetKind::VitDecoder => "vit_decoder",
            NetKind::Mlp => "mlp",
        }
    }
}

/// A typed operation. Inputs are the node's incoming edges, ordered by [`Port`].
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub enum Op {
    /// One augmented view of the batch's images (input `from`: an earlier view to augment).
    View {
        /// The `view` block.
        view: String,
    },
    /// The batch's class labels.
    Labels,
    /// `x + σ·ε`, σ per image; outputs `noise` (σ·ε) and `sigma`.
    AddNoise {
        /// σ's distribution.
        sigma: Dist,
    },
    /// Image → patch vectors `(p1 p2 c)`.
    Patchify {
        /// Patch side.
        patch: u32,
    },
    /// Per-patch normalisation (MAE norm_pix).
    PatchNorm {
        /// Added to the variance.
        eps: f64,
    },
    /// A random mask over a ViT's patch grid (1 = masked).
    Mask {
        /// The ViT whose grid is masked.
        network: String,
        /// Fraction masked.
        ratio: f64,
        /// Random or block.
        strategy: MaskStrategy,
        /// Block side, in patches.
        block: u32,
    },
    /// Tokens → one embedding per image.
    Pool {
        /// Which tokens.
        mode: PoolMode,
    },
    /// Identity forward, no gradient backward.
    StopGrad,
    /// L2-normalise the last dimension.
    L2Norm,
    /// A network applied to its input (`mask`, `cond` ports as the network's kind takes).
    Call {
        /// The network called (for an EMA network, its own name).
        network: String,
        /// Whose weights: the network itself, or the source of an EMA network.
        weights: String,
        /// The kind (an EMA network has its source's).
        kind: NetKind,
        /// True for an EMA network: no gradient reaches its weights.
        ema: bool,
    },
    /// NT-Xent over the two views' embeddings.
    InfoNce {
        /// Temperature.
        temperature: f64,
        /// `mean` over 2N anchors or SimCLR's `sum_views`.
        sum_views: bool,
    },
    /// Query/key InfoNCE (MoCo v3).
    InfoNceQk {
        /// Temperature.
        temperature: f64,
        /// Multiply by 2τ.
        scale_2tau: bool,
    },
    /// Supervised contrastive loss (port `labels`).
    SupCon {
        /// Temperature.
        temperature: f64,
        /// Loss scaled by τ / base.
        base_temperature: f64,
    },
    /// Mean squared error per patch over the selected positions (port `on`: the mask).
    Mse {
        /// Which positions.
        on: Selection,
    },
    /// Mean absolute error per patch over the selected positions.
    L1 {
        /// Which positions.
        on: Selection,
    },
    /// Negative cosine similarity.
    Cosine,
    /// Mean of losses.
    Mean,
    /// Sum of losses.
    Sum,
}

impl Op {
    /// The spec's name for the op (a network call shows the network's name).
    pub fn name(&self) -> &str {
        match self {
            Op::View { .. } => "view",
            Op::Labels => "labels",
            Op::AddNoise { .. } => "add_noise",
            Op::Patchify { .. } => "patchify",
            Op::PatchNorm { .. } => "patch_norm",
            Op::Mask { .. } => "mask",
            Op::Pool { .. } => "pool",
            Op::StopGrad => "stop_grad",
            Op::L2Norm => "l2norm",
            Op::Call { network, .. } => network,
            Op::InfoNce { .. } => "infonce",
            Op::InfoNceQk { .. } => "infonce_qk",
            Op::SupCon { .. } => "supcon",
            Op::Mse { .. } => "mse",
            Op::L1 { .. } => "l1",
            Op::Cosine => "cosine",
            Op::Mean => "mean",
            Op::Sum => "sum",
        }
    }

    /// True for ops that produce a scalar loss.
    pub fn is_loss(&self) -> bool {
        matches!(
            self,
            Op::InfoNce { .. }
                | Op::InfoNceQk { .. }
                | Op::SupCon { .. }
                | Op::Mse { .. }
                | Op::L1 { .. }
                | Op::Cosine
                | Op::Mean
                | Op::Sum
        )
    }

    /// True for ops that draw random numbers each step.
    pub fn is_random(&self) -> bool {
        matches!(
            self,
            Op::View { .. } | Op::AddNoise { .. } | Op::Mask { .. }
        )
    }
}

/// Which input of a node an edge feeds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Port {
    /// The i-th positional input.
    Arg(u32),
    /// A keyword input: `mask`, `cond`, `labels`, `on` or `from`.
    Kw(&'static str),
}

impl Port {
    /// True if gradient flows back through this input (positional tensor inputs only; masks,
    /// labels, σ and selections carry none).
    pub fn carries_grad(&self) -> bool {
        matches!(self, Port::Arg(_))
    }
}

/// The keyword ports, so a deserialised `Port::Kw` can point at a `'static` name.
const KEYWORD_PORTS: [&str; 5] = ["mask", "cond", "labels", "on", "from"];

impl<'de> serde::Deserialize<'de> for Port {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        enum Raw {
            Arg(u32),
            Kw(String),
        }
        match Raw::deserialize(d)? {
            Raw::Arg(i) => Ok(Port::Arg(i)),
            Raw::Kw(k) => KEYWORD_PORTS
                .iter()
                .find(|&&p| p == k)
                .map(|&p| Port::Kw(p))
                .ok_or_else(|| serde::de::Error::custom(format!("unknown port `{k}`"))),
        }
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Port::Arg(i) => write!(f, "{i}"),
            Port::Kw(k) => f.write_str(k),
        }
    }
}

/// A tensor edge: the producer's output (`None` for its main output) into a port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Edge {
    /// The input it feeds.
    pub port: Port,
    /// The producer's named output (`noise`, `sigma`), or `None` for the main one.
    pub output: Option<String>,
}

/// One operation of the graph.
#[derive(Debug, Clone)]
pub struct Node {
    /// The spec's node name; nested expressions get `parent/op` (`z1/pool`).
    pub name: String,
    /// What it computes.
    pub op: Op,
    /// The expression it came from (nested nodes share their top-level node's span).
    pub span: Span,
    /// True for nodes named in the spec, false for nested sub-expressions.
    pub named: bool,
}

/// An objective term.
#[derive(Debug, Clone)]
pub struct Term {
    /// The node's name.
    pub name: String,
    /// The loss node.
    pub node: NodeIndex,
    /// Its weight.
    pub weight: f64,
    /// The objective entry.
    pub span: Span,
}

/// A declared network.
#[derive(Debug, Clone)]
pub struct Network {
    /// Name.
    pub name: String,
    /// Kind (an EMA network has its source's).
    pub kind: NetKind,
    /// For an EMA network, the network it follows.
    pub ema_of: Option<String>,
    /// The name in the `network` block.
    pub span: Span,
}

/// The loss graph of one spec variant.
#[derive(Debug, Clone, Default)]
pub struct LossGraph {
    /// Operations and tensor edges; node indices are a topological order.
    pub graph: DiGraph<Node, Edge>,
    /// Spec node name → node.
    pub by_name: IndexMap<String, NodeIndex>,
    /// Networks in declaration order.
    pub networks: IndexMap<String, Network>,
    /// Declared views → the span of their name.
    pub views: IndexMap<String, Span>,
    /// Objective terms in declaration order.
    pub terms: Vec<Term>,
}

impl LossGraph {
    /// The node's inputs sorted by port: `(port, producer, output)`.
    pub fn inputs(&self, n: NodeIndex) -> Vec<(Port, NodeIndex, Option<String>)> {
        use petgraph::visit::EdgeRef;
        let mut v: Vec<_> = self
            .graph
            .edges_directed(n, petgraph::Direction::Incoming)
            .map(|e| {
                (
                    e.weight().port.clone(),
                    e.source(),
                    e.weight().output.clone(),
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The producer feeding `port` of `n`, if any.
    pub fn input(&self, n: NodeIndex, port: &Port) -> Option<(NodeIndex, Option<String>)> {
        self.inputs(n)
            .into_iter()
            .find(|(p, _, _)| p == port)
            .map(|(_, s, o)| (s, o))
    }

    /// The value name of a producer's output: `n1`, `n1.sigma`.
    pub fn value_name(&self, n: NodeIndex, output: Option<&str>) -> String {
        match output {
            Some(o) => format!("{}.{o}", self.graph[n].name),
            None => self.graph[n].name.clone(),
        }
    }
}
