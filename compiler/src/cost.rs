//! Model cost: parameters per network (split by weight decay), forward and backward FLOPs per
//! image and per step counting masking (the encoder sees only visible tokens), and a memory
//! estimate. Everything is computed from the plan, so `canc cost` needs no Burn.

use crate::ir::{NetKind, Op, Port};
use crate::plan::Role;
use crate::resolved::RValue;
use crate::shape::Fact;
use indexmap::IndexMap;
use serde::Serialize;
use std::collections::HashMap;

/// A parameter count, split by whether weight decay applies (matrices) or not (biases, norms,
/// position embeddings, CLS and mask tokens).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Params {
    /// Weights that get weight decay.
    pub decay: u64,
    /// Biases, norms, tokens, position embeddings.
    pub no_decay: u64,
}

impl Params {
    /// All parameters.
    pub fn total(&self) -> u64 {
        self.decay + self.no_decay
    }

    fn linear(&mut self, i: u64, o: u64, bias: bool) {
        self.decay += i * o;
        if bias {
            self.no_decay += o;
        }
    }
}

fn get(cfg: &IndexMap<String, RValue>, k: &str) -> u64 {
    cfg.get(k).and_then(RValue::as_i64).unwrap_or(0).max(0) as u64
}

fn flag(cfg: &IndexMap<String, RValue>, k: &str, d: bool) -> bool {
    match cfg.get(k) {
        Some(RValue::Bool(b)) => *b,
        _ => d,
    }
}

fn ratio(cfg: &IndexMap<String, RValue>) -> f64 {
    cfg.get("mlp_ratio").and_then(RValue::as_f64).unwrap_or(4.0)
}

/// Parameters of `depth` pre-norm transformer blocks of width `d` (LayerNorm, qkv + proj with
/// biases, MLP `d → r·d → d`).
fn blocks(p: &mut Params, depth: u64, d: u64, mlp_ratio: f64) {
    let h = hidden(d, mlp_ratio);
    for _ in 0..depth {
        p.no_decay += 2 * d; // norm1
        p.linear(d, 3 * d, true);
        p.linear(d, d, true);
        p.no_decay += 2 * d; // norm2
        p.linear(d, h, true);
        p.linear(h, d, true);
    }
}

/// Parameters of a network of `kind` with settings `cfg`, called with `input`.
///
/// - ViT: patch embedding `p²c·d + d`, CLS token `d`, learned positions `(N + cls)·d` (sin-cos
///   positions are fixed, not parameters), blocks, final LayerNorm `2d`.
/// - Decoder: input projection `e·D + D`, mask token `D`, learned positions, σ-conditioning MLP
///   (`cond_dim → D → D`) when `cond = sigma`, blocks, LayerNorm, head `D·out + out`.
/// - MLP: linear layers `in → hidden → … → out`, a norm's affine `2·width` after each hidden
///   layer (`bn`, `ln`), and after the last (`last_norm = bn`).
pub fn params(kind: NetKind, cfg: &IndexMap<String, RValue>, input: &Fact) -> Params {
    let mut p = Params::default();
    match (kind, input) {
        (NetKind::Vit, Fact::Image { c, size }) => {
            let (d, patch) = (get(cfg, "dim"), get(cfg, "patch").max(1));
            let grid = (u64::from(*size) / patch).pow(2);
            let cls = flag(cfg, "cls", true);
            p.linear(patch * patch * u64::from(*c), d, true);
            if cls {
                p.no_decay += d;
            }
            if cfg.get("pos").and_then(RValue::as_str) == Some("learned") {
                p.no_decay += (grid + u64::from(cls)) * d;
            }
            blocks(&mut p, get(cfg, "depth"), d, ratio(cfg));
            if flag(cfg, "final_norm", true) {
                p.no_decay += 2 * d;
            }
        }
        (
            NetKind::VitDecoder,
            Fact::Tokens {
                grid,
                cls,
                dim,
                patch,
                channels,
                ..
            },
        ) => {
            let d = get(cfg, "dim");
            p.linear(u64::from(*dim), d, true);
            p.no_decay += d; // mask token
            if cfg.get("pos").and_then(RValue::as_str) == Some("learned") {
                p.no_decay += (u64::from(*grid) + u64::from(*cls)) * d;
            }
            if cfg.get("cond").and_then(RValue::as_str) == Some("sigma") {
                p.linear(get(cfg, "cond_dim"), d, true);
                p.linear(d, d, true);
            }
            blocks(&mut p, get(cfg, "depth"), d, ratio(cfg));
            p.no_decay += 2 * d;
            let out = match cfg.get("out") {
                Some(RValue::Int(o)) => *o as u64,
                _ => u64::from(*patch * *patch * *channels),
            };
            p.linear(d, out, true);
        }
        (NetKind::Mlp, Fact::Embedding { dim }) => {
            let layers = get(cfg, "layers").max(1);
            let (hidden, out) = (get(cfg, "hidden"), get(cfg, "out"));
            let bias = flag(cfg, "bias", true);
            let norm = cfg.get("norm").and_then(RValue::as_str).unwrap_or("none");
            let mut width = u64::from(*dim);
            for _ in 1..layers {
                p.linear(width, hidden, bias);
                if norm != "none" {
                    p.no_decay += 2 * hidden;
                }
                width = hidden;
            }
            p.linear(width, out, flag(cfg, "last_bias", true));
            if cfg.get("last_norm").and_then(RValue::as_str) == Some("bn") {
                p.no_decay += 2 * out;
            }
        }
        _ => {}
    }
    p
}

/// Number format of the memory estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Dtype {
    /// 4 bytes.
    F32,
    /// 2 bytes (activations; master weights stay f32).
    Bf16,
    /// 2 bytes (activations; master weights stay f32).
    F16,
}

impl Dtype {
    /// Bytes per element.
    pub fn bytes(self) -> u64 {
        match self {
            Dtype::F32 => 4,
            Dtype::Bf16 | Dtype::F16 => 2,
        }
    }

    /// The name `canc cost --dtype` takes.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
            Dtype::F16 => "f16",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// FLOPs
// ---------------------------------------------------------------------------------------------

/// The shape of a ViT encoder, for [`vit_forward_macs`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct VitShape {
    /// Image side in pixels.
    pub image: u64,
    /// Patch side in pixels.
    pub patch: u64,
    /// Image channels.
    pub channels: u64,
    /// Width `d`.
    pub dim: u64,
    /// Transformer blocks.
    pub depth: u64,
    /// MLP hidden width / `d`.
    pub mlp_ratio: f64,
    /// A CLS token leads the sequence.
    pub cls: bool,
}

impl VitShape {
    /// Patch positions of the full grid: `(image / patch)²`.
    pub fn grid(&self) -> u64 {
        (self.image / self.patch.max(1)).pow(2)
    }
}

/// MLP hidden width of a block: `round(d · mlp_ratio)`, as [`params`] counts it.
fn hidden(d: u64, mlp_ratio: f64) -> u64 {
    (d as f64 * mlp_ratio).round() as u64
}

/// Multiply-accumulates of one pre-norm transformer block on `n` tokens of width `d`:
/// `n·(4d² + 2·h·d) + 2·n²·d` with `h = round(d · mlp_ratio)` (qkv `3d²`, proj `d²`, MLP `2hd`,
/// `QKᵀ` and `PV` `n²d` each); for `mlp_ratio = 4` this is `12·n·d² + 2·n²·d`. Norms, softmax,
/// GELU and residual adds are not counted (the convention of timm's published GMACs).
pub fn block_macs(n: u64, d: u64, mlp_ratio: f64) -> u64 {
    let h = hidden(d, mlp_ratio);
    n * (4 * d * d + 2 * h * d) + 2 * n * n * d
}

/// Forward multiply-accumulates per image of a ViT encoder that sees `visible_patches` patches
/// (`None`: the whole grid): patch embedding `n·p²·c·d` on the visible patches, then `depth`
/// blocks on `n + cls` tokens ([`block_macs`]).
pub fn vit_forward_macs(shape: &VitShape, visible_patches: Option<u64>) -> u64 {
    let n = visible_patches.unwrap_or_else(|| shape.grid());
    let tokens = n + u64::from(shape.cls);
    let embed = n * shape.patch * shape.patch * shape.channels * shape.dim;
    embed + shape.depth * block_macs(tokens, shape.dim, shape.mlp_ratio)
}

/// The cost of one step of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpCost {
    /// The step's value name.
    pub step: String,
    /// The network called, for a network call.
    pub network: Option<String>,
    /// Forward FLOPs per image.
    pub forward: f64,
    /// Backward FLOPs per image (`2 × forward` when the step is kept for backward, else 0).
    pub backward: f64,
}

/// FLOPs of one training step of a plan, per image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepCost {
    /// Forward FLOPs per image, every step of the plan.
    pub forward_flops_per_image: f64,
    /// Backward FLOPs per image: `2 × forward` of each step whose gradient reaches a loss.
    pub backward_flops_per_image: f64,
    /// Forward FLOPs per image by network name, summed over its calls (plan order).
    pub per_network: Vec<(String, f64)>,
    /// Each step's cost, in plan order.
    pub steps: Vec<OpCost>,
    /// The batch the batch-dependent terms (contrastive similarity matrices) were counted at.
    pub batch: u64,
}

impl StepCost {
    /// Forward plus backward FLOPs per image.
    pub fn train_flops_per_image(&self) -> f64 {
        self.forward_flops_per_image + self.backward_flops_per_image
    }

    /// Forward FLOPs per image of the network `name` (0 if it is not called).
    pub fn network(&self, name: &str) -> f64 {
        self.per_network
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0.0, |(_, f)| *f)
    }
}

/// The plan's images per optimizer step (`train.batch`, at least 1).
pub fn plan_batch(plan: &crate::plan::Plan) -> u64 {
    plan.train
        .get("batch")
        .and_then(RValue::as_i64)
        .unwrap_or(1)
        .max(1) as u64
}

/// Gradient-accumulation steps per optimizer step (`train.accum`, at least 1).
fn accum(plan: &crate::plan::Plan) -> u64 {
    plan.train
        .get("accum")
        .and_then(RValue::as_i64)
        .unwrap_or(1)
        .max(1) as u64
}

/// FLOPs per image of one training step of `plan` at the plan's batch; see [`step_cost_at`].
pub fn step_cost(plan: &crate::plan::Plan) -> StepCost {
    step_cost_at(plan, plan_batch(plan))
}

/// FLOPs per image of one training step of `plan` with `batch` images per step (only the
/// contrastive losses' similarity matrices depend on it, through the micro-batch
/// `batch / train.accum` they see). FLOPs = 2 · MACs. Network calls count only
/// their matrix products (see [`vit_forward_macs`], [`block_macs`]); the encoder sees only the
/// visible tokens of its call's output. Small ops count their elementwise work. Backward is
/// `2 × forward` for steps kept for backward (their gradient reaches a weighted loss), 0 for the
/// rest (EMA teachers, stop-grad branches, targets). Augmentation is data loading, not counted.
pub fn step_cost_at(plan: &crate::plan::Plan, batch: u64) -> StepCost {
    let batch = batch.max(1);
    let micro = batch.div_ceil(accum(plan));
    let facts: HashMap<&str, &Fact> = plan
        .steps
        .iter()
        .map(|s| (s.name.as_str(), &s.out))
        .collect();
    let mut steps = Vec::with_capacity(plan.steps.len());
    let mut per_network: Vec<(String, f64)> = Vec::new();
    for s in &plan.steps {
        let input = |k: usize| -> Option<Fact> {
            let v = &s
                .inputs
                .iter()
                .filter(|i| i.port.carries_grad())
                .nth(k)?
                .value;
            value_fact(&facts, v)
        };
        let (network, forward) = match &s.op {
            Op::Call { network, .. } => {
                let net = plan.network(network);
                let f = match (net, input(0)) {
                    (Some(net), Some(x)) => 2.0 * call_macs(net, &x, &s.out) as f64,
                    _ => 0.0,
                };
                match per_network.iter_mut().find(|(n, _)| n == network) {
                    Some(e) => e.1 += f,
                    None => per_network.push((network.clone(), f)),
                }
                (Some(network.clone()), f)
            }
            op => (None, small_op_flops(op, input(0).as_ref(), micro)),
        };
        let backward = if s.keep { 2.0 * forward } else { 0.0 };
        steps.push(OpCost {
            step: s.name.clone(),
            network,
            forward,
            backward,
        });
    }
    // Plan order of networks, then any called network the plan does not list.
    per_network.sort_by_key(|(n, _)| {
        plan.networks
            .iter()
            .position(|p| &p.name == n)
            .unwrap_or(usize::MAX)
    });
    StepCost {
        forward_flops_per_image: steps.iter().map(|s| s.forward).sum(),
        backward_flops_per_image: steps.iter().map(|s| s.backward).sum(),
        per_network,
        steps,
        batch,
    }
}

/// The type of a value name: `n1` is a step's output, `n1.sigma` a noise level, `n1.noise` has
/// its image's type.
fn value_fact(facts: &HashMap<&str, &Fact>, value: &str) -> Option<Fact> {
    if let Some(f) = facts.get(value) {
        return Some((*f).clone());
    }
    let (node, output) = value.rsplit_once('.')?;
    match output {
        "sigma" => Some(Fact::Sigma),
        _ => facts.get(node).map(|f| (*f).clone()),
    }
}

/// Forward MACs per image of one network call on `input` producing `out`.
fn call_macs(net: &crate::plan::NetworkPlan, input: &Fact, out: &Fact) -> u64 {
    let cfg = &net.config;
    match (net.kind, input, out) {
        (NetKind::Vit, Fact::Image { c, size }, Fact::Tokens { n, .. }) => {
            let shape = VitShape {
                image: u64::from(*size),
                patch: get(cfg, "patch").max(1),
                channels: u64::from(*c),
                dim: get(cfg, "dim"),
                depth: get(cfg, "depth"),
                mlp_ratio: ratio(cfg),
                cls: flag(cfg, "cls", true),
            };
            vit_forward_macs(&shape, Some(u64::from(*n)))
        }
        (
            NetKind::VitDecoder,
            Fact::Tokens {
                n, grid, cls, dim, ..
            },
            Fact::Tokens { dim: out_dim, .. },
        ) => {
            let d = get(cfg, "dim");
            let (n_in, grid, cls) = (u64::from(*n), u64::from(*grid), u64::from(*cls));
            let embed = (n_in + cls) * u64::from(*dim) * d;
            let blocks = get(cfg, "depth") * block_macs(grid + cls, d, ratio(cfg));
            let head = grid * d * u64::from(*out_dim);
            let cond = if cfg.get("cond").and_then(RValue::as_str) == Some("sigma") {
                get(cfg, "cond_dim") * d + d * d
            } else {
                0
            };
            embed + blocks + head + cond
        }
        (NetKind::Mlp, Fact::Embedding { dim }, _) => mlp_widths(cfg, u64::from(*dim))
            .windows(2)
            .map(|w| w[0] * w[1])
            .sum(),
        _ => 0,
    }
}

/// Widths of an MLP's layers, input first: `in, hidden, …, hidden, out`.
fn mlp_widths(cfg: &IndexMap<String, RValue>, input: u64) -> Vec<u64> {
    let layers = get(cfg, "layers").max(1);
    let mut w = vec![input];
    w.extend((1..layers).map(|_| get(cfg, "hidden")));
    w.push(get(cfg, "out"));
    w
}

/// Forward FLOPs per image of an op that is not a network call, given its first tensor input.
/// Elementwise estimates: noise `2` per element, patch norm `5`, pooling `1` per input element,
/// L2 norm `3`, MSE/L1 `3`, cosine `6·d`. Contrastive losses: the similarity matrix
/// (`(2B)²·d` MACs for InfoNCE and SupCon, `B²·d` for query/key InfoNCE) and `3` FLOPs per
/// logit for the softmax, divided by the batch.
fn small_op_flops(op: &Op, x: Option<&Fact>, batch: u64) -> f64 {
    let numel = x.map_or(0, Fact::numel_per_image) as f64;
    let width = match x {
        Some(Fact::Embedding { dim }) => f64::from(*dim),
        _ => 0.0,
    };
    let b = batch as f64;
    match op {
        Op::AddNoise { .. } => 2.0 * numel,
        Op::PatchNorm { .. } => 5.0 * numel,
        Op::Pool { .. } => numel,
        Op::L2Norm => 3.0 * numel,
        Op::Mse { .. } | Op::L1 { .. } => 3.0 * numel,
        Op::Cosine => 6.0 * width,
        // (2B)² logits of width d, per image: 2·4B²·d / B; softmax 3 FLOPs per logit.
        Op::InfoNce { .. } | Op::SupCon { .. } => 8.0 * b * width + 12.0 * b,
        // B² logits per image: 2·B²·d / B.
        Op::InfoNceQk { .. } => 2.0 * b * width + 3.0 * b,
        Op::View { .. }
        | Op::Labels
        | Op::Patchify { .. }
        | Op::Mask { .. }
        | Op::StopGrad
        | Op::Call { .. }
        | Op::Mean
        | Op::Sum => 0.0,
    }
}

// ---------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------

/// A memory estimate of one training step, in bytes. An estimate: it leaves out kernel
/// workspace, allocator fragmentation, the framework's own buffers and the CUDA context, and
/// assumes attention probabilities are materialised (Burn's autodiff does not use flash
/// attention in the backward pass).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Memory {
    /// Images per optimizer step.
    pub batch: u64,
    /// Images per forward/backward pass: `ceil(batch / train.accum)`.
    pub micro_batch: u64,
    /// Activation number format.
    pub dtype: Dtype,
    /// f32 master weights of the trained and untrained networks.
    pub weights: u64,
    /// Low-precision compute copies of every weight (0 for f32).
    pub compute_weights: u64,
    /// f32 gradients of the trainable weights.
    pub gradients: u64,
    /// Optimizer state tensors per trainable weight (AdamW 2, SGD with momentum 1).
    pub optimizer_states: u64,
    /// f32 optimizer state.
    pub optimizer: u64,
    /// f32 weights of EMA networks (no gradients, no optimizer state).
    pub ema: u64,
    /// Activation elements kept for backward, per image.
    pub activations_per_image: u64,
    /// Activations kept for backward: `activations_per_image × micro_batch × bytes(dtype)`.
    pub activations: u64,
}

impl Memory {
    /// Everything above.
    pub fn total(&self) -> u64 {
        self.weights
            + self.compute_weights
            + self.gradients
            + self.optimizer
            + self.ema
            + self.activations
    }
}

/// Weights of `net` that the optimizer updates: all of a trained network's, less a frozen patch
/// embedding (`freeze_patch_embed`, MoCo v3); none of an untrained or EMA network's.
pub fn trainable_params(net: &crate::plan::NetworkPlan) -> u64 {
    if net.role != Role::Trained {
        return 0;
    }
    let frozen = match (net.kind, &net.input) {
        (NetKind::Vit, Some(Fact::Image { c, .. }))
            if flag(&net.config, "freeze_patch_embed", false) =>
        {
            let (p, d) = (get(&net.config, "patch"), get(&net.config, "dim"));
            p * p * u64::from(*c) * d + d
        }
        _ => 0,
    };
    net.params.total().saturating_sub(frozen)
}

/// Optimizer state tensors per trainable weight: AdamW 2 (first and second moments), SGD 1 with
/// momentum and 0 without; 2 for anything else.
fn optimizer_states(plan: &crate::plan::Plan) -> u64 {
    match plan.optim.optimizer.as_str() {
        "sgd" => {
            let m = plan
                .optim
                .config
                .get("momentum")
                .and_then(RValue::as_f64)
                .unwrap_or(0.9);
            u64::from(m > 0.0)
        }
        _ => 2,
    }
}

/// Activation elements per image that one transformer block keeps for backward, per token, on
/// `n` tokens of width `d` with `heads` heads: `8d + 2h + heads·n` with `h = round(d·mlp_ratio)`,
/// i.e. norm1 input `d`, norm1 output `d`, q, k, v `3d`, attention probabilities `heads·n`,
/// attention output (proj input) `d`, residual after attention (norm2 input) `d`, norm2 output
/// `d`, fc1 output `h`, GELU output `h`. For `h = 4d` this is `16d + heads·n`, the count of
/// Korthikanti et al. 2022 (arXiv:2205.05198, §4.1) without dropout masks.
pub fn block_activations_per_token(n: u64, d: u64, heads: u64, mlp_ratio: f64) -> u64 {
    8 * d + 2 * hidden(d, mlp_ratio) + heads * n
}

/// Activation elements per image kept inside one network call (its output is counted by the
/// step): ViT: visible patch pixels `n·p²c` (patch embedding input), blocks on `n + cls` tokens,
/// final norm input; decoder: σ-MLP `cond_dim + 2D`, blocks on `grid + cls` tokens, final norm
/// input and head input; MLP: per hidden layer its linear output, norm output and activation
/// output, and the last layer's output before `last_norm`.
fn call_activations(net: &crate::plan::NetworkPlan, input: &Fact, out: &Fact) -> u64 {
    let cfg = &net.config;
    let heads = get(cfg, "heads").max(1);
    match (net.kind, input, out) {
        (NetKind::Vit, Fact::Image { c, .. }, Fact::Tokens { n, cls, .. }) => {
            let (d, p) = (get(cfg, "dim"), get(cfg, "patch"));
            let n = u64::from(*n);
            let t = n + u64::from(*cls);
            n * p * p * u64::from(*c)
                + get(cfg, "depth") * t * block_activations_per_token(t, d, heads, ratio(cfg))
                + t * d
        }
        (NetKind::VitDecoder, Fact::Tokens { grid, cls, .. }, _) => {
            let d = get(cfg, "dim");
            let grid = u64::from(*grid);
            let t = grid + u64::from(*cls);
            let cond = if cfg.get("cond").and_then(RValue::as_str) == Some("sigma") {
                get(cfg, "cond_dim") + 2 * d
            } else {
                0
            };
            cond + get(cfg, "depth") * t * block_activations_per_token(t, d, heads, ratio(cfg))
                + t * d
                + grid * d
        }
        (NetKind::Mlp, Fact::Embedding { dim }, _) => {
            let w = mlp_widths(cfg, u64::from(*dim));
            let per_hidden = if cfg.get("norm").and_then(RValue::as_str).unwrap_or("none") == "none"
            {
                2
            } else {
                3
            };
            let hidden: u64 = w[1..w.len() - 1].iter().map(|h| per_hidden * h).sum();
            let last = match cfg.get("last_norm").and_then(RValue::as_str) {
                Some("none") | None => 0,
                Some(_) => w[w.len() - 1],
            };
            hidden + last
        }
        _ => 0,
    }
}

/// Activation elements per image kept for backward by the steps whose gradient reaches a loss:
/// each one's output ([`Fact::numel_per_image`]), the internals of network calls, and the
/// softmax probabilities of contrastive losses (`(2B)²/B = 4B` per image, `B` for query/key).
pub fn activations_per_image(plan: &crate::plan::Plan, batch: u64) -> u64 {
    let facts: HashMap<&str, &Fact> = plan
        .steps
        .iter()
        .map(|s| (s.name.as_str(), &s.out))
        .collect();
    let mut total = 0;
    for s in plan.steps.iter().filter(|s| s.keep) {
        total += s.out.numel_per_image();
        total += match &s.op {
            Op::Call { network, .. } => {
                let x = s
                    .inputs
                    .iter()
                    .find(|i| i.port == Port::Arg(0))
                    .and_then(|i| value_fact(&facts, &i.value));
                match (plan.network(network), x) {
                    (Some(net), Some(x)) => call_activations(net, &x, &s.out),
                    _ => 0,
                }
            }
            Op::InfoNce { .. } | Op::SupCon { .. } => 4 * batch,
            Op::InfoNceQk { .. } => batch,
            _ => 0,
        };
    }
    total
}

/// The memory estimate of one training step of `plan` with `batch` images per step (the plan's
/// batch if `None`) and activations in `dtype`.
pub fn memory(plan: &crate::plan::Plan, batch: Option<u64>, dtype: Dtype) -> Memory {
    let batch = batch.unwrap_or_else(|| plan_batch(plan)).max(1);
    let micro_batch = batch.div_ceil(accum(plan));
    let is_ema = |n: &crate::plan::NetworkPlan| matches!(n.role, Role::Ema { .. });
    let own: u64 = plan
        .networks
        .iter()
        .filter(|n| !is_ema(n))
        .map(|n| n.params.total())
        .sum();
    let ema: u64 = plan
        .networks
        .iter()
        .filter(|n| is_ema(n))
        .map(|n| n.params.total())
        .sum();
    let trainable: u64 = plan.networks.iter().map(trainable_params).sum();
    let states = optimizer_states(plan);
    let per_image = activations_per_image(plan, micro_batch);
    Memory {
        batch,
        micro_batch,
        dtype,
        weights: 4 * own,
        compute_weights: if dtype == Dtype::F32 {
            0
        } else {
            dtype.bytes() * (own + ema)
        },
        gradients: 4 * trainable,
        optimizer_states: states,
        optimizer: 4 * states * trainable,
        ema: 4 * ema,
        activations_per_image: per_image,
        activations: per_image * micro_batch * dtype.bytes(),
    }
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

/// `x` with an SI prefix and two decimals (`4.60 G`), or as an integer below 1000.
fn si(x: f64) -> String {
    const PREFIXES: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
    if x.abs() < 1000.0 {
        return format!("{x:.0} ");
    }
    let mut v = x;
    let mut i = 0;
    while v.abs() >= 1000.0 && i + 1 < PREFIXES.len() {
        v /= 1000.0;
        i += 1;
    }
    format!("{v:.2} {}", PREFIXES[i])
}

/// FLOPs with an SI prefix: `4.60 GFLOP`.
fn flop(x: f64) -> String {
    format!("{}FLOP", si(x))
}

/// Bytes in binary units: `12.18 MiB`.
fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", UNITS[i])
    }
}

fn role(r: &Role) -> String {
    match r {
        Role::Trained => "trained".into(),
        Role::Untrained => "untrained".into(),
        Role::Ema { source, .. } => format!("EMA of {source}"),
    }
}

/// Optimizer steps of the whole run at `batch` images per step: `floor(images / batch) ·
/// epochs` (the plan's `total_steps` at its own batch), when the data set size is known.
fn run_steps(plan: &crate::plan::Plan, batch: u64) -> Option<u64> {
    let epochs = plan.train.get("epochs").and_then(RValue::as_i64)?.max(0) as u64;
    Some(plan.data.images? / batch.max(1) * epochs)
}

/// Plain-text columns: `right[i]` right-aligns column `i`, two spaces between columns, trailing
/// blanks trimmed.
fn table(rows: &[Vec<String>], right: &[bool], indent: &str) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|x| x.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = indent.to_string();
        for (c, cell) in r.iter().enumerate() {
            let w = widths[c];
            if c > 0 {
                line.push_str("  ");
            }
            if right.get(c).copied().unwrap_or(false) {
                line.push_str(&format!("{cell:>w$}"));
            } else {
                line.push_str(&format!("{cell:<w$}"));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The `canc cost` report of a plan, for `batch` images per step (the plan's batch if `None`):
/// per network its role, parameters, calls, forward and training FLOPs per image; forward,
/// backward and training FLOPs per image, per step and per run; the memory estimate of
/// [`memory`]; and a note when the decoders cost more than the encoders.
pub fn report(plan: &crate::plan::Plan, batch: Option<u64>, dtype: Dtype) -> String {
    let batch = batch.unwrap_or_else(|| plan_batch(plan)).max(1);
    let cost = step_cost_at(plan, batch);
    let mem = memory(plan, Some(batch), dtype);
    let train = cost.train_flops_per_image();
    let share = |f: f64| {
        if train > 0.0 {
            format!("{:.1}%", 100.0 * f / train)
        } else {
            "-".into()
        }
    };
    let d = &plan.data;
    let mut s = format!(
        "cost of `{}` ({}, {}x{}x{} images), batch {batch}; estimates\n\n",
        plan.spec, d.source, d.channels, d.image_size, d.image_size
    );

    // Networks: forward and training (forward + backward) FLOPs of their calls.
    let by = |pick: &dyn Fn(&OpCost) -> bool| -> (f64, f64) {
        cost.steps
            .iter()
            .filter(|o| pick(o))
            .fold((0.0, 0.0), |(f, t), o| {
                (f + o.forward, t + o.forward + o.backward)
            })
    };
    let mut rows = vec![
        [
            "network",
            "kind",
            "role",
            "params",
            "calls",
            "forward/image",
            "train/image",
            "share",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for n in &plan.networks {
        let calls = cost
            .steps
            .iter()
            .filter(|o| o.network.as_deref() == Some(&n.name))
            .count();
        let (f, t) = by(&|o| o.network.as_deref() == Some(&n.name));
        rows.push(vec![
            n.name.clone(),
            n.kind.name().into(),
            role(&n.role),
            si(n.params.total() as f64),
            calls.to_string(),
            flop(f),
            flop(t),
            share(t),
        ]);
    }
    let (f, t) = by(&|o| o.network.is_none());
    rows.push(vec![
        "other ops".into(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        flop(f),
        flop(t),
        share(t),
    ]);
    let total_params: u64 = plan.networks.iter().map(|n| n.params.total()).sum();
    rows.push(vec![
        "total".into(),
        String::new(),
        String::new(),
        si(total_params as f64),
        String::new(),
        flop(cost.forward_flops_per_image),
        flop(train),
        String::new(),
    ]);
    let right = [false, false, false, true, true, true, true, true];
    s.push_str(&table(&rows, &right, ""));
    let trainable: u64 = plan.networks.iter().map(trainable_params).sum();
    s.push_str(&format!(
        "trainable parameters: {}\n\n",
        si(trainable as f64).trim_end()
    ));

    // FLOPs per image, per step and per run.
    let run_steps = run_steps(plan, batch);
    let mut head = vec![
        "FLOPs".to_string(),
        "per image".into(),
        format!("per step (x{batch})"),
    ];
    if let Some(n) = run_steps {
        head.push(format!("per run ({n} steps)"));
    }
    let mut rows = vec![head];
    for (label, x) in [
        ("forward", cost.forward_flops_per_image),
        ("backward", cost.backward_flops_per_image),
        ("train (fwd + bwd)", train),
    ] {
        let mut r = vec![label.to_string(), flop(x), flop(x * batch as f64)];
        if let Some(n) = run_steps {
            r.push(flop(x * batch as f64 * n as f64));
        }
        rows.push(r);
    }
    s.push_str(&table(&rows, &[false, true, true, true], ""));
    s.push_str(
        "FLOPs = 2 x multiply-adds of the matrix products (masked tokens skipped); backward = \
         2 x forward\nof the steps whose gradient reaches a loss (EMA and target branches: \
         forward only)\n\n",
    );

    // Memory.
    let micro = if mem.micro_batch == mem.batch {
        String::new()
    } else {
        format!(", {} images per micro-batch", mem.micro_batch)
    };
    s.push_str(&format!(
        "memory estimate (activations in {}{micro}; without workspace, allocator slack, CUDA \
         context)\n",
        dtype.name()
    ));
    let optimizer = if plan.optim.optimizer.is_empty() {
        "optimizer"
    } else {
        plan.optim.optimizer.as_str()
    };
    let mut rows = vec![
        vec!["weights (f32 master)".to_string(), bytes(mem.weights)],
        vec!["gradients (f32, trainable)".into(), bytes(mem.gradients)],
        vec![
            format!(
                "optimizer state ({optimizer}: {} per weight)",
                mem.optimizer_states
            ),
            bytes(mem.optimizer),
        ],
    ];
    if mem.ema > 0 {
        rows.push(vec!["EMA weights (f32)".into(), bytes(mem.ema)]);
    }
    if mem.compute_weights > 0 {
        rows.push(vec![
            format!("{} weight copies", dtype.name()),
            bytes(mem.compute_weights),
        ]);
    }
    rows.push(vec![
        format!(
            "activations kept for backward ({} per image)",
            bytes(mem.activations_per_image * dtype.bytes())
        ),
        bytes(mem.activations),
    ]);
    rows.push(vec!["total".into(), bytes(mem.total())]);
    s.push_str(&table(&rows, &[false, true], "  "));

    // The small-ViT trap: a decoder on all tokens can outweigh an encoder on the visible ones.
    let by_kind = |k: NetKind| -> f64 {
        plan.networks
            .iter()
            .filter(|n| n.kind == k)
            .map(|n| cost.network(&n.name))
            .sum()
    };
    let (enc, dec) = (by_kind(NetKind::Vit), by_kind(NetKind::VitDecoder));
    if dec > enc && enc > 0.0 {
        s.push_str(&format!(
            "\nnote: the decoders cost more than the encoders ({} vs {} forward per image, \
             {:.2}x):\n      the decoder runs on every patch position, the encoder only on the \
             visible ones;\n      a shallower or narrower decoder cuts the step cost most\n",
            flop(dec),
            flop(enc),
            dec / enc
        ));
    }
    s
}
