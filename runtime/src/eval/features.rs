//! Frozen-encoder features: un-augmented images, normalised as in training, encoded without
//! masking or autodiff, pooled into one row per image.

use super::EvalError;
use crate::data::Dataset;
use crate::exec::Program;
use crate::nn::{Network, Vit};
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use canc_compiler::RValue;
use canc_compiler::ir::PoolMode;
use canc_compiler::plan::Plan;

/// A row-major `n × d` feature matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// `n · d` values, row `i` at `[i·d, (i+1)·d)`.
    pub data: Vec<f32>,
    /// Rows (images).
    pub n: usize,
    /// Columns (feature dimensions).
    pub d: usize,
}

impl Features {
    /// Wraps `data` as `n × d`; an error if the length is not `n · d`.
    pub fn new(data: Vec<f32>, n: usize, d: usize) -> Result<Self, EvalError> {
        if data.len() != n * d {
            return Err(EvalError::Shape(format!(
                "{} values cannot form {n} rows of {d}",
                data.len()
            )));
        }
        Ok(Features { data, n, d })
    }

    /// Row `i`.
    ///
    /// # Panics
    /// If `i >= n`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.d..(i + 1) * self.d]
    }
}

/// Per-channel normalisation of evaluation images (one value applies to every channel).
#[derive(Debug, Clone, PartialEq)]
pub struct Normalization {
    /// Means, subtracted from pixels in [0, 1].
    pub mean: Vec<f64>,
    /// Standard deviations, divided by.
    pub std: Vec<f64>,
}

/// The normalisation the encoder saw in training: the first `normalize` step of the plan's
/// views (its `mean`/`std`, the data set's defaults where unset); none (mean 0, std 1) when the
/// views have no `normalize` step; the data set's defaults when the plan has no views.
pub fn normalization(plan: &Plan) -> Normalization {
    let floats = |v: Option<&RValue>| -> Option<Vec<f64>> {
        match v? {
            RValue::List(xs) => xs.iter().map(RValue::as_f64).collect(),
            x => x.as_f64().map(|f| vec![f]),
        }
    };
    let step = plan
        .views
        .iter()
        .flat_map(|v| v.augment.iter())
        .find(|(name, _)| name == "normalize");
    match step {
        Some((_, cfg)) => Normalization {
            mean: floats(cfg.get("mean")).unwrap_or_else(|| plan.data.mean.clone()),
            std: floats(cfg.get("std")).unwrap_or_else(|| plan.data.std.clone()),
        },
        None if !plan.views.is_empty() => Normalization {
            mean: vec![0.0],
            std: vec![1.0],
        },
        None => Normalization {
            mean: plan.data.mean.clone(),
            std: plan.data.std.clone(),
        },
    }
}

/// The encoder `name` of `program`, copied off the autodiff graph: a trained network's current
/// weights, or an EMA teacher's.
pub fn encoder<B: AutodiffBackend>(
    program: &Program<B>,
    name: &str,
) -> Result<Vit<B::InnerBackend>, EvalError> {
    let net = match program.index.get(name) {
        Some(&i) => program.model.nets[i].valid(),
        None => program
            .teachers
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, t)| t.clone())
            .ok_or_else(|| EvalError::Encoder(format!("no network `{name}` in the program")))?,
    };
    match net {
        Network::Vit(v) => Ok(v),
        _ => Err(EvalError::Encoder(format!("`{name}` is not a vit"))),
    }
}

/// Pools encoder tokens `[b, cls + n, d]` into `[b, d]`: `Mean` averages the patch tokens,
/// `MeanAll` every token (CLS included), `Cls` takes the CLS token (an error without one).
pub fn pool<B: Backend>(
    tokens: Tensor<B, 3>,
    has_cls: bool,
    mode: PoolMode,
) -> Result<Tensor<B, 2>, EvalError> {
    let [b, n, d] = tokens.dims();
    let pooled = match mode {
        PoolMode::Cls if !has_cls => {
            return Err(EvalError::Config(
                "`features = cls` but the encoder has no CLS token".into(),
            ));
        }
        PoolMode::Cls => tokens.slice([0..b, 0..1, 0..d]),
        PoolMode::Mean if has_cls => tokens.slice([0..b, 1..n, 0..d]).mean_dim(1),
        PoolMode::Mean | PoolMode::MeanAll => tokens.mean_dim(1),
    };
    Ok(pooled.reshape([b, d]))
}

/// Encodes images `indices` of `ds` (normalised with `norm`, not augmented, not masked) with
/// `vit` in batches of `batch`, pooled with `pool`: an `indices.len() × d` matrix.
pub fn encode<B: Backend>(
    vit: &Vit<B>,
    ds: &Dataset,
    indices: &[usize],
    norm: &Normalization,
    pool_mode: PoolMode,
    batch: usize,
    device: &B::Device,
) -> Result<Features, EvalError> {
    let d = vit.dim();
    let (c, s) = (ds.channels, ds.size);
    let mut out = Vec::with_capacity(indices.len() * d);
    for chunk in indices.chunks(batch.max(1)) {
        let px = ds.normalized(chunk, &norm.mean, &norm.std)?;
        let x = Tensor::<B, 4>::from_data(TensorData::new(px, [chunk.len(), c, s, s]), device);
        let tokens = vit.forward(x, None);
        let pooled = pool(tokens, vit.has_cls(), pool_mode)?;
        let v = pooled
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| EvalError::Tensor(format!("{e:?}")))?;
        out.extend_from_slice(&v);
    }
    Features::new(out, indices.len(), d)
}

/// Raw-pixel features: images `indices` of `ds`, normalised with `norm` and flattened
/// (`channels · size · size` dimensions).
pub fn raw_pixels(
    ds: &Dataset,
    indices: &[usize],
    norm: &Normalization,
) -> Result<Features, EvalError> {
    let px = ds.normalized(indices, &norm.mean, &norm.std)?;
    Features::new(px, indices.len(), ds.image_len())
}
