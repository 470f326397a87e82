//! Model cost: parameters per network (split by weight decay), forward and backward FLOPs per
//! image and per step counting masking (the encoder sees only visible tokens), and a memory
//! estimate. Everything is computed from the plan, so `canc cost` needs no Burn.

use crate::ir::NetKind;
use crate::resolved::RValue;
use crate::shape::Fact;
use indexmap::IndexMap;
use serde::Serialize;

/// A parameter count, split by whether weight decay applies (matrices) or not (biases, norms,
/// position embeddings, CLS and mask tokens).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
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
    let h = (d as f64 * mlp_ratio).round() as u64;
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

/// The `canc cost` report of a plan, for `batch` images per step (the plan's batch if `None`).
pub fn report(plan: &crate::plan::Plan, batch: Option<u64>, dtype: Dtype) -> String {
    // TODO(cost helper): FLOPs and memory.
    let _ = (batch, dtype);
    let mut s = String::new();
    for n in &plan.networks {
        s.push_str(&format!("{:<20} {:>12}\n", n.name, n.params.total()));
    }
    s
}
