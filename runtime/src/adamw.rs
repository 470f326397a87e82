//! AdamW a parameter tensor at a time: Burn's `AdamW` (decoupled weight decay, bias-corrected
//! moments, the same state and record), stepped through [`crate::ops::adamw_update`], which on
//! the CPU backend is one in-place pass per tensor instead of Burn's 13–15 allocating ops.

use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamWState, AdaptiveMomentumState, LearningRate, SimpleOptimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use crate::ops::{adamw_update, inplace::AdamWStep};

/// AdamW's hyper-parameters, applied to one parameter tensor at a time (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PerTensorAdamW {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    weight_decay: f32,
}

impl PerTensorAdamW {
    /// AdamW with moment decays `beta_1`, `beta_2`, `epsilon` and decoupled `weight_decay`.
    pub fn new(beta_1: f32, beta_2: f32, epsilon: f32, weight_decay: f32) -> Self {
        PerTensorAdamW {
            beta_1,
            beta_2,
            epsilon,
            weight_decay,
        }
    }

    /// This optimizer for the parameters of a module `M` (Burn's adaptor from per-tensor steps
    /// to a module's).
    pub fn init<B: AutodiffBackend, M: burn::module::AutodiffModule<B>>(
        self,
    ) -> OptimizerAdaptor<Self, M, B> {
        OptimizerAdaptor::from(self)
    }
}

impl<B: Backend> SimpleOptimizer<B> for PerTensorAdamW {
    /// Burn's AdamW state, so records (and checkpoints) are Burn's.
    type State<const D: usize> = AdamWState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let (time, moments) = match state {
            Some(s) => (
                s.momentum.time + 1,
                Some((s.momentum.moment_1, s.momentum.moment_2)),
            ),
            None => (1, None),
        };
        let hyper = (self.beta_1, self.beta_2, self.epsilon, self.weight_decay);
        let step = AdamWStep::new(hyper, lr, time);
        let (w, m1, m2) = adamw_update(tensor, grad, moments, &step);
        let state = AdamWState::new(AdaptiveMomentumState::new(time, m1, m2));
        (w, Some(state))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}
