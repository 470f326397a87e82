//! The ViT encoder; masked patches are dropped before the blocks (MAE).

use super::pos::{PosEmbed, PosKind};
use super::{Block, NnError, Settings, linear3, token_param, xavier_linear};
use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::module::linear;
use burn::tensor::{Int, Tensor};

/// The settings of a [`Vit`] (`network: vit` in the reference).
#[derive(Debug, Clone, PartialEq)]
pub struct VitConfig {
    /// Image side in pixels.
    pub image: usize,
    /// Image channels.
    pub channels: usize,
    /// Patch side in pixels (divides `image`).
    pub patch: usize,
    /// Width `d`.
    pub dim: usize,
    /// Transformer blocks.
    pub depth: usize,
    /// Attention heads (divide `dim`).
    pub heads: usize,
    /// MLP hidden width / `dim` (the width is `round(dim · mlp_ratio)`).
    pub mlp_ratio: f64,
    /// A CLS token leads the sequence.
    pub cls: bool,
    /// Position embedding.
    pub pos: PosKind,
    /// LayerNorm after the last block.
    pub final_norm: bool,
    /// LayerNorm epsilon.
    pub ln_eps: f64,
    /// Stochastic-depth rate of the last block (linear from 0 over the blocks).
    pub drop_path: f64,
    /// The patch embedding gets no gradient (MoCo v3).
    pub freeze_patch_embed: bool,
}

impl VitConfig {
    /// A config with the reference's defaults for the optional settings.
    pub fn new(
        image: usize,
        channels: usize,
        patch: usize,
        dim: usize,
        depth: usize,
        heads: usize,
    ) -> Self {
        VitConfig {
            image,
            channels,
            patch,
            dim,
            depth,
            heads,
            mlp_ratio: 4.0,
            cls: true,
            pos: PosKind::SinCos,
            final_norm: true,
            ln_eps: 1e-6,
            drop_path: 0.0,
            freeze_patch_embed: false,
        }
    }

    /// The config of a plan's `vit` network called on `[B, channels, image, image]`.
    pub(crate) fn from_settings(
        s: &Settings,
        channels: usize,
        image: usize,
    ) -> Result<Self, NnError> {
        for (key, v) in [("image", image), ("channels", channels)] {
            if let Some(set) = s.get(key).and_then(|r| r.as_i64())
                && set != v as i64
            {
                return Err(NnError::Shape(format!(
                    "network `{}`: `{key} = {set}` but it is called on {v}",
                    s.net.name
                )));
            }
        }
        let drop_path = s.float("drop_path", 0.0, true)?;
        if drop_path >= 1.0 {
            return Err(NnError::Invalid {
                network: s.net.name.clone(),
                key: "drop_path".into(),
                value: drop_path.to_string(),
                expected: "a number in [0, 1)".into(),
            });
        }
        Ok(VitConfig {
            image,
            channels,
            patch: s.int("patch", None)?,
            dim: s.int("dim", None)?,
            depth: s.int("depth", None)?,
            heads: s.int("heads", None)?,
            mlp_ratio: s.float("mlp_ratio", 4.0, false)?,
            cls: s.flag("cls", true)?,
            pos: pos_kind(s)?,
            final_norm: s.flag("final_norm", true)?,
            ln_eps: s.float("ln_eps", 1e-6, false)?,
            drop_path,
            freeze_patch_embed: s.flag("freeze_patch_embed", false)?,
        })
    }

    /// Patch positions per side: `image / patch`.
    pub fn side(&self) -> usize {
        self.image / self.patch.max(1)
    }

    /// A freshly initialised encoder (MAE's initialisation: Xavier-uniform Linear weights and
    /// patch embedding, zero biases, CLS token and learned positions from N(0, 0.02²)).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<Vit<B>, NnError> {
        let d = self.dim;
        if self.patch == 0 || !self.image.is_multiple_of(self.patch) {
            return Err(NnError::Shape(format!(
                "patch {} does not divide the image side {}",
                self.patch, self.image
            )));
        }
        check_heads(d, self.heads)?;
        let side = self.side();
        let mut patch_embed = xavier_linear(self.patch * self.patch * self.channels, d, device);
        if self.freeze_patch_embed {
            patch_embed = patch_embed.no_grad();
        }
        let hidden = (d as f64 * self.mlp_ratio).round() as usize;
        let blocks = (0..self.depth)
            .map(|i| {
                // timm: drop-path rates rise linearly from 0 to `drop_path` over the blocks.
                let rate = if self.depth > 1 {
                    self.drop_path * i as f64 / (self.depth - 1) as f64
                } else {
                    self.drop_path
                };
                Block::new(d, self.heads, hidden, self.ln_eps, rate, device)
            })
            .collect();
        Ok(Vit {
            patch_embed,
            cls_token: self.cls.then(|| token_param(1, d, device)),
            pos: PosEmbed::new(self.pos, side, d, self.cls, device)?,
            blocks,
            norm: self.final_norm.then(|| {
                LayerNormConfig::new(d)
                    .with_epsilon(self.ln_eps)
                    .init(device)
            }),
            patch: self.patch,
            side,
            freeze_patch_embed: self.freeze_patch_embed,
            ln_eps: self.ln_eps,
        })
    }
}

/// Errors unless `heads` divides `dim`.
pub(crate) fn check_heads(dim: usize, heads: usize) -> Result<(), NnError> {
    if heads == 0 || !dim.is_multiple_of(heads) {
        return Err(NnError::Shape(format!(
            "{heads} heads do not divide the width {dim}"
        )));
    }
    Ok(())
}

/// The `pos` setting.
pub(crate) fn pos_kind(s: &Settings) -> Result<PosKind, NnError> {
    Ok(match s.choice("pos", "sincos", &["sincos", "learned"])? {
        "learned" => PosKind::Learned,
        _ => PosKind::SinCos,
    })
}

/// ViT encoder: patch embedding (a Linear on `(p1 p2 c)`-ordered patches, equivalent to a
/// stride-`p` Conv2d), position embeddings, optional CLS token, pre-norm blocks, optional final
/// LayerNorm. Masked patches are dropped after the position embeddings and before the blocks.
#[derive(Module, Debug)]
pub struct Vit<B: Backend> {
    /// Patch embedding `p·p·C → d`.
    pub patch_embed: Linear<B>,
    /// The CLS token `[1, 1, d]`, if the sequence has one.
    pub cls_token: Option<Param<Tensor<B, 3>>>,
    /// Position embeddings `[1, cls + grid, d]` (the CLS row is zeros for sin-cos).
    pub pos: PosEmbed<B>,
    /// Transformer blocks.
    pub blocks: Vec<Block<B>>,
    /// Final LayerNorm.
    pub norm: Option<LayerNorm<B>>,
    /// Patch side in pixels.
    pub patch: usize,
    /// Patch positions per side.
    pub side: usize,
    /// The patch embedding is detached in the forward pass.
    pub freeze_patch_embed: bool,
    /// LayerNorm epsilon of the final norm.
    pub ln_eps: f64,
}

impl<B: Backend> Vit<B> {
    /// Patch positions of the grid.
    pub fn grid(&self) -> usize {
        self.side * self.side
    }

    /// Width `d`.
    pub fn dim(&self) -> usize {
        self.patch_embed.weight.dims()[1]
    }

    /// Whether a CLS token leads the output.
    pub fn has_cls(&self) -> bool {
        self.cls_token.is_some()
    }

    /// Encodes `images` `[B, C, H, W]` to `[B, cls + n, d]`. `keep` `[B, n]` holds the grid
    /// indices of the visible patches of each image (ascending, as [`super::mask`] draws them);
    /// the others are dropped before the blocks. `None` keeps the whole grid.
    ///
    /// # Panics
    /// If the image shape or `keep`'s batch differs from the configuration (the plan's checks
    /// rule this out).
    pub fn forward(&self, images: Tensor<B, 4>, keep: Option<Tensor<B, 2, Int>>) -> Tensor<B, 3> {
        let [b, _, _, _] = images.dims();
        let d = self.dim();
        let patches = patchify(images, self.patch);
        let [_, g, pd] = patches.dims();
        assert_eq!(g, self.grid(), "image does not match the encoder's grid");
        let x = if self.freeze_patch_embed {
            let w = self.patch_embed.weight.val().detach();
            let bias = self.patch_embed.bias.as_ref().map(|p| p.val().detach());
            linear(patches.reshape([b * g, pd]), w, bias).reshape([b, g, d])
        } else {
            linear3(&self.patch_embed, patches)
        };
        let pos = self.pos.value();
        let c = usize::from(self.has_cls());
        let x = super::add_shared(x, pos.clone().narrow(1, c, g));
        let mut x = match keep {
            Some(keep) => {
                let [kb, n] = keep.dims();
                assert_eq!(kb, b, "keep indices for {kb} images, batch has {b}");
                crate::ops::select_rows(x.reshape([b * g, d]), super::flat_rows(keep, g))
                    .reshape([b, n, d])
            }
            None => x,
        };
        if let Some(cls) = &self.cls_token {
            let cls = (cls.val() + pos.narrow(1, 0, 1)).expand([b, 1, d]);
            x = Tensor::cat(vec![cls, x], 1);
        }
        for block in &self.blocks {
            x = block.forward(x);
        }
        match &self.norm {
            Some(norm) => crate::ops::layer_norm(norm, self.ln_eps, x),
            None => x,
        }
    }
}

/// Re-exported: the encoder embeds exactly the patches the reconstruction losses compare.
pub use crate::loss::patchify;
