//! The networks of a plan as Burn modules: the ViT encoder ([`Vit`]), the MAE decoder
//! ([`VitDecoder`]) and the MLP projector/predictor ([`Mlp`]), configured from the compiler's
//! [`NetworkPlan`] by [`build`], plus the patch masks ([`mask`]).
//!
//! Conventions shared with the compiler and MAE: patches in row-major raster order, pixels
//! inside a patch in `(p1 p2 c)` order, masks with 1 = masked, and visible patches given as
//! ascending indices into the grid (`keep`). Linear layers are applied to 2-D tensors
//! (`[B·T, D]`), which is much faster on the CPU backend than 3-D input.

pub mod block;
pub mod decoder;
pub mod mask;
pub mod mlp;
pub mod pos;
pub mod vit;

pub use block::Block;
pub use decoder::{VitDecoder, VitDecoderConfig};
pub use mlp::{Activation, BatchNorm1d, Mlp, MlpConfig, NormKind};
pub use pos::PosKind;
pub use vit::{Vit, VitConfig};

use burn::module::{Initializer, Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Int, Tensor};
use canc_compiler::RValue;
use canc_compiler::ir::NetKind;
use canc_compiler::plan::NetworkPlan;
use canc_compiler::shape::Fact;

/// Why a network could not be built from its plan.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NnError {
    /// A required setting is absent.
    #[error("network `{network}`: missing setting `{key}`")]
    Missing {
        /// The network.
        network: String,
        /// The setting.
        key: String,
    },
    /// A setting has a value the runtime cannot use.
    #[error("network `{network}`: setting `{key}` = {value}: expected {expected}")]
    Invalid {
        /// The network.
        network: String,
        /// The setting.
        key: String,
        /// The value found, as text.
        value: String,
        /// What would be accepted.
        expected: String,
    },
    /// The plan gives the network no input type, or one of the wrong kind.
    #[error("network `{network}` ({kind}): expected {expected} input, got {got}")]
    Input {
        /// The network.
        network: String,
        /// Its kind.
        kind: &'static str,
        /// The input kind it takes.
        expected: &'static str,
        /// The input it was given, as text.
        got: String,
    },
    /// The settings are individually valid but do not fit together (patch vs image size, heads
    /// vs width, …).
    #[error("{0}")]
    Shape(String),
}

/// A network of a plan: one of the three kinds.
// Networks are built once per run; boxing the large variants would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Network<B: Backend> {
    /// ViT encoder.
    Vit(Vit<B>),
    /// MAE-style decoder.
    Decoder(VitDecoder<B>),
    /// MLP projector or predictor.
    Mlp(Mlp<B>),
}

impl<B: Backend> Network<B> {
    /// Learnable parameters, as the compiler counts them (`NetworkPlan::params.total()`):
    /// [`Module::num_params`] less the BatchNorm running statistics, which Burn visits like
    /// parameters.
    pub fn param_count(&self) -> usize {
        match self {
            Network::Vit(n) => n.num_params(),
            Network::Decoder(n) => n.num_params(),
            Network::Mlp(n) => n.param_count(),
        }
    }

    /// Runs the transformer blocks' matrix products in `dtype` (`None`: f32); see
    /// [`Block::matmul`]. MLPs, patch embeddings and heads stay f32.
    pub fn set_matmul(&mut self, dtype: Option<FloatDType>) {
        let blocks = match self {
            Network::Vit(n) => &mut n.blocks,
            Network::Decoder(n) => &mut n.blocks,
            Network::Mlp(_) => return,
        };
        for b in blocks {
            b.matmul = dtype;
        }
    }

    /// The encoder, if this is one.
    pub fn as_vit(&self) -> Option<&Vit<B>> {
        match self {
            Network::Vit(n) => Some(n),
            _ => None,
        }
    }

    /// The decoder, if this is one.
    pub fn as_decoder(&self) -> Option<&VitDecoder<B>> {
        match self {
            Network::Decoder(n) => Some(n),
            _ => None,
        }
    }

    /// The MLP, if this is one.
    pub fn as_mlp(&self) -> Option<&Mlp<B>> {
        match self {
            Network::Mlp(n) => Some(n),
            _ => None,
        }
    }
}

/// Builds the network of `net` on `device`, freshly initialised: its kind and settings from the
/// plan, its input width from the plan's input type (`net.input`).
pub fn build<B: Backend>(net: &NetworkPlan, device: &B::Device) -> Result<Network<B>, NnError> {
    let s = Settings { net };
    let wrong_input = |expected: &'static str| NnError::Input {
        network: net.name.clone(),
        kind: net.kind.name(),
        expected,
        got: net
            .input
            .as_ref()
            .map_or_else(|| "none".to_string(), Fact::to_string),
    };
    let built = match (net.kind, &net.input) {
        (NetKind::Vit, Some(Fact::Image { c, size })) => {
            VitConfig::from_settings(&s, *c as usize, *size as usize)?
                .init(device)
                .map(Network::Vit)
        }
        (NetKind::Vit, _) => Err(wrong_input("an image")),
        (
            NetKind::VitDecoder,
            Some(Fact::Tokens {
                grid,
                cls,
                dim,
                patch,
                channels,
                ..
            }),
        ) => VitDecoderConfig::from_settings(
            &s,
            *dim as usize,
            *grid as usize,
            *cls,
            (*patch * *patch * *channels) as usize,
        )?
        .init(device)
        .map(Network::Decoder),
        (NetKind::VitDecoder, _) => Err(wrong_input("a token")),
        (NetKind::Mlp, Some(Fact::Embedding { dim })) => {
            MlpConfig::from_settings(&s, *dim as usize)?
                .init(device)
                .map(Network::Mlp)
        }
        (NetKind::Mlp, _) => Err(wrong_input("an embedding")),
    };
    built.map_err(|e| match e {
        NnError::Shape(m) if !m.starts_with("network `") => {
            NnError::Shape(format!("network `{}`: {m}", net.name))
        }
        e => e,
    })
}

/// Typed access to a network's settings, with the reference's defaults for absent keys.
pub(crate) struct Settings<'a> {
    pub net: &'a NetworkPlan,
}

impl Settings<'_> {
    fn invalid(&self, key: &str, v: &RValue, expected: &str) -> NnError {
        NnError::Invalid {
            network: self.net.name.clone(),
            key: key.to_string(),
            value: format!("{v:?}"),
            expected: expected.to_string(),
        }
    }

    /// A positive integer; `default` when absent (`None`: required).
    pub fn int(&self, key: &str, default: Option<usize>) -> Result<usize, NnError> {
        match self.net.config.get(key) {
            None | Some(RValue::None) => default.ok_or_else(|| NnError::Missing {
                network: self.net.name.clone(),
                key: key.to_string(),
            }),
            Some(RValue::Int(i)) if *i > 0 => Ok(*i as usize),
            Some(v) => Err(self.invalid(key, v, "a positive integer")),
        }
    }

    /// A number `> 0` (`>= 0` with `zero_ok`); `default` when absent.
    pub fn float(&self, key: &str, default: f64, zero_ok: bool) -> Result<f64, NnError> {
        match self.net.config.get(key) {
            None | Some(RValue::None) => Ok(default),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && (x > 0.0 || (zero_ok && x == 0.0)) => Ok(x),
                _ => Err(self.invalid(
                    key,
                    v,
                    if zero_ok {
                        "a number >= 0"
                    } else {
                        "a number > 0"
                    },
                )),
            },
        }
    }

    /// A boolean; `default` when absent.
    pub fn flag(&self, key: &str, default: bool) -> Result<bool, NnError> {
        match self.net.config.get(key) {
            None | Some(RValue::None) => Ok(default),
            Some(RValue::Bool(b)) => Ok(*b),
            Some(v) => Err(self.invalid(key, v, "true or false")),
        }
    }

    /// One of `options`; `default` when absent.
    pub fn choice<'o>(
        &self,
        key: &str,
        default: &'o str,
        options: &[&'o str],
    ) -> Result<&'o str, NnError> {
        match self.net.config.get(key) {
            None | Some(RValue::None) => Ok(default),
            Some(v) => v
                .as_str()
                .and_then(|s| options.iter().find(|o| **o == s).copied())
                .ok_or_else(|| self.invalid(key, v, &format!("one of {}", options.join(", ")))),
        }
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&RValue> {
        self.net.config.get(key)
    }
}

/// A Linear layer with MAE's initialisation: Xavier-uniform weight, zero bias.
pub(crate) fn xavier_linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    device: &B::Device,
) -> Linear<B> {
    let mut l = LinearConfig::new(d_in, d_out)
        .with_initializer(Initializer::XavierUniform { gain: 1.0 })
        .init(device);
    l.bias = Some(Initializer::Zeros.init([d_out], device));
    l
}

/// A `[1, n, d]` parameter drawn from N(0, 0.02²) (MAE's CLS and mask tokens, learned
/// position embeddings).
pub(crate) fn token_param<B: Backend>(
    n: usize,
    d: usize,
    device: &B::Device,
) -> Param<Tensor<B, 3>> {
    Initializer::Normal {
        mean: 0.0,
        std: 0.02,
    }
    .init([1, n, d], device)
}

/// `linear` applied to the last dimension of a `[B, T, D]` tensor through a 2-D `[B·T, D]`
/// view (Burn's 3-D Linear runs one GEMM per batch entry and a slow weight gradient).
pub(crate) fn linear3<B: Backend>(linear: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    linear3_as(linear, x, None)
}

/// [`linear3`] with its matrix product in `dtype` ([`linear_as`]).
pub(crate) fn linear3_as<B: Backend>(
    linear: &Linear<B>,
    x: Tensor<B, 3>,
    dtype: Option<FloatDType>,
) -> Tensor<B, 3> {
    let [b, t, d] = x.dims();
    let y = linear_as(linear, x.reshape([b * t, d]), dtype);
    let out = y.dims()[1];
    y.reshape([b, t, out])
}

/// `linear` on `[N, D]` rows with its matrix product in `dtype` (autocast): the input and the
/// f32 weight are cast, multiplied, and the product cast back to f32 before the f32 bias is
/// added. The weights stay f32 (the optimizer's master copy); the casts' backward casts the
/// gradients back, so they reach the weights in f32. `None`: plain f32.
pub(crate) fn linear_as<B: Backend>(
    linear: &Linear<B>,
    x: Tensor<B, 2>,
    dtype: Option<FloatDType>,
) -> Tensor<B, 2> {
    if dtype.is_none() {
        let bias = linear.bias.as_ref().map(|b| b.val());
        return crate::ops::linear(x, linear.weight.val(), bias);
    }
    let y = product_as(linear, x, dtype);
    match &linear.bias {
        Some(bias) => crate::ops::add_bias(y, bias.val()),
        None => y,
    }
}

/// The matrix product of `linear` on `[N, D]` rows without its bias, in `dtype` as
/// [`linear_as`] (the caller adds the bias, e.g. in the op after it).
pub(crate) fn product_as<B: Backend>(
    linear: &Linear<B>,
    x: Tensor<B, 2>,
    dtype: Option<FloatDType>,
) -> Tensor<B, 2> {
    match dtype {
        None => x.matmul(linear.weight.val()),
        Some(dt) => x
            .cast(dt)
            .matmul(linear.weight.val().cast(dt))
            .cast(FloatDType::F32),
    }
}

/// `x` `[B, T, D]` plus `shared` `[1, T, D]` (positions) broadcast over the batch, computed as
/// `[B, T·D] + [1, T·D]`: Burn's CPU backend has a SIMD path for a row shared by every outer
/// index, while `[B, T, D] + [1, T, D]` walks both element by element (about 12 ms for the CAN
/// encoder's positions at batch 64 on two cores).
pub(crate) fn add_shared<B: Backend>(x: Tensor<B, 3>, shared: Tensor<B, 3>) -> Tensor<B, 3> {
    let [b, t, d] = x.dims();
    (x.reshape([b, t * d]) + shared.reshape([1, t * d])).reshape([b, t, d])
}

/// Row indices into a `[B·g, …]` flattening of `[B, g, …]` for per-image grid indices `keep`
/// `[B, n]`: `keep[i][j] + i·g`, as `[B·n]`. Selecting these rows is the gather of `keep` along
/// the grid; Burn's 2-D row select copies whole rows, where a gather with the index expanded
/// over the width reads one index per element (the CAN encoder's two gathers took 26 ms of a
/// batch-64 CPU step that way, under 1 ms as a row select).
pub(crate) fn flat_rows<B: Backend>(keep: Tensor<B, 2, Int>, g: usize) -> Tensor<B, 1, Int> {
    let [b, n] = keep.dims();
    let offsets = Tensor::<B, 1, Int>::arange_step(0..(b * g) as i64, g, &keep.device());
    (keep + offsets.reshape([b, 1])).reshape([b * n])
}

/// `[B, g, d]` from `rows` `[B·n, d]` placed at the grid positions `keep` `[B, n]` and `fill`
/// `[d]` everywhere else: one row select from `rows` with `fill` appended, whose backward sends
/// each visible position's gradient to its row and sums the rest into `fill`.
pub(crate) fn place_rows<B: Backend>(
    rows: Tensor<B, 2>,
    fill: Tensor<B, 1>,
    keep: Tensor<B, 2, Int>,
    g: usize,
) -> Tensor<B, 3> {
    let [b, _] = keep.dims();
    let [_, d] = rows.dims();
    crate::ops::place_rows(rows, fill, flat_rows(keep, g), b * g).reshape([b, g, d])
}

/// The side of a square grid of `grid` positions, if it is one.
pub(crate) fn grid_side(grid: usize) -> Option<usize> {
    let s = (grid as f64).sqrt().round() as usize;
    (s * s == grid).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::TensorData;

    type AD = Autodiff<Flex>;

    fn vals<const D: usize, Bk: Backend>(t: Tensor<Bk, D>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    #[test]
    fn flat_rows_offset_each_image_by_its_grid() {
        let keep = Tensor::<AD, 2, Int>::from_data([[0, 2], [1, 3]], &Default::default());
        let flat = flat_rows(keep, 4).into_data().convert::<i64>();
        assert_eq!(flat.to_vec::<i64>().unwrap(), vec![0, 2, 5, 7]);
    }

    /// Two images, grid 3, one visible token each (width 2): values by hand, and the gradient
    /// of a weighted sum sends each visible position's weight to its row and the sum of the
    /// masked positions' weights to the fill.
    #[test]
    fn place_rows_by_hand_with_gradients() {
        let dev = Default::default();
        let rows = Tensor::<AD, 2>::from_data([[1.0, 2.0], [3.0, 4.0]], &dev).require_grad();
        let fill = Tensor::<AD, 1>::from_data([9.0, 8.0], &dev).require_grad();
        let keep = Tensor::<AD, 2, Int>::from_data([[2], [0]], &dev);
        let y = place_rows(rows.clone(), fill.clone(), keep, 3);
        assert_eq!(y.dims(), [2, 3, 2]);
        #[rustfmt::skip]
        let expect = vec![9.0, 8.0,  9.0, 8.0,  1.0, 2.0,   3.0, 4.0,  9.0, 8.0,  9.0, 8.0];
        assert_eq!(vals(y.clone()), expect);
        let w: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let w = Tensor::<AD, 3>::from_data(TensorData::new(w, [2, 3, 2]), &dev);
        let g = (y * w).sum().backward();
        assert_eq!(vals(rows.grad(&g).unwrap()), vec![4.0, 5.0, 6.0, 7.0]);
        // masked positions: (0,0) (0,1) (1,1) (1,2) → weights 0+2+8+10, 1+3+9+11
        assert_eq!(vals(fill.grad(&g).unwrap()), vec![20.0, 24.0]);
    }
}
