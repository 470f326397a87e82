//! The pre-norm transformer block of ViT and the MAE decoder.

use super::{linear_as, linear3_as, product_as, xavier_linear};
use crate::ops;
use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, FloatDType, Tensor};

/// A pre-norm transformer block (timm's ViT `Block`):
/// `x + attn(ln1(x))`, then `x + mlp(ln2(x))`, with multi-head self-attention through one
/// `d → 3d` qkv projection (output laid out `(3, heads, d/heads)`) and a `d → h → d` GELU MLP.
/// Every Linear has a bias. LayerNorm, attention and GELU run as fused ops ([`crate::ops`]).
/// With [`Block::matmul`] set (a spec's `train.precision = bf16`), the matrix products (the four
/// Linear layers, and attention off the fused CPU path) run in that dtype on f32 weights and
/// f32 activations between them: autocast with f32 master weights.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// LayerNorm before attention.
    pub norm1: LayerNorm<B>,
    /// Query, key and value projection `d → 3d`.
    pub qkv: Linear<B>,
    /// Attention output projection `d → d`.
    pub proj: Linear<B>,
    /// LayerNorm before the MLP.
    pub norm2: LayerNorm<B>,
    /// MLP expansion `d → h`.
    pub fc1: Linear<B>,
    /// MLP contraction `h → d`.
    pub fc2: Linear<B>,
    /// Attention heads.
    pub heads: usize,
    /// Stochastic-depth rate of this block (0: off).
    pub drop_path: f64,
    /// LayerNorm epsilon of `norm1` and `norm2`.
    pub eps: f64,
    /// The dtype of the matrix products (`None`: f32); not part of the record.
    #[module(skip)]
    pub matmul: Option<FloatDType>,
}

impl<B: Backend> Block<B> {
    /// A block of width `dim` with `heads` heads (dividing `dim`), MLP width `hidden`, LayerNorm
    /// epsilon `eps` and stochastic-depth rate `drop_path`; Xavier-uniform weights, zero biases,
    /// unit LayerNorms (MAE's initialisation).
    pub fn new(
        dim: usize,
        heads: usize,
        hidden: usize,
        eps: f64,
        drop_path: f64,
        device: &B::Device,
    ) -> Self {
        let norm = || LayerNormConfig::new(dim).with_epsilon(eps).init(device);
        Block {
            norm1: norm(),
            qkv: xavier_linear(dim, 3 * dim, device),
            proj: xavier_linear(dim, dim, device),
            norm2: norm(),
            fc1: xavier_linear(dim, hidden, device),
            fc2: xavier_linear(hidden, dim, device),
            heads,
            drop_path,
            eps,
            matmul: None,
        }
    }

    /// `[B, T, d]` → `[B, T, d]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        if let (true, Some(pb), Some(b1), Some(b2)) = (
            self.bias_in_next_op(&x),
            &self.proj.bias,
            &self.fc1.bias,
            &self.fc2.bias,
        ) {
            // The same block, each Linear's bias added by the op after it.
            let [b, t, d] = x.dims();
            let a = self.heads_out(ops::layer_norm(&self.norm1, self.eps, x.clone()));
            let a = product_as(&self.proj, a.reshape([b * t, d]), self.matmul);
            let x = ops::bias_residual(x.reshape([b * t, d]), a, pb.val());
            let h = ops::layer_norm(&self.norm2, self.eps, x.clone());
            let h = ops::bias_gelu(product_as(&self.fc1, h, self.matmul), b1.val());
            let h = product_as(&self.fc2, h, self.matmul);
            return ops::bias_residual(x, h, b2.val()).reshape([b, t, d]);
        }
        let a = self.attention(ops::layer_norm(&self.norm1, self.eps, x.clone()));
        let x = x + self.drop(a);
        let [b, t, d] = x.dims();
        let h = ops::layer_norm(&self.norm2, self.eps, x.clone()).reshape([b * t, d]);
        let h = linear_as(&self.fc1, h, self.matmul);
        let h = linear_as(&self.fc2, ops::gelu(h), self.matmul);
        x + self.drop(h.reshape([b, t, d]))
    }

    /// Whether [`Block::forward`] adds the biases of `proj`, `fc1` and `fc2` in the op after
    /// each (the residual add, GELU, the residual add): where canc's GPU kernels run
    /// ([`ops::gpu_kernels`]), which do each pair in one launch, and no stochastic depth stands
    /// between the Linear and the residual add.
    fn bias_in_next_op(&self, x: &Tensor<B, 3>) -> bool {
        let dropping = self.drop_path > 0.0 && B::ad_enabled(&x.device());
        !dropping && ops::gpu_kernels::<B>()
    }

    /// Multi-head self-attention of `[B, T, d]` tokens: the packed `d → 3d` projection, the
    /// fused attention over it, the output projection.
    fn attention(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        linear3_as(&self.proj, self.heads_out(x), self.matmul)
    }

    /// The attention before its output projection: the heads' outputs, concatenated.
    fn heads_out(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let qkv = linear3_as(&self.qkv, x, self.matmul);
        match self.matmul {
            Some(dt) if !ops::fused_attention::<B>() => {
                ops::attention(qkv.cast(dt), self.heads).cast(FloatDType::F32)
            }
            _ => ops::attention(qkv, self.heads),
        }
    }

    /// Stochastic depth on a residual branch `[B, T, d]`: while training (an autodiff
    /// backend), each image's branch is zeroed with probability `drop_path` and the rest scaled by
    /// `1 / (1 − drop_path)`; identity otherwise.
    fn drop(&self, branch: Tensor<B, 3>) -> Tensor<B, 3> {
        let device = branch.device();
        if self.drop_path <= 0.0 || !B::ad_enabled(&device) {
            return branch;
        }
        let keep = 1.0 - self.drop_path;
        let [b, _, _] = branch.dims();
        let m = Tensor::<B, 3>::random([b, 1, 1], Distribution::Bernoulli(keep), &device);
        branch * m.div_scalar(keep)
    }
}
