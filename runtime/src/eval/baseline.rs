//! Baselines evaluated by the same protocols: raw pixels (normalised as in training, flattened)
//! and the spec's encoder at its random initialisation (the spec's seed, no training).

use super::{EvalError, FeatureSet, normalization, program_features, raw_pixels};
use crate::data::Dataset;
use crate::exec::Program;
use burn::tensor::backend::AutodiffBackend;
use canc_compiler::plan::Plan;

/// A reference point for learned features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// Normalised pixels, flattened.
    RawPixels,
    /// The untrained encoder.
    RandomInit,
}

impl Baseline {
    /// The name used on the command line and in records (`raw`, `random`).
    pub fn name(self) -> &'static str {
        match self {
            Baseline::RawPixels => "raw",
            Baseline::RandomInit => "random",
        }
    }

    /// Parses `raw` or `random`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "raw" => Some(Baseline::RawPixels),
            "random" => Some(Baseline::RandomInit),
            _ => None,
        }
    }

    /// Features of every image of `train` and `test` for this baseline; the random encoder is
    /// built from `plan` on `device` (backend `B`, no autodiff used).
    pub fn features<B: AutodiffBackend>(
        self,
        plan: &Plan,
        train: &Dataset,
        test: &Dataset,
        device: &B::Device,
    ) -> Result<FeatureSet, EvalError> {
        match self {
            Baseline::RawPixels => raw_feature_set(plan, train, test),
            Baseline::RandomInit => {
                let program = Program::<B>::new(plan.clone(), device)?;
                let mut set = program_features(&program, train, test, train.n, test.n)?;
                set.name = format!("random_init/{}", set.name);
                Ok(set)
            }
        }
    }
}

/// Raw-pixel features of every image of `train` and `test`, normalised as the plan's views
/// normalise.
pub fn raw_feature_set(
    plan: &Plan,
    train: &Dataset,
    test: &Dataset,
) -> Result<FeatureSet, EvalError> {
    let norm = normalization(plan);
    let all = |ds: &Dataset| (0..ds.n).collect::<Vec<usize>>();
    if train.labels.len() != train.n || test.labels.len() != test.n {
        return Err(EvalError::NoLabels);
    }
    Ok(FeatureSet {
        name: "raw_pixels".into(),
        train: raw_pixels(train, &all(train), &norm)?,
        train_labels: train.labels.clone(),
        test: raw_pixels(test, &all(test), &norm)?,
        test_labels: test.labels.clone(),
        classes: train.classes.max(test.classes),
    })
}
