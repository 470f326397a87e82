//! Evaluation of a frozen encoder with pinned protocols: weighted kNN ([`knn`]) and a linear
//! probe ([`linear`]) on features of un-augmented images ([`features`]), the collapse indicators
//! RankMe and per-dimension std ([`rankme`]), the raw-pixel and random-init baselines
//! ([`baseline`]) and the JSON results record ([`result`]).
//!
//! ```text
//!  Program ─encoder─▶ Vit (no autodiff) ─encode(train split)─▶ Features n×d ─┬─ knn ────▶ EvalResult
//!                                       ─encode(test split)──▶ Features m×d ─┴─ linear ─▶ EvalResult
//! ```
//!
//! The spec's `eval` block names the split evaluated (`split`, the other split is the training
//! set), the encoder (`encoder`, default: the first vit), the pooling (`features`) and the
//! protocols with their parameters ([`EvalSpec::from_plan`]).

pub mod baseline;
pub mod features;
pub mod knn;
pub mod linear;
pub mod rankme;
pub mod result;

pub use baseline::Baseline;
pub use features::{Features, Normalization, encode, encoder, normalization, raw_pixels};
pub use knn::{KnnConfig, knn_accuracy, knn_predict};
pub use linear::{LinearConfig, LinearProbe, train_linear};
pub use rankme::{embedding_std, rankme, singular_values};
pub use result::{EvalResult, write_result};

use crate::data::{self, DataError, Dataset};
use crate::exec::{ExecError, Program};
use burn::tensor::backend::AutodiffBackend;
use canc_compiler::RValue;
use canc_compiler::ir::{NetKind, PoolMode};
use canc_compiler::plan::Plan;
use std::path::PathBuf;
use std::time::Instant;

/// Images per forward pass when encoding.
pub const ENCODE_BATCH: usize = 256;

/// Why an evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The data could not be loaded or normalised.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The networks could not be built from the plan.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// The `eval` block (or a protocol's settings) is unusable.
    #[error("eval: {0}")]
    Config(String),
    /// The encoder named by the `eval` block is missing or not a ViT.
    #[error("eval encoder: {0}")]
    Encoder(String),
    /// Features, labels or sizes disagree (a caller error).
    #[error("eval: {0}")]
    Shape(String),
    /// The data has no labels, and the protocols classify.
    #[error("evaluation needs labels, but the data has none (set `labels = true` in `data`)")]
    NoLabels,
    /// A tensor could not be read back from the device.
    #[error("reading features from the device: {0}")]
    Tensor(String),
    /// A results file could not be written.
    #[error("cannot write `{}`: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A results record could not be serialised.
    #[error("serialising a result: {0}")]
    Json(#[from] serde_json::Error),
}

/// When the online kNN monitor runs during training (`knn { every = … }`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Interval {
    /// Every this many epochs (may be fractional).
    Epochs(f64),
    /// Every this many optimizer steps.
    Steps(u64),
}

/// The `eval` block of a plan, with the schema's defaults for anything unset.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalSpec {
    /// The split evaluated (`test` or `train`); the other split is the training set.
    pub split: String,
    /// The encoder network evaluated.
    pub encoder: String,
    /// How its tokens are pooled into one feature vector.
    pub pool: PoolMode,
    /// kNN parameters (the spec's `knn` block, or the defaults k = 20, T = 0.07).
    pub knn: KnnConfig,
    /// How often to monitor kNN during training (`knn.every`), if at all.
    pub knn_every: Option<Interval>,
    /// Linear-probe recipe (the spec's `linear` block, or the defaults).
    pub linear: LinearConfig,
    /// The protocols the spec declares, in order (`knn`, `linear`).
    pub protocols: Vec<String>,
}

impl EvalSpec {
    /// Reads the plan's `eval` block (defaults where it has none); the linear probe's seed is
    /// the spec's `train.seed`.
    pub fn from_plan(plan: &Plan) -> Result<Self, EvalError> {
        let block = plan.eval.as_ref();
        let get = |k: &str| block.and_then(|b| b.get(k)).filter(|v| **v != RValue::None);
        let split = match get("split") {
            None => "test".to_string(),
            Some(v) => v
                .as_str()
                .filter(|s| matches!(*s, "train" | "test"))
                .ok_or_else(|| {
                    EvalError::Config(format!("`split` must be train or test, got {v:?}"))
                })?
                .to_string(),
        };
        let encoder = match get("encoder") {
            Some(v) => v
                .as_str()
                .ok_or_else(|| {
                    EvalError::Config(format!("`encoder` must be a network, got {v:?}"))
                })?
                .to_string(),
            None => plan
                .networks
                .iter()
                .find(|n| n.kind == NetKind::Vit)
                .map(|n| n.name.clone())
                .ok_or_else(|| EvalError::Encoder("the plan has no vit network".into()))?,
        };
        let pool = match get("features").map(|v| (v, v.as_str())) {
            None => PoolMode::Mean,
            Some((_, Some("mean"))) => PoolMode::Mean,
            Some((_, Some("mean_all"))) => PoolMode::MeanAll,
            Some((_, Some("cls"))) => PoolMode::Cls,
            Some((v, _)) => {
                return Err(EvalError::Config(format!(
                    "`features` must be mean, mean_all or cls, got {v:?}"
                )));
            }
        };
        let child = |kind: &str| block.and_then(|b| b.children.iter().find(|c| c.kind == kind));
        let protocols = block
            .map(|b| b.children.iter().map(|c| c.kind.clone()).collect())
            .unwrap_or_default();
        let knn_block = child("knn");
        let field = |b: Option<&canc_compiler::resolved::RBlock>, k: &str| {
            b.and_then(|b| b.get(k))
                .filter(|v| **v != RValue::None)
                .cloned()
        };
        let num = |b, k: &str, default: f64| -> Result<f64, EvalError> {
            match field(b, k) {
                None => Ok(default),
                Some(v) => v
                    .as_f64()
                    .ok_or_else(|| EvalError::Config(format!("`{k}` must be a number, got {v:?}"))),
            }
        };
        let int = |b, k: &str, default: usize| -> Result<usize, EvalError> {
            match field(b, k) {
                None => Ok(default),
                Some(v) => v
                    .as_i64()
                    .filter(|&i| i >= 1)
                    .map(|i| i as usize)
                    .ok_or_else(|| {
                        EvalError::Config(format!("`{k}` must be an integer >= 1, got {v:?}"))
                    }),
            }
        };
        let knn = KnnConfig {
            k: int(knn_block, "k", KnnConfig::default().k)?,
            temperature: num(knn_block, "temperature", KnnConfig::default().temperature)?,
        };
        let knn_every = match field(knn_block, "every") {
            None => None,
            Some(RValue::Quantity(x, u)) if u.as_str() == "epochs" && x > 0.0 => {
                Some(Interval::Epochs(x))
            }
            Some(RValue::Quantity(x, u)) if u.as_str() == "steps" && x >= 1.0 => {
                Some(Interval::Steps(x as u64))
            }
            Some(v) => {
                return Err(EvalError::Config(format!(
                    "`knn.every` must be a positive number of epochs or steps, got {v:?}"
                )));
            }
        };
        let lin = child("linear");
        let d = LinearConfig::default();
        let seed = plan.train.get("seed").and_then(RValue::as_i64).unwrap_or(0) as u64;
        let linear = LinearConfig {
            epochs: int(lin, "epochs", d.epochs)?,
            batch: int(lin, "batch", d.batch)?,
            lr: num(lin, "lr", d.lr)?,
            weight_decay: num(lin, "weight_decay", d.weight_decay)?,
            seed,
            ..d
        };
        Ok(EvalSpec {
            split,
            encoder,
            pool,
            knn,
            knn_every,
            linear,
            protocols,
        })
    }

    /// The split whose features are the training set (the one not evaluated).
    pub fn train_split(&self) -> &'static str {
        if self.split == "train" {
            "test"
        } else {
            "train"
        }
    }
}

/// The name of a pooling mode as the spec writes it.
pub fn pool_name(pool: PoolMode) -> &'static str {
    match pool {
        PoolMode::Mean => "mean",
        PoolMode::MeanAll => "mean_all",
        PoolMode::Cls => "cls",
    }
}

/// Loads the two splits an evaluation uses, with labels: `(training set, evaluated set)`. The
/// data block's `limit` (a training-time setting) is ignored; `limit` here keeps the first
/// `limit` images of each split (for quick checks).
pub fn load_splits(
    plan: &Plan,
    spec: &EvalSpec,
    limit: Option<usize>,
) -> Result<(Dataset, Dataset), EvalError> {
    let mut dp = plan.data.clone();
    dp.config.shift_remove("limit");
    if let Some(l) = limit {
        dp.config
            .insert("limit".into(), RValue::Int(l.max(1) as i64));
    }
    dp.config.insert("labels".into(), RValue::Bool(true));
    let train = data::load(&dp, Some(spec.train_split()))?;
    let test = data::load(&dp, Some(&spec.split))?;
    if train.labels.len() != train.n || test.labels.len() != test.n {
        return Err(EvalError::NoLabels);
    }
    Ok((train, test))
}

/// Features of both sets with their labels, ready for a protocol.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSet {
    /// What the features are (`mean_all`, `cls`, `raw_pixels`, …), for the record.
    pub name: String,
    /// Training-set features.
    pub train: Features,
    /// Training-set labels.
    pub train_labels: Vec<u32>,
    /// Evaluated-set features.
    pub test: Features,
    /// Evaluated-set labels.
    pub test_labels: Vec<u32>,
    /// Number of classes.
    pub classes: usize,
}

impl FeatureSet {
    /// Checks that sizes agree and labels are in range.
    pub fn check(&self) -> Result<(), EvalError> {
        if self.train.n != self.train_labels.len() || self.test.n != self.test_labels.len() {
            return Err(EvalError::Shape(format!(
                "{} train features for {} labels, {} test features for {} labels",
                self.train.n,
                self.train_labels.len(),
                self.test.n,
                self.test_labels.len()
            )));
        }
        if self.train.d != self.test.d {
            return Err(EvalError::Shape(format!(
                "train features have {} dimensions, test features {}",
                self.train.d, self.test.d
            )));
        }
        check_labels(&self.train_labels, self.classes)?;
        check_labels(&self.test_labels, self.classes)
    }
}

pub(crate) fn check_labels(labels: &[u32], classes: usize) -> Result<(), EvalError> {
    match labels.iter().find(|&&l| l as usize >= classes) {
        Some(l) => Err(EvalError::Shape(format!(
            "label {l} is out of range for {classes} classes"
        ))),
        None => Ok(()),
    }
}

/// Runs the kNN protocol on `set`; the record has no step (the caller sets it).
pub fn run_knn(set: &FeatureSet, cfg: &KnnConfig) -> Result<EvalResult, EvalError> {
    set.check()?;
    let t0 = Instant::now();
    let acc = knn_accuracy(
        &set.train,
        &set.train_labels,
        &set.test,
        &set.test_labels,
        set.classes,
        cfg,
    )?;
    Ok(EvalResult::new(
        "knn",
        cfg.params(),
        acc,
        set,
        t0.elapsed().as_secs_f64(),
    ))
}

/// Runs the linear-probe protocol on `set`; the record has no step (the caller sets it).
pub fn run_linear(set: &FeatureSet, cfg: &LinearConfig) -> Result<EvalResult, EvalError> {
    set.check()?;
    let t0 = Instant::now();
    let probe = train_linear(&set.train, &set.train_labels, set.classes, cfg)?;
    let acc = probe.accuracy(&set.test, &set.test_labels)?;
    Ok(EvalResult::new(
        "linear",
        cfg.params(),
        acc,
        set,
        t0.elapsed().as_secs_f64(),
    ))
}

/// Encodes both sets with `program`'s evaluated encoder (as the plan's `eval` block says).
pub fn program_features<B: AutodiffBackend>(
    program: &Program<B>,
    train: &Dataset,
    test: &Dataset,
    limit_train: usize,
    limit_test: usize,
) -> Result<FeatureSet, EvalError> {
    let spec = EvalSpec::from_plan(&program.plan)?;
    let vit = encoder(program, &spec.encoder)?;
    let norm = normalization(&program.plan);
    let classes = train.classes.max(test.classes);
    let first = |ds: &Dataset, limit: usize| -> Result<(Vec<usize>, Vec<u32>), EvalError> {
        let n = ds.n.min(limit);
        if ds.labels.len() < n {
            return Err(EvalError::NoLabels);
        }
        Ok(((0..n).collect(), ds.labels[..n].to_vec()))
    };
    let (tr_idx, train_labels) = first(train, limit_train)?;
    let (te_idx, test_labels) = first(test, limit_test)?;
    let dev = &program.device;
    let train_f = encode(&vit, train, &tr_idx, &norm, spec.pool, ENCODE_BATCH, dev)?;
    let test_f = encode(&vit, test, &te_idx, &norm, spec.pool, ENCODE_BATCH, dev)?;
    Ok(FeatureSet {
        name: pool_name(spec.pool).to_string(),
        train: train_f,
        train_labels,
        test: test_f,
        test_labels,
        classes,
    })
}

/// The online kNN monitor: top-1 weighted-kNN accuracy of `program`'s current encoder, with the
/// first `limit_train` images of `train` as the memory bank and the first `limit_test` of `test`
/// as queries (no augmentation, no masking).
pub fn knn_monitor<B: AutodiffBackend>(
    program: &Program<B>,
    train: &Dataset,
    test: &Dataset,
    limit_train: usize,
    limit_test: usize,
    cfg: &KnnConfig,
) -> Result<f64, EvalError> {
    let set = program_features(program, train, test, limit_train, limit_test)?;
    run_knn(&set, cfg).map(|r| r.accuracy)
}
