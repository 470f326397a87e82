//! The in-place parameter updates of the CPU backend (`canc_runtime::ops::{adamw_update,
//! ema_update}`, `canc_runtime::adamw::PerTensorAdamW`): bitwise against Burn's own AdamW and
//! against the same updates written with Burn's tensor ops, checkpoint records interchangeable
//! with Burn's, and no write through a buffer another tensor shares. The fused kernels are
//! switched on for the whole test binary (they are off by default in debug builds).

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use canc_runtime::adamw::PerTensorAdamW;
use canc_runtime::ops::{self, inplace::AdamWStep, reference};

type Cpu = Flex;
type AD = Autodiff<Flex>;

fn fused() {
    ops::set_fused(Some(true));
}

#[derive(Module, Debug)]
struct Net<B: Backend> {
    a: Linear<B>,
    b: Linear<B>,
    scale: Param<Tensor<B, 3>>,
}

fn net() -> Net<AD> {
    let d = Default::default();
    let mut n = Net::<AD> {
        a: LinearConfig::new(48, 700).init(&d),
        b: LinearConfig::new(700, 3).init(&d),
        scale: Param::from_tensor(Tensor::ones([2, 3, 4], &d)),
    };
    // Burn initialises biases to zero: give them values so that every parameter moves.
    n.a.bias = Some(Param::from_tensor(tensor(fill(700, 77), [700])));
    // Burn initialises parameters lazily, separately in each clone: initialise them now.
    weights(&n);
    n
}

/// Deterministic pseudo-random values in [-1, 1).
fn fill(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn tensor<const D: usize, Bk: Backend>(v: Vec<f32>, shape: [usize; D]) -> Tensor<Bk, D> {
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

/// Gradients for every parameter of `n` at step `k`: fixed pseudo-random values (not a loss's,
/// whose parallel reductions need not be bitwise repeatable), a few of them tiny so that `ε`
/// matters.
fn grads(n: &Net<AD>, k: u64) -> GradientsParams {
    let mut g = GradientsParams::new();
    let v = |len: usize, i: u64| {
        let mut v = fill(len, 100 * k + i);
        v.iter_mut().step_by(7).for_each(|x| *x *= 1e-8);
        v
    };
    g.register::<Cpu, 2>(n.a.weight.id, tensor(v(48 * 700, 1), [48, 700]));
    if let Some(b) = &n.a.bias {
        g.register::<Cpu, 1>(b.id, tensor(v(700, 2), [700]));
    }
    g.register::<Cpu, 2>(n.b.weight.id, tensor(v(700 * 3, 3), [700, 3]));
    g.register::<Cpu, 3>(n.scale.id, tensor(v(24, 4), [2, 3, 4]));
    g
}

fn weights(n: &Net<AD>) -> Vec<Vec<f32>> {
    let v = |t: Tensor<AD, 1>| t.into_data().to_vec::<f32>().unwrap();
    vec![
        v(n.a.weight.val().flatten(0, 1)),
        v(n.a.bias.as_ref().map(|b| b.val()).unwrap()),
        v(n.b.weight.val().flatten(0, 1)),
        v(n.scale.val().flatten(0, 2)),
    ]
}

/// Panics at the first weight of `a` that is not bitwise `b`'s.
fn same(a: &[Vec<f32>], b: &[Vec<f32>], what: &str) {
    for (k, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.len(), y.len(), "{what}: tensor {k}: lengths");
        if let Some(i) = (0..x.len()).find(|&i| x[i].to_bits() != y[i].to_bits()) {
            panic!("{what}: tensor {k}, element {i}: {} vs {}", x[i], y[i]);
        }
    }
}

fn burn_adamw(wd: f32) -> impl Optimizer<Net<AD>, AD> {
    AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.95)
        .with_epsilon(1e-8)
        .with_weight_decay(wd)
        .init::<AD, Net<AD>>()
}

fn ours(wd: f32) -> impl Optimizer<Net<AD>, AD> {
    PerTensorAdamW::new(0.9, 0.95, 1e-8, wd).init::<AD, Net<AD>>()
}

#[test]
fn per_tensor_adamw_is_burns_adamw_bit_for_bit() {
    fused();
    for wd in [0.05, 0.0] {
        let (mut burn, mut canc) = (burn_adamw(wd), ours(wd));
        let mut a = net();
        let mut b = a.clone();
        let start = weights(&a);
        for k in 0..6 {
            let lr = 1e-2 * (1.0 + k as f64);
            a = burn.step(lr, a.clone(), grads(&a, k));
            b = canc.step(lr, b.clone(), grads(&b, k));
            same(
                &weights(&a),
                &weights(&b),
                &format!("weight decay {wd}, step {k}"),
            );
        }
        for (k, (moved, before)) in weights(&a).iter().zip(&start).enumerate() {
            assert!(
                moved.iter().zip(before).any(|(x, y)| x != y),
                "tensor {k} stayed"
            );
        }
    }
}

#[test]
fn a_record_of_burns_adamw_resumes_in_ours_and_back() {
    fused();
    type Rec = BinBytesRecorder<FullPrecisionSettings>;
    let (mut burn, mut canc) = (burn_adamw(0.05), ours(0.05));
    let mut a = net();
    let mut c = a.clone();
    for k in 0..3 {
        a = burn.step(1e-2, a.clone(), grads(&a, k));
        c = canc.step(1e-2, c.clone(), grads(&c, k));
    }
    same(&weights(&a), &weights(&c), "3 steps");
    // Burn's record as checkpoint bytes, read back as ours; and ours read back as Burn's.
    let bytes = Recorder::<AD>::record(&Rec::default(), burn.to_record(), ()).unwrap();
    let mut from_burn = ours(0.05)
        .load_record(Recorder::<AD>::load(&Rec::default(), bytes, &Default::default()).unwrap());
    let bytes = Recorder::<AD>::record(&Rec::default(), canc.to_record(), ()).unwrap();
    let mut from_ours = burn_adamw(0.05)
        .load_record(Recorder::<AD>::load(&Rec::default(), bytes, &Default::default()).unwrap());
    let (mut b, mut d) = (a.clone(), c.clone());
    for k in 3..5 {
        a = burn.step(1e-2, a.clone(), grads(&a, k));
        b = from_burn.step(1e-2, b.clone(), grads(&b, k));
        c = canc.step(1e-2, c.clone(), grads(&c, k));
        d = from_ours.step(1e-2, d.clone(), grads(&d, k));
    }
    same(&weights(&a), &weights(&b), "Burn's record resumed in ours");
    same(&weights(&c), &weights(&d), "our record resumed in Burn's");
    same(&weights(&a), &weights(&c), "5 steps");
}

fn values<const D: usize>(t: Tensor<Cpu, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

#[test]
fn adamw_update_matches_the_tensor_ops_on_large_and_strided_tensors() {
    fused();
    let (r, c) = (91, 1200); // more elements than one rayon chunk
    let n = r * c;
    let t = |seed| tensor::<2, Cpu>(fill(n, seed), [r, c]);
    let m2 = || tensor::<2, Cpu>(fill(n, 9).into_iter().map(f32::abs).collect(), [r, c]);
    for (time, wd) in [(1, 0.05), (7, 0.05), (7, 0.0)] {
        let s = AdamWStep::new((0.9, 0.999, 1e-8, wd), 3e-3, time);
        let moments = || (time > 1).then(|| (t(3), m2()));
        let (w, a, b) = ops::adamw_update(t(1), t(2), moments(), &s);
        let (rw, ra, rb) = reference::adamw(t(1), t(2), moments(), &s);
        assert_eq!(
            values(w),
            values(rw.clone()),
            "weights, step {time}, decay {wd}"
        );
        assert_eq!(values(a), values(ra), "first moment, step {time}");
        assert_eq!(values(b), values(rb), "second moment, step {time}");
        // Transposed views (not contiguous) give the same values, transposed.
        let tt = |seed| t(seed).transpose();
        let mt = || (time > 1).then(|| (t(3).transpose(), m2().transpose()));
        let (w, _, _) = ops::adamw_update(tt(1), tt(2), mt(), &s);
        assert_eq!(values(w), values(rw.transpose()), "strided, step {time}");
    }
}

#[test]
fn updates_never_write_through_a_shared_buffer() {
    fused();
    let n = 3000;
    let p = tensor::<1, Cpu>(fill(n, 1), [n]);
    let (m1, m2) = (
        tensor::<1, Cpu>(fill(n, 2), [n]),
        tensor::<1, Cpu>(vec![0.5; n], [n]),
    );
    let kept = (values(p.clone()), values(m1.clone()), values(m2.clone()));
    let s = AdamWStep::new((0.9, 0.999, 1e-8, 0.1), 1e-2, 4);
    let (w, _, _) = ops::adamw_update(
        p.clone(),
        tensor(fill(n, 3), [n]),
        Some((m1.clone(), m2.clone())),
        &s,
    );
    assert_ne!(values(w), kept.0, "the update moved nothing");
    assert_eq!(
        (values(p), values(m1), values(m2)),
        kept,
        "a shared buffer was rewritten"
    );
    // A teacher that shares its buffers with the source (as one made by cloning it does).
    let src = tensor::<1, Cpu>(fill(n, 4), [n]);
    let teacher = src.clone().add_scalar(0.0);
    let alias = teacher.clone();
    let before = values(alias.clone());
    let moved = ops::ema_update(teacher, src, 0.9);
    assert_ne!(values(moved), before);
    assert_eq!(
        values(alias),
        before,
        "the EMA wrote through a shared buffer"
    );
}

#[test]
fn ema_update_is_burns_three_ops_bit_for_bit() {
    fused();
    let (r, c) = (37, 1500);
    let t = || tensor::<2, Cpu>(fill(r * c, 5), [r, c]);
    let s = || tensor::<1, Cpu>(fill(r * c, 6), [r * c]);
    for m in [0.996, 0.5, 1.0] {
        let ours = values(ops::ema_update(t(), s(), m));
        assert_eq!(ours, values(reference::ema(t(), s(), m)), "momentum {m}");
    }
    // By hand: 0.75·2 + 0.25·6 = 3.
    let one = ops::ema_update(
        tensor::<1, Cpu>(vec![2.0; 5], [5]),
        tensor(vec![6.0; 5], [5]),
        0.75,
    );
    assert_eq!(values(one), vec![3.0; 5]);
}
