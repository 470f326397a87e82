//! The linear probe: a softmax (multinomial logistic) classifier on standardised frozen features.
//!
//! Recipe `sgd-momentum-cosine` (pinned; the usual linear-evaluation recipe of MoCo/SimCLR-style
//! papers, without augmentation since the features are precomputed):
//! - features standardised per dimension with the training set's mean and (population) std; a
//!   constant dimension is centred only;
//! - weights and bias start at zero;
//! - cross-entropy averaged over the batch; mini-batches of `batch` from a fresh permutation
//!   each epoch (seeded `StdRng`), the last partial batch kept;
//! - SGD with momentum 0.9 (PyTorch semantics: `v ← μ·v + g + wd·w`, `w ← w − lr_t·v`; weight
//!   decay on the weights, not the bias);
//! - learning rate `lr_t = lr · ½(1 + cos(π·t/T))` per step, `T` = epochs × batches per epoch, no
//!   warm-up, no batch-size scaling.
//!
//! Plain Rust in f32 with f64 loss bookkeeping. Each batch's gradient is summed over fixed
//! 32-row chunks in parallel and the chunks are added in order, so the result is bit-identical
//! for a seed whatever the thread count.

use super::{EvalError, Features, check_labels, knn::accuracy};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde_json::{Value, json};

/// Rows per partial gradient (fixed, for determinism).
const CHUNK: usize = 32;

/// The linear-probe recipe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearConfig {
    /// Passes over the training features.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch: usize,
    /// Peak learning rate (the cosine schedule starts here).
    pub lr: f64,
    /// L2 weight decay on the weights.
    pub weight_decay: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Seed of the batch order.
    pub seed: u64,
}

impl Default for LinearConfig {
    /// 100 epochs, batch 256, lr 0.1, no weight decay, momentum 0.9, seed 0.
    fn default() -> Self {
        LinearConfig {
            epochs: 100,
            batch: 256,
            lr: 0.1,
            weight_decay: 0.0,
            momentum: 0.9,
            seed: 0,
        }
    }
}

impl LinearConfig {
    /// The recipe as recorded in a result.
    pub fn params(&self) -> Value {
        json!({
            "recipe": "sgd-momentum-cosine",
            "epochs": self.epochs,
            "batch": self.batch,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "momentum": self.momentum,
            "schedule": "cosine, per step, no warm-up",
            "features": "standardised (train mean/std)",
            "seed": self.seed,
        })
    }
}

/// A trained linear probe.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearProbe {
    /// Weights, `classes × d`, row-major.
    pub weight: Vec<f32>,
    /// Biases, one per class.
    pub bias: Vec<f32>,
    /// Standardisation means, per dimension.
    pub mean: Vec<f32>,
    /// Standardisation stds, per dimension (1 for a constant dimension).
    pub std: Vec<f32>,
    /// Feature dimensions.
    pub d: usize,
    /// Classes.
    pub classes: usize,
    /// Mean training cross-entropy over the last epoch.
    pub final_loss: f64,
}

impl LinearProbe {
    /// The predicted class of every row of `x` (the lowest class index on a tie).
    pub fn predict(&self, x: &Features) -> Result<Vec<u32>, EvalError> {
        if x.d != self.d {
            return Err(EvalError::Shape(format!(
                "the probe takes {} dimensions, the features have {}",
                self.d, x.d
            )));
        }
        if self.d == 0 {
            return Ok(vec![0; x.n]);
        }
        Ok(x.data
            .par_chunks(self.d)
            .map(|row| {
                let z = standardise(row, &self.mean, &self.std);
                let logits = self.logits(&z);
                let mut arg = 0;
                for (c, &v) in logits.iter().enumerate() {
                    if v > logits[arg] {
                        arg = c;
                    }
                }
                arg as u32
            })
            .collect())
    }

    /// Top-1 accuracy on `x` with `labels`.
    pub fn accuracy(&self, x: &Features, labels: &[u32]) -> Result<f64, EvalError> {
        if labels.len() != x.n || x.n == 0 {
            return Err(EvalError::Shape(format!(
                "{} features for {} labels",
                x.n,
                labels.len()
            )));
        }
        Ok(accuracy(&self.predict(x)?, labels))
    }

    /// Logits of one standardised row.
    fn logits(&self, z: &[f32]) -> Vec<f32> {
        logits(&self.weight, &self.bias, z)
    }
}

fn standardise(row: &[f32], mean: &[f32], std: &[f32]) -> Vec<f32> {
    row.iter()
        .zip(mean)
        .zip(std)
        .map(|((&x, &m), &s)| (x - m) / s)
        .collect()
}

fn logits(weight: &[f32], bias: &[f32], z: &[f32]) -> Vec<f32> {
    let d = z.len();
    bias.iter()
        .enumerate()
        .map(|(c, &b)| {
            let w = &weight[c * d..(c + 1) * d];
            b + w.iter().zip(z).map(|(a, x)| a * x).sum::<f32>()
        })
        .collect()
}

/// Per-dimension mean and population std of `x` (std 1 where the dimension is constant).
fn moments(x: &Features) -> (Vec<f32>, Vec<f32>) {
    let (n, d) = (x.n, x.d);
    let mut sum = vec![0.0f64; d];
    let mut sq = vec![0.0f64; d];
    for row in x.data.chunks(d.max(1)) {
        for (j, &v) in row.iter().enumerate() {
            sum[j] += f64::from(v);
            sq[j] += f64::from(v) * f64::from(v);
        }
    }
    let n = n.max(1) as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let std = sq
        .iter()
        .zip(&mean)
        .map(|(q, m)| {
            let var = (q / n - m * m).max(0.0);
            let s = var.sqrt();
            if s > 1e-6 { s as f32 } else { 1.0 }
        })
        .collect();
    (mean.iter().map(|&m| m as f32).collect(), std)
}

/// Trains a linear probe on `x` (rows) with `labels` (each below `classes`) by the recipe in
/// `cfg`.
pub fn train_linear(
    x: &Features,
    labels: &[u32],
    classes: usize,
    cfg: &LinearConfig,
) -> Result<LinearProbe, EvalError> {
    if labels.len() != x.n || x.n == 0 {
        return Err(EvalError::Shape(format!(
            "{} training features for {} labels",
            x.n,
            labels.len()
        )));
    }
    if classes == 0 || cfg.batch == 0 || cfg.epochs == 0 || cfg.lr.is_nan() || cfg.lr <= 0.0 {
        return Err(EvalError::Config(format!(
            "the linear probe needs classes, batch, epochs and lr > 0 (got {classes}, {}, {}, {})",
            cfg.batch, cfg.epochs, cfg.lr
        )));
    }
    check_labels(labels, classes)?;
    let (n, d) = (x.n, x.d);
    let (mean, std) = moments(x);
    let z: Vec<f32> = if d == 0 {
        Vec::new()
    } else {
        x.data
            .par_chunks(d)
            .flat_map_iter(|row| standardise(row, &mean, &std))
            .collect()
    };
    let mut w = vec![0.0f32; classes * d];
    let mut b = vec![0.0f32; classes];
    let mut vw = vec![0.0f32; classes * d];
    let mut vb = vec![0.0f32; classes];
    let per_epoch = n.div_ceil(cfg.batch);
    let total = (cfg.epochs * per_epoch) as f64;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = (0..n).collect();
    let (mu, wd) = (cfg.momentum as f32, cfg.weight_decay as f32);
    let mut step = 0usize;
    let mut final_loss = 0.0;
    for _ in 0..cfg.epochs {
        order.shuffle(&mut rng);
        let mut epoch_loss = 0.0f64;
        for idx in order.chunks(cfg.batch) {
            let (gw, gb, loss) = gradient(&z, labels, idx, &w, &b, d, classes);
            epoch_loss += loss;
            let scale = 1.0 / idx.len() as f32;
            let lr =
                (cfg.lr * 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / total).cos())) as f32;
            for ((p, v), g) in w.iter_mut().zip(&mut vw).zip(&gw) {
                *v = mu * *v + g * scale + wd * *p;
                *p -= lr * *v;
            }
            for ((p, v), g) in b.iter_mut().zip(&mut vb).zip(&gb) {
                *v = mu * *v + g * scale;
                *p -= lr * *v;
            }
            step += 1;
        }
        final_loss = epoch_loss / n as f64;
    }
    Ok(LinearProbe {
        weight: w,
        bias: b,
        mean,
        std,
        d,
        classes,
        final_loss,
    })
}

/// Summed (not averaged) cross-entropy gradient and loss of rows `idx`: `(dW, db, loss)`.
fn gradient(
    z: &[f32],
    labels: &[u32],
    idx: &[usize],
    w: &[f32],
    b: &[f32],
    d: usize,
    classes: usize,
) -> (Vec<f32>, Vec<f32>, f64) {
    let partials: Vec<(Vec<f32>, Vec<f32>, f64)> = idx
        .par_chunks(CHUNK)
        .map(|rows| {
            let mut gw = vec![0.0f32; classes * d];
            let mut gb = vec![0.0f32; classes];
            let mut loss = 0.0f64;
            for &i in rows {
                let x = &z[i * d..(i + 1) * d];
                let mut p = logits(w, b, x);
                let max = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let y = labels[i] as usize;
                let zy = p[y] - max;
                let mut sum = 0.0f32;
                for v in &mut p {
                    *v = (*v - max).exp();
                    sum += *v;
                }
                loss += f64::from(sum.ln()) - f64::from(zy);
                for (c, pc) in p.iter_mut().enumerate() {
                    *pc /= sum;
                    let g = *pc - if c == y { 1.0 } else { 0.0 };
                    gb[c] += g;
                    for (a, &xv) in gw[c * d..(c + 1) * d].iter_mut().zip(x) {
                        *a += g * xv;
                    }
                }
            }
            (gw, gb, loss)
        })
        .collect();
    let mut gw = vec![0.0f32; classes * d];
    let mut gb = vec![0.0f32; classes];
    let mut loss = 0.0;
    for (pw, pb, l) in partials {
        gw.iter_mut().zip(&pw).for_each(|(a, b)| *a += b);
        gb.iter_mut().zip(&pb).for_each(|(a, b)| *a += b);
        loss += l;
    }
    (gw, gb, loss)
}
