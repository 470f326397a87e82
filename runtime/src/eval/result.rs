//! The results record of one protocol run, and where it is written:
//! `<run_dir>/eval/<protocol>.json`.

use super::{EvalError, FeatureSet};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One protocol's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// `knn` or `linear`.
    pub protocol: String,
    /// The protocol's pinned parameters (k and T; or the probe recipe).
    pub params: serde_json::Value,
    /// Top-1 accuracy on the evaluated set, in [0, 1].
    pub accuracy: f64,
    /// Training-set size.
    pub train_n: usize,
    /// Evaluated-set size.
    pub test_n: usize,
    /// Feature dimensions.
    pub dim: usize,
    /// What the features are (`mean_all`, `cls`, `raw_pixels`, …).
    pub features: String,
    /// The checkpoint step evaluated (`None`: untrained or a baseline).
    pub step: Option<u64>,
    /// Wall time of the protocol (after feature extraction), in seconds.
    pub seconds: f64,
    /// RankMe of the evaluated set's features (`None`: not computed, d > 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rankme: Option<f64>,
    /// Mean per-dimension std of the evaluated set's L2-normalised features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emb_std: Option<f64>,
}

impl EvalResult {
    /// A record for `set`, without a step.
    pub fn new(
        protocol: &str,
        params: serde_json::Value,
        accuracy: f64,
        set: &FeatureSet,
        seconds: f64,
    ) -> Self {
        EvalResult {
            protocol: protocol.to_string(),
            params,
            accuracy,
            train_n: set.train.n,
            test_n: set.test.n,
            dim: set.train.d,
            features: set.name.clone(),
            step: None,
            seconds,
            rankme: None,
            emb_std: None,
        }
    }

    /// The file this record goes to in `run_dir`.
    pub fn path(&self, run_dir: &Path) -> PathBuf {
        run_dir.join("eval").join(format!("{}.json", self.protocol))
    }
}

/// Writes `result` to `<run_dir>/eval/<protocol>.json` (pretty JSON, temp file + rename, so a
/// reader never sees half a file); returns the path.
pub fn write_result(run_dir: &Path, result: &EvalResult) -> Result<PathBuf, EvalError> {
    let path = result.path(run_dir);
    let dir = run_dir.join("eval");
    std::fs::create_dir_all(&dir).map_err(|source| EvalError::Io {
        path: dir.clone(),
        source,
    })?;
    let mut text = serde_json::to_string_pretty(result)?;
    text.push('\n');
    let tmp = dir.join(format!(".{}.json.tmp", result.protocol));
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            EvalError::Io {
                path: path.clone(),
                source,
            }
        })?;
    Ok(path)
}
