//! Weighted k-nearest-neighbour classification, the protocol of InstDisc (Wu et al. 2018) and
//! DINO (Caron et al. 2021): features are L2-normalised, similarity is the cosine, each of the
//! top-`k` training neighbours votes for its class with weight `exp(sim / T)`, and the class
//! with the largest total wins (the lowest class index on a tie). The score is top-1 accuracy.
//!
//! Similarities are computed a block of queries at a time as one GEMM on the CPU backend
//! (`[b, d] × [d, n_train]`), then each query's top `k` are selected in parallel.

use super::{EvalError, Features, check_labels};
use crate::backend::Cpu;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;
use serde_json::{Value, json};

/// Queries per similarity block (`QUERY_BLOCK × n_train` floats are held at once).
const QUERY_BLOCK: usize = 256;

/// kNN parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KnnConfig {
    /// Neighbours (clamped to the training-set size).
    pub k: usize,
    /// Temperature of the vote weights `exp(sim / T)`.
    pub temperature: f64,
}

impl Default for KnnConfig {
    /// k = 20, T = 0.07 (InstDisc, DINO).
    fn default() -> Self {
        KnnConfig {
            k: 20,
            temperature: 0.07,
        }
    }
}

impl KnnConfig {
    /// The parameters as recorded in a result.
    pub fn params(&self) -> Value {
        json!({
            "k": self.k,
            "temperature": self.temperature,
            "similarity": "cosine",
            "weights": "exp(sim / T)",
        })
    }
}

/// L2-normalises each row (a zero row stays zero).
pub(crate) fn l2_rows(f: &Features) -> Vec<f32> {
    let mut out = f.data.clone();
    if f.d == 0 {
        return out;
    }
    out.par_chunks_mut(f.d).for_each(|row| {
        let norm = row
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            let inv = (1.0 / norm) as f32;
            row.iter_mut().for_each(|x| *x *= inv);
        }
    });
    out
}

/// The predicted class of every row of `test` by weighted kNN over `train`.
pub fn knn_predict(
    train: &Features,
    train_labels: &[u32],
    test: &Features,
    classes: usize,
    cfg: &KnnConfig,
) -> Result<Vec<u32>, EvalError> {
    if train.d != test.d {
        return Err(EvalError::Shape(format!(
            "train features have {} dimensions, test features {}",
            train.d, test.d
        )));
    }
    if train_labels.len() != train.n {
        return Err(EvalError::Shape(format!(
            "{} train features for {} labels",
            train.n,
            train_labels.len()
        )));
    }
    if train.n == 0 {
        return Err(EvalError::Shape(
            "kNN needs at least one training image".into(),
        ));
    }
    if cfg.k == 0 || cfg.temperature.is_nan() || cfg.temperature <= 0.0 {
        return Err(EvalError::Config(format!(
            "kNN needs k >= 1 and temperature > 0, got k = {}, T = {}",
            cfg.k, cfg.temperature
        )));
    }
    check_labels(train_labels, classes)?;
    let (n, d) = (train.n, train.d);
    let k = cfg.k.min(n);
    let tr = l2_rows(train);
    let te = l2_rows(test);
    // [d, n] contiguous: a GEMM with a transposed-view operand is several times slower.
    let mut tr_t = vec![0.0f32; n * d];
    tr_t.par_chunks_mut(n).enumerate().for_each(|(j, col)| {
        for (i, c) in col.iter_mut().enumerate() {
            *c = tr[i * d + j];
        }
    });
    drop(tr);
    let device = Default::default();
    let bank = Tensor::<Cpu, 2>::from_data(TensorData::new(tr_t, [d, n]), &device);
    let mut preds = Vec::with_capacity(test.n);
    for block in te.chunks(QUERY_BLOCK * d.max(1)) {
        let b = block.len().checked_div(d).unwrap_or(0);
        let q = Tensor::<Cpu, 2>::from_data(TensorData::new(block.to_vec(), [b, d]), &device);
        let sims = q
            .matmul(bank.clone())
            .into_data()
            .into_vec::<f32>()
            .map_err(|e| EvalError::Tensor(format!("{e:?}")))?;
        let block_preds: Vec<u32> = sims
            .par_chunks(n)
            .map(|row| vote(row, train_labels, classes, k, cfg.temperature))
            .collect();
        preds.extend(block_preds);
    }
    Ok(preds)
}

/// Top-1 accuracy of weighted kNN: the share of `test` rows whose predicted class is their label.
pub fn knn_accuracy(
    train: &Features,
    train_labels: &[u32],
    test: &Features,
    test_labels: &[u32],
    classes: usize,
    cfg: &KnnConfig,
) -> Result<f64, EvalError> {
    if test_labels.len() != test.n {
        return Err(EvalError::Shape(format!(
            "{} test features for {} labels",
            test.n,
            test_labels.len()
        )));
    }
    if test.n == 0 {
        return Err(EvalError::Shape("no test images to evaluate".into()));
    }
    let preds = knn_predict(train, train_labels, test, classes, cfg)?;
    Ok(accuracy(&preds, test_labels))
}

/// The share of `preds` equal to `labels`.
pub(crate) fn accuracy(preds: &[u32], labels: &[u32]) -> f64 {
    let hits = preds.iter().zip(labels).filter(|(p, l)| p == l).count();
    hits as f64 / labels.len().max(1) as f64
}

/// The weighted vote of the `k` most similar entries of `sims` (ties in similarity go to the
/// lower training index).
fn vote(sims: &[f32], labels: &[u32], classes: usize, k: usize, t: f64) -> u32 {
    // Sorted by similarity, descending.
    let mut top: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
    for (i, &s) in sims.iter().enumerate() {
        if s.is_nan() || (top.len() == k && s <= top[k - 1].0) {
            continue;
        }
        let pos = top.partition_point(|&(v, _)| v >= s);
        top.insert(pos, (s, i as u32));
        top.truncate(k);
    }
    let best = top.first().map_or(0.0, |&(s, _)| f64::from(s));
    let mut score = vec![0.0f64; classes.max(1)];
    for &(s, i) in &top {
        // exp((s - best) / T): the same vote as exp(s / T), scaled, without overflow.
        score[labels[i as usize] as usize] += ((f64::from(s) - best) / t).exp();
    }
    let mut arg = 0;
    for (c, &v) in score.iter().enumerate() {
        if v > score[arg] {
            arg = c;
        }
    }
    arg as u32
}
