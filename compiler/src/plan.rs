//! The execution plan: a deterministic lowering of a checked loss graph that the runtime executes
//! and users snapshot. Steps in topological order with their value names, types, gradient flags
//! and random draws; networks with their roles and parameter counts; the objective; the
//! optimizer and schedule with every derived number (steps per epoch, warm-up steps, effective
//! learning rate). Serialised to RON in a canonical form.

use crate::check::DataInfo;
use crate::cost;
use crate::ir::{LossGraph, NetKind, Op, Port};
use crate::resolved::{RBlock, RValue, ResolvedSpec};
use crate::shape::Fact;
use crate::validate::GraphInfo;
use canc_grammar::ast::Unit;
use indexmap::IndexMap;
use serde::Serialize;

/// Bumped when the plan's meaning changes.
pub const FORMAT: u32 = 1;

/// A compiled, checked experiment: everything the runtime needs.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Plan {
    /// Plan format version.
    pub format: u32,
    /// Spec name.
    pub spec: String,
    /// Sweep variant.
    pub variant: Option<String>,
    /// The data set.
    pub data: DataPlan,
    /// Augmentation pipelines, by view.
    pub views: Vec<ViewPlan>,
    /// Networks in declaration order (unused ones are left out).
    pub networks: Vec<NetworkPlan>,
    /// Operations in execution (topological) order; batched calls stand together.
    pub steps: Vec<Step>,
    /// Weighted loss terms.
    pub objective: Objective,
    /// Optimizer, schedule and their derived numbers.
    pub optim: OptimPlan,
    /// The `train` block.
    pub train: IndexMap<String, RValue>,
    /// The `eval` block, if any (protocols as children).
    pub eval: Option<RBlock>,
}

/// The data set and what derives from it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct DataPlan {
    /// Source type (`fashion_mnist`, `image_folder`, …).
    pub source: String,
    /// The data block's settings.
    pub config: IndexMap<String, RValue>,
    /// Image side.
    pub image_size: u32,
    /// Channels.
    pub channels: u32,
    /// Per-channel mean and std (normalisation defaults).
    pub mean: Vec<f64>,
    /// Per-channel std.
    pub std: Vec<f64>,
    /// Training images per epoch (after `limit`), when known before reading the data.
    pub images: Option<u64>,
}

/// One view's augmentation pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ViewPlan {
    /// The view's name.
    pub name: String,
    /// Augmentations in order: name and settings.
    pub augment: Vec<(String, IndexMap<String, RValue>)>,
}

/// How a network's weights are updated.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub enum Role {
    /// By the optimizer.
    Trained,
    /// Used, but no weighted loss sends gradient into it: stays at initialisation.
    Untrained,
    /// An exponential moving average of `source`'s weights, never by gradient.
    Ema {
        /// The network followed.
        source: String,
        /// Momentum at the start.
        momentum: f64,
        /// Momentum at the end (equal to `momentum` for a constant schedule).
        momentum_end: f64,
        /// `constant` or `cosine`.
        schedule: String,
    },
}

/// One network: its configuration, role, input and size.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct NetworkPlan {
    /// Name.
    pub name: String,
    /// Kind (an EMA network has its source's).
    pub kind: NetKind,
    /// Settings (an EMA network has its source's).
    pub config: IndexMap<String, RValue>,
    /// How its weights change.
    pub role: Role,
    /// The input type every call passes.
    pub input: Option<Fact>,
    /// Parameter count, split by weight decay.
    pub params: cost::Params,
}

/// One input of a step: the port and the value name (`n1`, `n1.sigma`).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct StepInput {
    /// Which input.
    pub port: Port,
    /// The value read.
    pub value: String,
}

/// One operation, in execution order.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Step {
    /// Value name it defines (`z1`, `z1/pool`).
    pub name: String,
    /// The operation.
    pub op: Op,
    /// Inputs, ordered by port.
    pub inputs: Vec<StepInput>,
    /// Its type.
    pub out: Fact,
    /// Depends on trainable weights (computed with autodiff tracking).
    pub grad: bool,
    /// Its activation is kept for the backward pass.
    pub keep: bool,
    /// What it draws from the step's RNG, if anything.
    pub rng: Option<String>,
    /// Calls with the same number run as one call on their inputs stacked along the batch
    /// dimension ([`crate::batching`]); `None` for a step that runs on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<u32>,
}

/// The weighted objective.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Objective {
    /// `(node name, weight)` in declaration order.
    pub terms: Vec<(String, f64)>,
    /// Sum of the weights.
    pub weight_sum: f64,
}

/// Optimizer and schedule, with derived numbers.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct OptimPlan {
    /// `adamw` or `sgd`.
    pub optimizer: String,
    /// Its settings.
    pub config: IndexMap<String, RValue>,
    /// `cosine` or `constant`.
    pub schedule: String,
    /// Schedule settings.
    pub schedule_config: IndexMap<String, RValue>,
    /// Base lr after `lr_scaling` with the batch: `lr · batch / 256` (linear).
    pub effective_lr: f64,
    /// Optimizer steps per epoch: `floor(images / batch)` (the last partial batch is dropped).
    pub steps_per_epoch: Option<u64>,
    /// `epochs · steps_per_epoch`.
    pub total_steps: Option<u64>,
    /// Warm-up length in steps.
    pub warmup_steps: Option<u64>,
}

/// The learning rate after `lr_scaling` (`none`, `linear`, `sqrt`) for `batch`.
pub fn scaled_lr(lr: f64, scaling: &str, batch: u64) -> f64 {
    let r = batch as f64 / 256.0;
    match scaling {
        "linear" => lr * r,
        "sqrt" => lr * r.sqrt(),
        _ => lr,
    }
}

/// Training images per epoch for a data block, when known without reading data.
pub fn dataset_images(data: Option<&RBlock>) -> Option<u64> {
    let d = data?;
    let split = d.get("split").and_then(RValue::as_str).unwrap_or("train");
    let n = match (d.ty.as_deref()?, split) {
        ("fashion_mnist", "train") => 60_000,
        ("fashion_mnist", _) => 10_000,
        ("cifar10" | "cifar100", "train") => 50_000,
        ("cifar10" | "cifar100", _) => 10_000,
        ("synthetic", _) => d.get("images").and_then(RValue::as_i64)? as u64,
        _ => return None,
    };
    let limit = d.get("limit").and_then(RValue::as_i64).map(|l| l as u64);
    Some(limit.map_or(n, |l| l.min(n)))
}

/// Builds the plan of a validated graph.
pub fn plan(spec: &ResolvedSpec, g: &LossGraph, info: &GraphInfo) -> Plan {
    let data_block = spec.block("data");
    let di = DataInfo::of(data_block);
    let images = dataset_images(data_block);
    let data = DataPlan {
        source: data_block
            .and_then(|d| d.ty.clone())
            .unwrap_or_else(|| "fashion_mnist".into()),
        config: data_block.map(|d| d.fields.clone()).unwrap_or_default(),
        image_size: di.image_size as u32,
        channels: di.channels as u32,
        mean: di.mean.clone(),
        std: di.std.clone(),
        images,
    };

    let mut used_views: Vec<&str> = Vec::new();
    let mut steps = Vec::new();
    for i in g.graph.node_indices() {
        if !info.used[i.index()] {
            continue;
        }
        let node = &g.graph[i];
        let Some(out) = info.facts[i.index()].clone() else {
            continue;
        };
        if let Op::View { view } = &node.op
            && !used_views.contains(&view.as_str())
        {
            used_views.push(view);
        }
        let inputs = g
            .inputs(i)
            .into_iter()
            .map(|(port, src, o)| StepInput {
                port,
                value: g.value_name(src, o.as_deref()),
            })
            .collect();
        steps.push(Step {
            name: node.name.clone(),
            op: node.op.clone(),
            inputs,
            rng: rng_draw(&node.op, &out),
            out,
            grad: info.grad[i.index()],
            keep: info.keep_for_backward(i),
            batch: None,
        });
    }

    let views = spec
        .blocks
        .iter()
        .filter(|b| b.kind == "view")
        .filter(|b| used_views.contains(&b.name.as_deref().unwrap_or_default()))
        .map(|b| ViewPlan {
            name: b.name.clone().unwrap_or_default(),
            augment: b
                .children
                .iter()
                .map(|a| (a.kind.clone(), a.fields.clone()))
                .collect(),
        })
        .collect();

    let mut networks = Vec::new();
    for (name, net) in &g.networks {
        let weights = net.ema_of.as_deref().unwrap_or(name);
        let called = steps.iter().any(|s| match &s.op {
            Op::Call { network, .. } => network == name,
            _ => false,
        });
        if !called {
            continue;
        }
        let Some(block) = spec.named("network", name) else {
            continue;
        };
        let config = spec
            .named("network", weights)
            .map(|b| b.fields.clone())
            .unwrap_or_default();
        let role = match &net.ema_of {
            Some(src) => {
                let m = block
                    .get("momentum")
                    .and_then(RValue::as_f64)
                    .unwrap_or(0.996);
                let sched = block
                    .get("schedule")
                    .and_then(RValue::as_str)
                    .unwrap_or("constant")
                    .to_string();
                let end = if sched == "cosine" {
                    block
                        .get("momentum_end")
                        .and_then(RValue::as_f64)
                        .unwrap_or(1.0)
                } else {
                    m
                };
                Role::Ema {
                    source: src.clone(),
                    momentum: m,
                    momentum_end: end,
                    schedule: sched,
                }
            }
            None if info.trained.iter().any(|t| t == name) => Role::Trained,
            None => Role::Untrained,
        };
        let input = info.net_inputs.get(weights).map(|(f, _)| f.clone());
        let params = input
            .as_ref()
            .map(|f| cost::params(net.kind, &config, f))
            .unwrap_or_default();
        networks.push(NetworkPlan {
            name: name.clone(),
            kind: net.kind,
            config,
            role,
            input,
            params,
        });
    }

    let steps = crate::batching::batch_calls(steps, &networks);

    let terms: Vec<(String, f64)> = g.terms.iter().map(|t| (t.name.clone(), t.weight)).collect();
    let weight_sum = terms.iter().map(|t| t.1).sum();

    let opt = spec.block("optimizer");
    let sched = spec.block("schedule");
    let train = spec
        .block("train")
        .map(|b| b.fields.clone())
        .unwrap_or_default();
    let batch = train
        .get("batch")
        .and_then(RValue::as_i64)
        .unwrap_or(1)
        .max(1) as u64;
    let epochs = train
        .get("epochs")
        .and_then(RValue::as_i64)
        .unwrap_or(0)
        .max(0) as u64;
    let lr = opt
        .and_then(|o| o.get("lr"))
        .and_then(RValue::as_f64)
        .unwrap_or(0.0);
    let scaling = opt
        .and_then(|o| o.get("lr_scaling"))
        .and_then(RValue::as_str)
        .unwrap_or("none");
    let steps_per_epoch = images.map(|n| n / batch);
    let warmup_steps = match sched.and_then(|s| s.get("warmup")) {
        Some(RValue::Quantity(x, Unit::Epochs)) => steps_per_epoch.map(|s| (x * s as f64) as u64),
        Some(RValue::Quantity(x, Unit::Steps)) => Some(*x as u64),
        Some(RValue::Quantity(x, Unit::Images)) => Some((x / batch as f64) as u64),
        _ => Some(0),
    };
    let optim = OptimPlan {
        optimizer: opt.and_then(|o| o.ty.clone()).unwrap_or_default(),
        config: opt.map(|o| o.fields.clone()).unwrap_or_default(),
        schedule: sched.and_then(|s| s.ty.clone()).unwrap_or_default(),
        schedule_config: sched.map(|s| s.fields.clone()).unwrap_or_default(),
        effective_lr: scaled_lr(lr, scaling, batch),
        steps_per_epoch,
        total_steps: steps_per_epoch.map(|s| s * epochs),
        warmup_steps,
    };

    Plan {
        format: FORMAT,
        spec: spec.name.clone(),
        variant: spec.variant.clone(),
        data,
        views,
        networks,
        steps,
        objective: Objective { terms, weight_sum },
        optim,
        train,
        eval: spec.block("eval").cloned(),
    }
}

/// The step (index in `steps`, a name → index map) that computes `value`, and its named output:
/// `n1` is step `n1`'s main output, `n1.sigma` its output `sigma`.
pub(crate) fn producer<'a>(
    steps: &IndexMap<&str, usize>,
    value: &'a str,
) -> Option<(usize, Option<&'a str>)> {
    if let Some(&i) = steps.get(value) {
        return Some((i, None));
    }
    let (name, output) = value.rsplit_once('.')?;
    steps.get(name).map(|&i| (i, Some(output)))
}

/// What an op draws from the step's RNG, in words.
fn rng_draw(op: &Op, out: &Fact) -> Option<String> {
    match (op, out) {
        (Op::View { view }, _) => Some(format!(
            "augmentation parameters of view `{view}`, per image"
        )),
        (Op::AddNoise { sigma }, Fact::Image { c, size }) => Some(format!(
            "sigma ~ {sigma} per image, eps ~ N(0, 1) of shape [B, {c}, {size}, {size}]"
        )),
        (Op::Mask { strategy, .. }, Fact::Mask { grid, masked }) => Some(format!(
            "{masked} of {grid} positions per image ({})",
            match strategy {
                crate::ir::MaskStrategy::Random => "random permutation",
                crate::ir::MaskStrategy::Block => "random blocks",
            }
        )),
        _ => None,
    }
}

impl Plan {
    /// The canonical RON text: one line per step input, network setting and augmentation.
    pub fn to_ron(&self) -> String {
        let cfg = ron::ser::PrettyConfig::new()
            .indentor("  ".to_string())
            .depth_limit(4)
            .struct_names(false);
        ron::ser::to_string_pretty(self, cfg).unwrap_or_else(|e| format!("/* RON error: {e} */"))
    }

    /// Reads a plan written by [`Plan::to_ron`] (a run directory's `plan.ron`).
    pub fn from_ron(text: &str) -> Result<Plan, String> {
        let plan: Plan = ron::from_str(text).map_err(|e| e.to_string())?;
        if plan.format != FORMAT {
            return Err(format!(
                "plan format {} is not this canc's ({FORMAT}); recompile the spec",
                plan.format
            ));
        }
        Ok(plan)
    }

    /// The step defining `name`.
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The batched call groups: each group's step names, groups in plan order.
    pub fn batch_groups(&self) -> Vec<Vec<&str>> {
        let mut out: Vec<(u32, Vec<&str>)> = Vec::new();
        for s in &self.steps {
            let Some(b) = s.batch else { continue };
            match out.iter_mut().find(|(g, _)| *g == b) {
                Some((_, m)) => m.push(s.name.as_str()),
                None => out.push((b, vec![s.name.as_str()])),
            }
        }
        out.into_iter().map(|(_, m)| m).collect()
    }

    /// The network `name`.
    pub fn network(&self, name: &str) -> Option<&NetworkPlan> {
        self.networks.iter().find(|n| n.name == name)
    }
}
