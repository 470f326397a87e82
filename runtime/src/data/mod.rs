//! Data sources and the per-view augmentation pipeline.
//!
//! ```text
//!  DataPlan ─load─▶ Dataset (u8, N·C·H·W) ─make_batch─▶ Batch (f32 views, B·C·S·S, and labels)
//!                                          (per image, in parallel: view pipelines, seeded RNG)
//! ```
//!
//! Sources: Fashion-MNIST IDX files ([`idx`]), CIFAR-10/100 binary batches ([`cifar`]), an
//! ImageFolder tree ([`folder`]) and seeded random images (`synthetic`). Augmentations follow
//! torchvision ([`augment`]); batches are reproducible for a seed regardless of the thread count
//! ([`batch`]).

pub mod augment;
pub mod batch;
pub mod cifar;
pub mod folder;
pub mod idx;
pub mod prefetch;

use std::path::{Path, PathBuf};

use canc_compiler::RValue;
use canc_compiler::plan::DataPlan;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

pub use augment::{Image, Pipeline, augment_view};
pub use batch::{Batch, epoch_order, make_batch, seed_for};

/// Where `apt-get install dataset-fashion-mnist` puts the Fashion-MNIST files.
pub const DEFAULT_FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

/// Why data could not be loaded or augmented.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The default Fashion-MNIST directory (or its files) is missing.
    #[error(
        "Fashion-MNIST not found at {}: install it with `apt-get install dataset-fashion-mnist` or pass --data PATH",
        .0.display()
    )]
    FashionMnistMissing(PathBuf),
    /// A file or directory the source needs does not exist.
    #[error("{what} not found at {}{hint}", path.display())]
    Missing {
        /// What was looked for (`CIFAR-10 batch data_batch_3.bin`).
        what: String,
        /// Where.
        path: PathBuf,
        /// Extra advice, starting with `: ` (or empty).
        hint: String,
    },
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file was read but its contents are wrong (bad magic, wrong size, bad label).
    #[error("{}: {msg}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A setting of the data block is unusable.
    #[error("data: {0}")]
    Config(String),
    /// A view's augmentation pipeline is unusable for its input.
    #[error("view `{view}`: {msg}")]
    View {
        /// The view.
        view: String,
        /// What is wrong.
        msg: String,
    },
    /// A batch request is inconsistent (unknown view, bad index).
    #[error("batch: {0}")]
    Batch(String),
}

impl DataError {
    pub(crate) fn corrupt(path: &Path, msg: impl Into<String>) -> Self {
        DataError::Corrupt {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A loaded data set: 8-bit images, channel-major, all `channels × size × size`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Pixels, `n · channels · size · size` bytes, image-major then channel, row, column.
    pub images: Vec<u8>,
    /// Class labels, one per image, each below `classes`; empty when the data block has
    /// `labels = false`.
    pub labels: Vec<u32>,
    /// Number of images.
    pub n: usize,
    /// Channels (1 or 3).
    pub channels: usize,
    /// Image side in pixels.
    pub size: usize,
    /// Number of classes the labels index (0 when there are no labels).
    pub classes: usize,
    /// Class names, by label (numbers where the source has no names).
    pub class_names: Vec<String>,
}

impl Dataset {
    /// Bytes per image.
    pub fn image_len(&self) -> usize {
        self.channels * self.size * self.size
    }

    /// The pixels of image `i` (`channels · size · size` bytes); `None` if out of range.
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let len = self.image_len();
        self.images.get(i * len..(i + 1) * len)
    }

    /// Images `indices` as f32, scaled to [0, 1] and normalised per channel with `mean` and `std`
    /// (one value, or one per channel): the un-augmented input used for evaluation.
    pub fn normalized(
        &self,
        indices: &[usize],
        mean: &[f64],
        std: &[f64],
    ) -> Result<Vec<f32>, DataError> {
        let c = self.channels;
        let per_channel = |v: &[f64], what: &str| -> Result<Vec<f32>, DataError> {
            match v.len() {
                1 => Ok(vec![v[0] as f32; c]),
                l if l == c => Ok(v.iter().map(|&x| x as f32).collect()),
                l => Err(DataError::Batch(format!(
                    "{l} {what} values for {c}-channel images"
                ))),
            }
        };
        let mean = per_channel(mean, "mean")?;
        let std = per_channel(std, "std")?;
        if std.iter().any(|&s| s <= 0.0 || s.is_nan()) {
            return Err(DataError::Batch("std must be > 0".into()));
        }
        let plane = self.size * self.size;
        let mut out = vec![0.0f32; indices.len() * self.image_len()];
        out.par_chunks_mut(self.image_len().max(1))
            .zip(indices.par_iter())
            .try_for_each(|(dst, &i)| {
                let src = self.image(i).ok_or_else(|| out_of_range(i, self.n))?;
                for (k, (d, &s)) in dst.iter_mut().zip(src).enumerate() {
                    let ch = k / plane;
                    *d = (f32::from(s) / 255.0 - mean[ch]) / std[ch];
                }
                Ok(())
            })?;
        Ok(out)
    }

    /// Keeps the first `limit` images (and labels).
    fn truncate(&mut self, limit: Option<usize>) {
        if let Some(l) = limit
            && l < self.n
        {
            self.n = l;
            self.images.truncate(l * self.image_len());
            self.labels.truncate(l);
        }
    }
}

pub(crate) fn out_of_range(i: usize, n: usize) -> DataError {
    DataError::Batch(format!("image index {i} is out of range for {n} images"))
}

/// Loads the data set `plan` describes: its `split` (or `split_override`, e.g. `test` for
/// evaluation), the first `limit` images, with labels unless `labels = false`.
///
/// For `image_folder`, a split selects the subdirectory `path/SPLIT` when it exists; without
/// one, `train` (and no split) reads `path` itself and any other split is an error.
pub fn load(plan: &DataPlan, split_override: Option<&str>) -> Result<Dataset, DataError> {
    let split = match split_override {
        Some(s) => Some(s.to_string()),
        None => cfg_str(plan, "split")?.map(str::to_string),
    };
    let limit = match plan.config.get("limit") {
        None | Some(RValue::None) => None,
        Some(RValue::Int(n)) if *n >= 1 => Some(*n as usize),
        Some(v) => {
            return Err(DataError::Config(format!(
                "`limit` must be an integer >= 1 or none, got {v:?}"
            )));
        }
    };
    let labels = match plan.config.get("labels") {
        None | Some(RValue::None) => true,
        Some(RValue::Bool(b)) => *b,
        Some(v) => {
            return Err(DataError::Config(format!(
                "`labels` must be true or false, got {v:?}"
            )));
        }
    };
    let path = cfg_str(plan, "path")?.map(PathBuf::from);
    let two_splits = |s: &Option<String>| -> Result<bool, DataError> {
        match s.as_deref() {
            None | Some("train") => Ok(true),
            Some("test") => Ok(false),
            Some(o) => Err(DataError::Config(format!(
                "unknown split `{o}` (expected train or test)"
            ))),
        }
    };
    let mut ds = match plan.source.as_str() {
        "fashion_mnist" => {
            let dir = path.unwrap_or_else(|| PathBuf::from(DEFAULT_FASHION_MNIST));
            idx::load_fashion_mnist(&dir, two_splits(&split)?, limit, labels)?
        }
        "cifar10" | "cifar100" => {
            let dir =
                path.ok_or_else(|| DataError::Config(format!("{} needs `path`", plan.source)))?;
            let fine = plan.source == "cifar100";
            cifar::load_cifar(&dir, fine, two_splits(&split)?, limit, labels)?
        }
        "image_folder" => {
            let dir = path.ok_or_else(|| DataError::Config("image_folder needs `path`".into()))?;
            folder::load_image_folder(
                &dir,
                split.as_deref(),
                plan.image_size as usize,
                plan.channels as usize,
                limit,
                labels,
            )?
        }
        "synthetic" => synthetic(plan, split.as_deref(), limit, labels)?,
        other => {
            return Err(DataError::Config(format!("unknown data source `{other}`")));
        }
    };
    ds.truncate(limit);
    Ok(ds)
}

/// A string-valued setting, if present.
fn cfg_str<'a>(plan: &'a DataPlan, key: &str) -> Result<Option<&'a str>, DataError> {
    match plan.config.get(key) {
        None | Some(RValue::None) => Ok(None),
        Some(v) => v
            .as_str()
            .map(Some)
            .ok_or_else(|| DataError::Config(format!("`{key}` must be a string, got {v:?}"))),
    }
}

/// An integer setting, or `default` when absent.
fn cfg_int(plan: &DataPlan, key: &str, default: i64) -> Result<i64, DataError> {
    match plan.config.get(key) {
        None | Some(RValue::None) => Ok(default),
        Some(RValue::Int(i)) => Ok(*i),
        Some(v) => Err(DataError::Config(format!(
            "`{key}` must be an integer, got {v:?}"
        ))),
    }
}

/// Seeded uniformly random images with uniformly random labels. The `test` split draws from
/// another stream than `train`, so the two differ.
fn synthetic(
    plan: &DataPlan,
    split: Option<&str>,
    limit: Option<usize>,
    labels: bool,
) -> Result<Dataset, DataError> {
    let n = cfg_int(plan, "images", 512)?;
    let classes = cfg_int(plan, "classes", 10)?;
    let size = plan.image_size as usize;
    let channels = plan.channels as usize;
    if n < 1 || classes < 1 || size == 0 || !(1..=3).contains(&channels) {
        return Err(DataError::Config(format!(
            "synthetic needs images >= 1, classes >= 1, image_size >= 1 and 1..=3 channels \
             (got {n}, {classes}, {size}, {channels})"
        )));
    }
    let n = limit.map_or(n as usize, |l| l.min(n as usize));
    let stream = match split {
        None | Some("train") => 0,
        Some("test") => 1,
        Some(o) => {
            return Err(DataError::Config(format!(
                "unknown split `{o}` (expected train or test)"
            )));
        }
    };
    let len = channels * size * size;
    let mut images = vec![0u8; n * len];
    let mut lab = vec![0u32; if labels { n } else { 0 }];
    images.par_chunks_mut(len).enumerate().for_each(|(i, img)| {
        let mut rng = StdRng::seed_from_u64(batch::mix(&[0x5f17, stream, i as u64]));
        rng.fill_bytes(img);
    });
    let mut rng = StdRng::seed_from_u64(batch::mix(&[0x1abe1, stream]));
    for l in &mut lab {
        *l = (rng.next_u64() % classes as u64) as u32;
    }
    Ok(Dataset {
        images,
        labels: lab,
        n,
        channels,
        size,
        classes: if labels { classes as usize } else { 0 },
        class_names: if labels {
            (0..classes).map(|c| c.to_string()).collect()
        } else {
            Vec::new()
        },
    })
}
