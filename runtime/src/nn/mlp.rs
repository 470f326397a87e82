//! The MLP projector / predictor, with its BatchNorm.

use super::{NnError, Settings};
use burn::module::{Initializer, Module, Param, RunningState};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;

/// LayerNorm epsilon of the hidden norms (PyTorch's default).
const LN_EPS: f64 = 1e-5;

/// The activation after each hidden layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// Exact (erf) GELU.
    Gelu,
}

/// A normalisation of an MLP layer's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// None.
    None,
    /// BatchNorm1d with a learned affine.
    Bn,
    /// BatchNorm1d without affine (`last_norm = bn_no_affine`).
    BnNoAffine,
    /// LayerNorm (hidden layers only).
    Ln,
}

/// The settings of an [`Mlp`] (`network: mlp`), with its input width.
#[derive(Debug, Clone, PartialEq)]
pub struct MlpConfig {
    /// Input width.
    pub input: usize,
    /// Linear layers (at least 1).
    pub layers: usize,
    /// Hidden width.
    pub hidden: usize,
    /// Output width.
    pub out: usize,
    /// Norm after each hidden layer: `None`, `Bn` or `Ln`.
    pub norm: NormKind,
    /// Norm after the last layer: `None`, `Bn` or `BnNoAffine`.
    pub last_norm: NormKind,
    /// Activation after each hidden layer (after its norm).
    pub act: Activation,
    /// Bias in the hidden layers.
    pub bias: bool,
    /// Bias in the last layer.
    pub last_bias: bool,
}

impl MlpConfig {
    /// A config with the reference's defaults: 2 layers, no norms, ReLU, biases everywhere.
    pub fn new(input: usize, hidden: usize, out: usize) -> Self {
        MlpConfig {
            input,
            layers: 2,
            hidden,
            out,
            norm: NormKind::None,
            last_norm: NormKind::None,
            act: Activation::Relu,
            bias: true,
            last_bias: true,
        }
    }

    /// The config of a plan's `mlp` network called on `[B, input]`.
    pub(crate) fn from_settings(s: &Settings, input: usize) -> Result<Self, NnError> {
        let norm = match s.choice("norm", "none", &["none", "bn", "ln"])? {
            "bn" => NormKind::Bn,
            "ln" => NormKind::Ln,
            _ => NormKind::None,
        };
        let last_norm = match s.choice("last_norm", "none", &["none", "bn", "bn_no_affine"])? {
            "bn" => NormKind::Bn,
            "bn_no_affine" => NormKind::BnNoAffine,
            _ => NormKind::None,
        };
        let act = match s.choice("act", "relu", &["relu", "gelu"])? {
            "gelu" => Activation::Gelu,
            _ => Activation::Relu,
        };
        Ok(MlpConfig {
            input,
            layers: s.int("layers", Some(2))?,
            hidden: s.int("hidden", None)?,
            out: s.int("out", None)?,
            norm,
            last_norm,
            act,
            bias: s.flag("bias", true)?,
            last_bias: s.flag("last_bias", true)?,
        })
    }

    /// A freshly initialised MLP: Linear layers with PyTorch's default initialisation
    /// (weights and biases from U(±1/√fan_in)), norms at unit scale and zero shift.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<Mlp<B>, NnError> {
        if self.layers == 0 {
            return Err(NnError::Shape("an MLP needs at least one layer".into()));
        }
        let hidden_norm = |w: usize| match self.norm {
            NormKind::None => Ok(None),
            NormKind::Bn => Ok(Some(HiddenNorm::Bn(BatchNorm1d::new(w, true, device)))),
            NormKind::Ln => Ok(Some(HiddenNorm::Ln(
                LayerNormConfig::new(w).with_epsilon(LN_EPS).init(device),
            ))),
            NormKind::BnNoAffine => Err(NnError::Shape(
                "`bn_no_affine` is only available as `last_norm`".into(),
            )),
        };
        let mut linears = Vec::with_capacity(self.layers);
        let mut norms = Vec::with_capacity(self.layers - 1);
        let mut width = self.input;
        for _ in 1..self.layers {
            linears.push(
                LinearConfig::new(width, self.hidden)
                    .with_bias(self.bias)
                    .init(device),
            );
            norms.push(hidden_norm(self.hidden)?);
            width = self.hidden;
        }
        linears.push(
            LinearConfig::new(width, self.out)
                .with_bias(self.last_bias)
                .init(device),
        );
        let last_norm = match self.last_norm {
            NormKind::None => None,
            NormKind::Bn => Some(BatchNorm1d::new(self.out, true, device)),
            NormKind::BnNoAffine => Some(BatchNorm1d::new(self.out, false, device)),
            NormKind::Ln => {
                return Err(NnError::Shape(
                    "`last_norm` takes none, bn or bn_no_affine".into(),
                ));
            }
        };
        Ok(Mlp {
            linears,
            norms,
            last_norm,
            act: self.act,
        })
    }
}

/// A hidden layer's normalisation.
#[derive(Module, Debug)]
pub enum HiddenNorm<B: Backend> {
    /// BatchNorm1d.
    Bn(BatchNorm1d<B>),
    /// LayerNorm.
    Ln(LayerNorm<B>),
}

/// MLP `in → hidden → … → out`: after each hidden Linear its norm, then the activation; after
/// the last Linear an optional BatchNorm.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// The Linear layers, input first.
    pub linears: Vec<Linear<B>>,
    /// The norm of each hidden layer (one fewer than `linears`).
    pub norms: Vec<Option<HiddenNorm<B>>>,
    /// The norm after the last layer.
    pub last_norm: Option<BatchNorm1d<B>>,
    /// Hidden activation.
    pub act: Activation,
}

impl<B: Backend> Mlp<B> {
    /// `[B, in]` → `[B, out]`. BatchNorms use the batch's statistics (and update their running
    /// ones) on an autodiff backend, the running statistics otherwise (Burn's convention).
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let training = B::ad_enabled(&x.device());
        self.forward_mode(x, training)
    }

    /// [`Mlp::forward`] with BatchNorm's mode chosen explicitly: `training` uses and tracks the
    /// batch statistics.
    pub fn forward_mode(&self, x: Tensor<B, 2>, training: bool) -> Tensor<B, 2> {
        let mut x = x;
        let last = self.linears.len() - 1;
        for (i, linear) in self.linears.iter().enumerate() {
            x = linear.forward(x);
            if i == last {
                break;
            }
            x = match (self.norms.get(i).and_then(Option::as_ref), self.act) {
                // BatchNorm then ReLU: one kernel on a GPU.
                (Some(HiddenNorm::Bn(bn)), Activation::Relu) => bn.forward_act(x, training, true),
                (norm, act) => {
                    let x = match norm {
                        Some(HiddenNorm::Bn(bn)) => bn.forward_mode(x, training),
                        Some(HiddenNorm::Ln(ln)) => crate::ops::layer_norm(ln, LN_EPS, x),
                        None => x,
                    };
                    match act {
                        Activation::Relu => relu(x),
                        Activation::Gelu => crate::ops::gelu(x),
                    }
                }
            };
        }
        match &self.last_norm {
            Some(bn) => bn.forward_mode(x, training),
            None => x,
        }
    }

    /// Learnable parameters (the compiler's count): [`Module::num_params`] less the BatchNorm
    /// running statistics.
    pub fn param_count(&self) -> usize {
        let bn_widths = self
            .norms
            .iter()
            .flatten()
            .filter_map(|n| match n {
                HiddenNorm::Bn(bn) => Some(bn.width()),
                HiddenNorm::Ln(_) => None,
            })
            .chain(self.last_norm.iter().map(BatchNorm1d::width));
        self.num_params() - 2 * bn_widths.sum::<usize>()
    }
}

/// BatchNorm over the batch of `[B, C]` features, PyTorch's `BatchNorm1d`: epsilon 1e-5,
/// momentum 0.1, unbiased running variance, optional affine.
#[derive(Module, Debug)]
pub struct BatchNorm1d<B: Backend> {
    /// Scale (with affine).
    pub gamma: Option<Param<Tensor<B, 1>>>,
    /// Shift (with affine).
    pub beta: Option<Param<Tensor<B, 1>>>,
    /// Running mean.
    pub running_mean: RunningState<Tensor<B, 1>>,
    /// Running (unbiased) variance.
    pub running_var: RunningState<Tensor<B, 1>>,
    /// Added to the variance.
    pub epsilon: f64,
    /// Weight of the batch in the running statistics.
    pub momentum: f64,
}

impl<B: Backend> BatchNorm1d<B> {
    /// A BatchNorm of `width` features, with a learned affine (γ = 1, β = 0) if `affine`.
    pub fn new(width: usize, affine: bool, device: &B::Device) -> Self {
        BatchNorm1d {
            gamma: affine.then(|| Initializer::Ones.init([width], device)),
            beta: affine.then(|| Initializer::Zeros.init([width], device)),
            running_mean: RunningState::new(Tensor::zeros([width], device)),
            running_var: RunningState::new(Tensor::ones([width], device)),
            epsilon: 1e-5,
            momentum: 0.1,
        }
    }

    /// Features normalised.
    pub fn width(&self) -> usize {
        self.running_mean.value().dims()[0]
    }

    /// Normalises `[B, C]` with the batch's statistics (updating the running ones) when
    /// `training`, with the running statistics otherwise.
    pub fn forward_mode(&self, x: Tensor<B, 2>, training: bool) -> Tensor<B, 2> {
        self.forward_act(x, training, false)
    }

    /// [`BatchNorm1d::forward_mode`], then ReLU if `relu`. In training on a GPU this is one
    /// kernel forward and one backward ([`crate::ops::batch_norm_train`]).
    pub fn forward_act(&self, x: Tensor<B, 2>, training: bool, relu: bool) -> Tensor<B, 2> {
        if training && crate::ops::gpu_kernels::<B>() {
            let affine = match (&self.gamma, &self.beta) {
                (Some(g), Some(b)) => Some(Some((g.val(), b.val()))),
                (None, None) => Some(None),
                _ => None,
            };
            if let Some(affine) = affine {
                let (rm, rv) = (
                    self.running_mean.value_sync(),
                    self.running_var.value_sync(),
                );
                let fused = crate::ops::batch_norm_train(
                    &x,
                    affine.as_ref().map(|(g, b)| (g, b)),
                    (&rm, &rv),
                    self.epsilon,
                    self.momentum,
                    relu,
                );
                if let Some((y, rm, rv)) = fused {
                    // Folded at once, as below.
                    self.running_mean.update(rm);
                    self.running_mean.value_sync();
                    self.running_var.update(rv);
                    self.running_var.value_sync();
                    return y;
                }
            }
        }
        let y = self.composed(x, training);
        if relu {
            burn::tensor::activation::relu(y)
        } else {
            y
        }
    }

    /// [`BatchNorm1d::forward_mode`] in Burn's tensor ops.
    fn composed(&self, x: Tensor<B, 2>, training: bool) -> Tensor<B, 2> {
        let [n, c] = x.dims();
        let (mean, var) = if training {
            let mean = x.clone().mean_dim(0);
            let var = (x.clone() - mean.clone()).square().mean_dim(0);
            let unbiased = if n > 1 {
                var.clone().detach() * (n as f64 / (n - 1) as f64)
            } else {
                var.clone().detach()
            };
            let m = self.momentum;
            let rm =
                self.running_mean.value_sync() * (1.0 - m) + mean.clone().detach().reshape([c]) * m;
            let rv = self.running_var.value_sync() * (1.0 - m) + unbiased.reshape([c]) * m;
            // `RunningState` keeps one pending value per thread and folds them into its
            // value only when the same thread reads it again; a training step may run on any
            // worker thread, so fold each update at once, before another thread can add one.
            self.running_mean.update(rm.detach());
            self.running_mean.value_sync();
            self.running_var.update(rv.detach());
            self.running_var.value_sync();
            (mean, var)
        } else {
            (
                self.running_mean.value_sync().reshape([1, c]),
                self.running_var.value_sync().reshape([1, c]),
            )
        };
        let mut y = (x - mean) / var.add_scalar(self.epsilon).sqrt();
        if let Some(g) = &self.gamma {
            y = y * g.val().reshape([1, c]);
        }
        if let Some(b) = &self.beta {
            y = y + b.val().reshape([1, c]);
        }
        y
    }
}
