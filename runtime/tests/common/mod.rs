//! Helpers shared by the runtime's test binaries (each uses some of them).
#![allow(dead_code)]

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// The values of `t`, as f32.
pub fn values<const D: usize, Bk: Backend>(t: Tensor<Bk, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// Deterministic pseudo-random values in [0, 1) (a 64-bit LCG seeded by `seed`, independent of
/// the crate's RNG).
pub fn uniform(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

/// Deterministic pseudo-random values in [-scale, scale) ([`uniform`]'s, spread).
pub fn fill(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    uniform(n, seed)
        .into_iter()
        .map(|u| (u * 2.0 - 1.0) * scale)
        .collect()
}

/// The plan of `specs/{spec}.canspec` with the `key=value` settings `sets`; a spec that does not
/// compile fails the test.
pub fn plan(spec: &str, sets: &[&str]) -> canc_compiler::Plan {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let res = canc_compiler::resolve_path(format!("../specs/{spec}.canspec").as_ref(), &sets);
    assert!(!res.has_errors(), "{spec} does not compile");
    res.plans[0].clone()
}

/// A small plan of `spec`: 32 images, batch 16 (2 steps per epoch), 3 epochs, a 1-block encoder
/// of width 32, 2 warm-up steps.
pub fn small(spec: &str) -> canc_compiler::Plan {
    plan(
        spec,
        &[
            "data.limit=32",
            "train.batch=16",
            "train.epochs=3",
            "network.encoder.dim=32",
            "network.encoder.depth=1",
            "network.encoder.heads=2",
            "schedule.warmup=2 steps",
        ],
    )
}

/// Every float parameter, flattened, in visiting order.
pub struct Flat(pub Vec<f32>);

impl<B: Backend> ModuleVisitor<B> for Flat {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
        let v = p.val().into_data().convert::<f32>();
        self.0
            .extend(v.as_slice::<f32>().expect("f32").iter().copied());
    }
}

/// Every float parameter of `m`, flattened, in visiting order.
pub fn flat<B: Backend, M: Module<B>>(m: &M) -> Vec<f32> {
    let mut f = Flat(Vec::new());
    m.visit(&mut f);
    f.0
}
