//! The MAE decoder: encoder tokens back on the full grid with mask tokens in the holes,
//! optionally conditioned on the noise level σ (CAN), one output per patch position.

use super::pos::{PosEmbed, PosKind, sigma_embedding};
use super::vit::{check_heads, pos_kind};
use super::{
    Block, NnError, Settings, add_shared, grid_side, linear3, place_rows, token_param,
    xavier_linear,
};
use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// LayerNorm epsilon of the decoder (MAE's).
const LN_EPS: f64 = 1e-6;

/// The settings of a [`VitDecoder`] (`network: vit_decoder`), with its input's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct VitDecoderConfig {
    /// Width of the encoder tokens it reads.
    pub input_dim: usize,
    /// Patch positions of the full grid (a square).
    pub grid: usize,
    /// The input sequence starts with a CLS token.
    pub cls: bool,
    /// Decoder width.
    pub dim: usize,
    /// Transformer blocks.
    pub depth: usize,
    /// Attention heads (divide `dim`).
    pub heads: usize,
    /// MLP hidden width / `dim`.
    pub mlp_ratio: f64,
    /// Position embedding.
    pub pos: PosKind,
    /// Output width per patch position.
    pub out: usize,
    /// Width of the σ embedding when conditioned on the noise level (`cond = sigma`).
    pub cond_dim: Option<usize>,
}

impl VitDecoderConfig {
    /// A config with the reference's defaults for the optional settings (no conditioning, sin-cos
    /// positions, MLP ratio 4).
    pub fn new(
        input_dim: usize,
        grid: usize,
        cls: bool,
        dim: usize,
        depth: usize,
        heads: usize,
        out: usize,
    ) -> Self {
        VitDecoderConfig {
            input_dim,
            grid,
            cls,
            dim,
            depth,
            heads,
            mlp_ratio: 4.0,
            pos: PosKind::SinCos,
            out,
            cond_dim: None,
        }
    }

    /// The config of a plan's `vit_decoder` network reading `[B, cls + n, input_dim]` tokens of
    /// a `grid`-position grid whose patches hold `pixels` values.
    pub(crate) fn from_settings(
        s: &Settings,
        input_dim: usize,
        grid: usize,
        cls: bool,
        pixels: usize,
    ) -> Result<Self, NnError> {
        let out = match s.get("out") {
            Some(v @ canc_compiler::RValue::Int(_)) => {
                let o = v.as_i64().unwrap_or(0);
                usize::try_from(o)
                    .ok()
                    .filter(|o| *o > 0)
                    .ok_or_else(|| NnError::Invalid {
                        network: s.net.name.clone(),
                        key: "out".into(),
                        value: o.to_string(),
                        expected: "`pixels` or a positive integer".into(),
                    })?
            }
            _ => {
                s.choice("out", "pixels", &["pixels"])?;
                pixels
            }
        };
        let cond_dim = match s.choice("cond", "none", &["none", "sigma"])? {
            "sigma" => Some(s.int("cond_dim", Some(128))?),
            _ => None,
        };
        Ok(VitDecoderConfig {
            input_dim,
            grid,
            cls,
            dim: s.int("dim", None)?,
            depth: s.int("depth", None)?,
            heads: s.int("heads", None)?,
            mlp_ratio: s.float("mlp_ratio", 4.0, false)?,
            pos: pos_kind(s)?,
            out,
            cond_dim,
        })
    }

    /// A freshly initialised decoder (MAE's initialisation: Xavier-uniform Linear weights, zero
    /// biases, mask token and learned positions from N(0, 0.02²)). LayerNorm epsilon 1e-6.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<VitDecoder<B>, NnError> {
        let d = self.dim;
        let side = grid_side(self.grid).ok_or_else(|| {
            NnError::Shape(format!("a grid of {} positions is not square", self.grid))
        })?;
        check_heads(d, self.heads)?;
        let hidden = (d as f64 * self.mlp_ratio).round() as usize;
        Ok(VitDecoder {
            embed: xavier_linear(self.input_dim, d, device),
            mask_token: token_param(1, d, device),
            pos: PosEmbed::new(self.pos, side, d, self.cls, device)?,
            cond: self.cond_dim.map(|c| SigmaMlp {
                fc1: xavier_linear(c, d, device),
                fc2: xavier_linear(d, d, device),
                dim: c,
            }),
            blocks: (0..self.depth)
                .map(|_| Block::new(d, self.heads, hidden, LN_EPS, 0.0, device))
                .collect(),
            norm: LayerNormConfig::new(d).with_epsilon(LN_EPS).init(device),
            head: xavier_linear(d, self.out, device),
            grid: self.grid,
            cls: self.cls,
        })
    }
}

/// CAN's σ conditioning: `sigma_embedding(σ, dim)` → Linear → GELU → Linear, one vector per
/// image.
#[derive(Module, Debug)]
pub struct SigmaMlp<B: Backend> {
    /// `dim → D`.
    pub fc1: Linear<B>,
    /// `D → D`.
    pub fc2: Linear<B>,
    /// Width of the sinusoidal embedding.
    pub dim: usize,
}

impl<B: Backend> SigmaMlp<B> {
    /// `[B]` noise levels → `[B, D]`.
    pub fn forward(&self, sigma: Tensor<B, 1>) -> Tensor<B, 2> {
        let e = sigma_embedding(sigma, self.dim);
        self.fc2.forward(crate::ops::gelu(self.fc1.forward(e)))
    }
}

/// MAE decoder: Linear from the encoder width, the full grid rebuilt with a learned mask token
/// at the masked positions (a CLS token passes through first), position embeddings, optional σ
/// conditioning added to every token, pre-norm blocks, LayerNorm, a Linear head; the CLS
/// position is dropped from the output.
#[derive(Module, Debug)]
pub struct VitDecoder<B: Backend> {
    /// Input projection `e → D`.
    pub embed: Linear<B>,
    /// The mask token `[1, 1, D]`.
    pub mask_token: Param<Tensor<B, 3>>,
    /// Position embeddings `[1, cls + grid, D]`.
    pub pos: PosEmbed<B>,
    /// σ conditioning (`cond = sigma`).
    pub cond: Option<SigmaMlp<B>>,
    /// Transformer blocks.
    pub blocks: Vec<Block<B>>,
    /// LayerNorm after the blocks.
    pub norm: LayerNorm<B>,
    /// Output head `D → out`.
    pub head: Linear<B>,
    /// Patch positions of the grid.
    pub grid: usize,
    /// The input starts with a CLS token.
    pub cls: bool,
}

impl<B: Backend> VitDecoder<B> {
    /// Decodes `tokens` `[B, cls + n, e]` to `[B, grid, out]`. With `keep` `[B, n]` (the grid
    /// indices of the visible tokens, as the encoder was given them) the tokens are scattered
    /// back to their positions and mask tokens fill the rest; with `None` the tokens are the
    /// whole grid (`n = grid`). `sigma` `[B]` is the per-image noise level, required exactly when
    /// the decoder is conditioned on it.
    ///
    /// # Panics
    /// If the shapes differ from the configuration, or `sigma` is given to an unconditioned
    /// decoder or missing for a conditioned one (the plan's checks rule these out).
    pub fn forward(
        &self,
        tokens: Tensor<B, 3>,
        keep: Option<Tensor<B, 2, Int>>,
        sigma: Option<Tensor<B, 1>>,
    ) -> Tensor<B, 3> {
        let x = linear3(&self.embed, tokens);
        let [b, t, d] = x.dims();
        let c = usize::from(self.cls);
        let n = t - c;
        let g = self.grid;
        let patches = x.clone().narrow(1, c, n);
        let patches = match keep {
            Some(keep) => {
                assert_eq!(keep.dims(), [b, n], "keep must be [B, visible tokens]");
                let fill = self.mask_token.val().reshape([d]);
                place_rows(patches.reshape([b * n, d]), fill, keep, g)
            }
            None => {
                assert_eq!(n, g, "without keep the decoder needs the whole grid");
                patches
            }
        };
        let mut x = if self.cls {
            Tensor::cat(vec![x.narrow(1, 0, 1), patches], 1)
        } else {
            patches
        };
        x = add_shared(x, self.pos.value());
        match (&self.cond, sigma) {
            // Materialised over the tokens: Burn's CPU backend adds two contiguous tensors with
            // SIMD but walks a [B, 1, D] broadcast element by element.
            (Some(cond), Some(sigma)) => {
                let [_, t, _] = x.dims();
                x = x + cond.forward(sigma).reshape([b, 1, d]).repeat_dim(1, t)
            }
            (None, None) => {}
            (Some(_), None) => panic!("the decoder is conditioned on sigma but got none"),
            (None, Some(_)) => panic!("sigma given to a decoder without `cond = sigma`"),
        }
        for block in &self.blocks {
            x = block.forward(x);
        }
        let x = crate::ops::layer_norm(&self.norm, LN_EPS, x).narrow(1, c, g);
        linear3(&self.head, x)
    }
}
