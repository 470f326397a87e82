//! Losses and tensor ops of `canc_runtime::loss` against naive f64 references, hand-worked cases
//! and central finite differences of autodiff's gradients.

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use canc_runtime::loss;

type F = Flex;
type A = Autodiff<Flex>;
/// `mse` or `l1`.
type PatchLoss<B> = fn(Tensor<B, 3>, Tensor<B, 3>, Option<Tensor<B, 2>>) -> Tensor<B, 1>;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Seeded LCG; values in [−1, 1) with 24 significant bits, so exact in f32.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let k = (self.0 >> 40) as f64; // 24 bits
        k / f64::from(1u32 << 23) - 1.0
    }

    fn vec(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.uniform()).collect()
    }
}

fn tensor<B: Backend, const D: usize>(data: &[f64], shape: [usize; D]) -> Tensor<B, D> {
    let v: Vec<f32> = data.iter().map(|&x| x as f32).collect();
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

fn int_tensor<B: Backend>(data: &[i64]) -> Tensor<B, 1, Int> {
    Tensor::from_data(
        TensorData::new(data.to_vec(), [data.len()]),
        &Default::default(),
    )
}

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().iter::<f64>().collect()
}

fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
    assert_eq!(t.dims(), [1], "a loss is a [1] tensor");
    values(t)[0]
}

fn assert_close(actual: f64, expected: f64, rel: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= rel * expected.abs() + 1e-6,
        "{what}: got {actual}, expected {expected}"
    );
}

fn assert_all_close(actual: &[f64], expected: &[f64], rel: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        assert_close(a, e, rel, &format!("{what}[{i}]"));
    }
}

fn rows(flat: &[f64], d: usize) -> Vec<Vec<f64>> {
    flat.chunks(d).map(<[f64]>::to_vec).collect()
}

fn dot(x: &[f64], y: &[f64]) -> f64 {
    x.iter().zip(y).map(|(a, b)| a * b).sum()
}

fn normalized(x: &[f64]) -> Vec<f64> {
    let n = dot(x, x).sqrt().max(1e-12);
    x.iter().map(|v| v / n).collect()
}

fn log_sum_exp(xs: impl Iterator<Item = f64> + Clone) -> f64 {
    let m = xs.clone().fold(f64::NEG_INFINITY, f64::max);
    m + xs.map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// Central finite differences of `f` at `x` against autodiff's gradient, for every element.
///
/// The gradient is checked element-wise: |fd − ad| ≤ rel·|ad| + rel·max|ad| / 10. The largest
/// gradient must be non-trivial so that a zero gradient cannot pass.
fn check_grad<const D: usize>(
    what: &str,
    x: &[f64],
    shape: [usize; D],
    eps: f64,
    rel: f64,
    f: impl Fn(Tensor<A, D>) -> Tensor<A, 1>,
) {
    let input = tensor::<A, D>(x, shape).require_grad();
    let out = f(input.clone());
    let grads = out.backward();
    let ad = values(input.grad(&grads).expect("gradient reaches the input"));
    assert_eq!(ad.len(), x.len());
    let scale = ad.iter().fold(0.0_f64, |m, g| m.max(g.abs()));
    assert!(scale > 1e-4, "{what}: gradient is (nearly) zero");
    let eval = |v: &[f64]| scalar(f(tensor::<A, D>(v, shape)));
    for i in 0..x.len() {
        let mut plus = x.to_vec();
        plus[i] += eps;
        let mut minus = x.to_vec();
        minus[i] -= eps;
        let fd = (eval(&plus) - eval(&minus)) / (2.0 * eps);
        assert!(
            (fd - ad[i]).abs() <= rel * ad[i].abs() + rel * scale / 10.0,
            "{what}: d/dx[{i}] autodiff {} vs finite difference {fd}",
            ad[i]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Naive f64 references
// ---------------------------------------------------------------------------------------------

/// NT-Xent mean over the 2N anchors.
fn ref_ntxent(a: &[Vec<f64>], b: &[Vec<f64>], tau: f64) -> f64 {
    let n = a.len();
    let z: Vec<Vec<f64>> = a.iter().chain(b).map(|r| normalized(r)).collect();
    let mut total = 0.0;
    for i in 0..2 * n {
        let pos = if i < n { i + n } else { i - n };
        let others = (0..2 * n)
            .filter(|&k| k != i)
            .map(|k| dot(&z[i], &z[k]) / tau);
        total += log_sum_exp(others) - dot(&z[i], &z[pos]) / tau;
    }
    total / (2 * n) as f64
}

/// Query→key cross-entropy mean (no 2τ factor).
fn ref_qk(q: &[Vec<f64>], k: &[Vec<f64>], tau: f64) -> f64 {
    let q: Vec<Vec<f64>> = q.iter().map(|r| normalized(r)).collect();
    let k: Vec<Vec<f64>> = k.iter().map(|r| normalized(r)).collect();
    let n = q.len();
    (0..n)
        .map(|i| log_sum_exp(k.iter().map(|kj| dot(&q[i], kj) / tau)) - dot(&q[i], &k[i]) / tau)
        .sum::<f64>()
        / n as f64
}

/// SupCon L_out over 2N anchors, scaled by τ/τ_base.
fn ref_supcon(a: &[Vec<f64>], b: &[Vec<f64>], labels: &[i64], tau: f64, base: f64) -> f64 {
    let n = a.len();
    let z: Vec<Vec<f64>> = a.iter().chain(b).map(|r| normalized(r)).collect();
    let lab: Vec<i64> = labels.iter().chain(labels).copied().collect();
    let mut total = 0.0;
    for i in 0..2 * n {
        let lse = log_sum_exp(
            (0..2 * n)
                .filter(|&k| k != i)
                .map(|k| dot(&z[i], &z[k]) / tau),
        );
        let pos: Vec<usize> = (0..2 * n).filter(|&p| p != i && lab[p] == lab[i]).collect();
        let mean_log_prob = pos
            .iter()
            .map(|&p| dot(&z[i], &z[p]) / tau - lse)
            .sum::<f64>()
            / pos.len() as f64;
        total -= mean_log_prob;
    }
    tau / base * total / (2 * n) as f64
}

/// Mean over selected patches of the per-patch mean of `err(pred − target)`.
fn ref_patch_loss(
    pred: &[f64],
    target: &[f64],
    select: Option<&[f64]>,
    d: usize,
    err: fn(f64) -> f64,
) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for (p, (pp, tp)) in pred.chunks(d).zip(target.chunks(d)).enumerate() {
        let e = pp.iter().zip(tp).map(|(x, y)| err(x - y)).sum::<f64>() / d as f64;
        let w = select.map_or(1.0, |s| s[p]);
        num += w * e;
        den += w;
    }
    num / den
}

// ---------------------------------------------------------------------------------------------
// InfoNCE (NT-Xent)
// ---------------------------------------------------------------------------------------------

#[test]
fn infonce_hand_worked_orthogonal() {
    // N = 2, d = 2, a = [e1, e2], b = [e2, e1], τ = 1. z = [e1, e2, e2, e1].
    // Anchor 0 (e1): positive row 2 (e2, sim 0); the other rows 1 (e2), 3 (e1) have sims 0, 1.
    // ℓ₀ = −log(e⁰ / (e⁰ + e⁰ + e¹)) = log(2 + e) = 1.5514447139; every anchor is alike.
    let a = [1.0, 0.0, 0.0, 1.0];
    let b = [0.0, 1.0, 1.0, 0.0];
    let mean = loss::infonce(tensor::<F, 2>(&a, [2, 2]), tensor(&b, [2, 2]), 1.0, false);
    assert_close(scalar(mean), 1.551_444_713_932_051, 1e-6, "mean form");
    // SimCLR's sum over the two views: 2 log(2 + e) = 3.1028894279.
    let sum = loss::infonce(tensor::<F, 2>(&a, [2, 2]), tensor(&b, [2, 2]), 1.0, true);
    assert_close(scalar(sum), 3.102_889_427_864_102, 1e-6, "sum form");
}

#[test]
fn infonce_hand_worked_scaled_inputs() {
    // Same directions as above with non-unit norms: normalisation happens inside, so the
    // loss is unchanged, log(2 + e).
    let a = [3.0, 0.0, 0.0, 0.5];
    let b = [0.0, 2.0, 7.0, 0.0];
    let l = loss::infonce(tensor::<F, 2>(&a, [2, 2]), tensor(&b, [2, 2]), 1.0, false);
    assert_close(scalar(l), 1.551_444_713_932_051, 1e-6, "scaled inputs");
}

#[test]
fn infonce_matches_reference() {
    let mut rng = Rng(1);
    for (n, d, tau) in [(4, 3, 0.1), (4, 3, 0.5), (5, 8, 0.2), (1, 3, 0.1)] {
        let a = rng.vec(n * d);
        let b = rng.vec(n * d);
        let expected = ref_ntxent(&rows(&a, d), &rows(&b, d), tau);
        let mean = loss::infonce(tensor::<F, 2>(&a, [n, d]), tensor(&b, [n, d]), tau, false);
        assert_close(
            scalar(mean),
            expected,
            1e-5,
            &format!("N={n} d={d} τ={tau}"),
        );
        let sum = loss::infonce(tensor::<F, 2>(&a, [n, d]), tensor(&b, [n, d]), tau, true);
        assert_close(scalar(sum), 2.0 * expected, 1e-5, "sum form");
    }
}

#[test]
fn infonce_known_limits() {
    let mut rng = Rng(2);
    let (n, d) = (4, 16);
    let a = rng.vec(n * d);
    // Identical views, τ small: every positive has similarity 1, every negative less, so the
    // loss vanishes.
    let same = loss::infonce(tensor::<F, 2>(&a, [n, d]), tensor(&a, [n, d]), 0.01, false);
    let same = scalar(same);
    assert!((0.0..1e-3).contains(&same), "identical views: {same}");
    // Huge τ: all logits ≈ 0, so each anchor is a uniform choice among 2N − 1 rows.
    let b = rng.vec(n * d);
    let flat = loss::infonce(tensor::<F, 2>(&a, [n, d]), tensor(&b, [n, d]), 1e4, false);
    assert_close(scalar(flat), ((2 * n - 1) as f64).ln(), 1e-3, "log(2N−1)");
}

#[test]
fn infonce_gradients() {
    let mut rng = Rng(3);
    let (n, d) = (4, 3);
    let a = rng.vec(n * d);
    let b = rng.vec(n * d);
    for (tau, eps) in [(0.5, 1e-2), (0.1, 2e-3)] {
        check_grad("infonce ∂a", &a, [n, d], eps, 1e-2, |x| {
            loss::infonce(x, tensor(&b, [n, d]), tau, false)
        });
        check_grad("infonce ∂b", &b, [n, d], eps, 1e-2, |x| {
            loss::infonce(tensor(&a, [n, d]), x, tau, true)
        });
    }
}

#[test]
fn infonce_gradient_finite_for_identical_views_small_tau() {
    let mut rng = Rng(4);
    let (n, d) = (3, 4);
    let a = rng.vec(n * d);
    let x = tensor::<A, 2>(&a, [n, d]).require_grad();
    let l = loss::infonce(x.clone(), tensor(&a, [n, d]), 0.01, false);
    let g = values(x.grad(&l.backward()).unwrap());
    assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
}

// ---------------------------------------------------------------------------------------------
// Query→key InfoNCE (MoCo v3 / CMAE)
// ---------------------------------------------------------------------------------------------

#[test]
fn infonce_qk_hand_worked() {
    // q = k = [e1, e2], τ = 1: logits = I. ℓᵢ = −log(e¹ / (e¹ + e⁰)) = log(1 + 1/e)
    // = 0.3132616875; times 2τ = 2: 0.6265233750.
    let e = [1.0, 0.0, 0.0, 1.0];
    let plain = loss::infonce_qk(tensor::<F, 2>(&e, [2, 2]), tensor(&e, [2, 2]), 1.0, false);
    assert_close(scalar(plain), 0.313_261_687_518_222_9, 1e-6, "plain");
    let scaled = loss::infonce_qk(tensor::<F, 2>(&e, [2, 2]), tensor(&e, [2, 2]), 1.0, true);
    assert_close(scalar(scaled), 0.626_523_375_036_445_7, 1e-6, "2τ");
}

#[test]
fn infonce_qk_matches_reference() {
    let mut rng = Rng(5);
    for (n, d, tau) in [(4, 3, 0.2), (6, 5, 1.0), (3, 8, 0.1)] {
        let q = rng.vec(n * d);
        let k = rng.vec(n * d);
        let expected = ref_qk(&rows(&q, d), &rows(&k, d), tau);
        let plain = loss::infonce_qk(tensor::<F, 2>(&q, [n, d]), tensor(&k, [n, d]), tau, false);
        assert_close(scalar(plain), expected, 1e-5, &format!("N={n} τ={tau}"));
        let scaled = loss::infonce_qk(tensor::<F, 2>(&q, [n, d]), tensor(&k, [n, d]), tau, true);
        assert_close(scalar(scaled), 2.0 * tau * expected, 1e-5, "2τ");
    }
}

#[test]
fn infonce_qk_gradients() {
    let mut rng = Rng(6);
    let (n, d) = (4, 3);
    let q = rng.vec(n * d);
    let k = rng.vec(n * d);
    check_grad("qk ∂q", &q, [n, d], 1e-2, 1e-2, |x| {
        loss::infonce_qk(x, tensor(&k, [n, d]), 0.5, true)
    });
    check_grad("qk ∂k", &k, [n, d], 1e-2, 1e-2, |x| {
        loss::infonce_qk(tensor(&q, [n, d]), x, 0.5, false)
    });
}

// ---------------------------------------------------------------------------------------------
// SupCon
// ---------------------------------------------------------------------------------------------

#[test]
fn supcon_hand_worked_one_class() {
    // a = b = [e1, e2], labels [0, 0], τ = 1, τ_base = 0.5. z = [e1, e2, e1, e2].
    // Anchor 0 (e1): all 3 other rows are positives, sims 0 (row 1), 1 (row 2), 0 (row 3);
    // denominator log(2 + e). Mean log-prob over positives = (0 + 1 + 0)/3 − log(2 + e), so
    // ℓ₀ = log(2 + e) − 1/3 = 1.2181113806; every anchor alike; × τ/τ_base = 2 → 2.4362227612.
    let e = [1.0, 0.0, 0.0, 1.0];
    let l = loss::supcon(
        tensor::<F, 2>(&e, [2, 2]),
        tensor(&e, [2, 2]),
        int_tensor(&[0, 0]),
        1.0,
        0.5,
    );
    assert_close(scalar(l), 2.436_222_761_197_435, 1e-6, "one class");
}

#[test]
fn supcon_hand_worked_distinct_labels() {
    // a = [e1, e2], b = [e2, e1], labels [0, 1], τ = τ_base = 1: only the other view is a
    // positive, which is NT-Xent: log(2 + e) = 1.5514447139 (see infonce_hand_worked_orthogonal).
    let l = loss::supcon(
        tensor::<F, 2>(&[1.0, 0.0, 0.0, 1.0], [2, 2]),
        tensor(&[0.0, 1.0, 1.0, 0.0], [2, 2]),
        int_tensor(&[0, 1]),
        1.0,
        1.0,
    );
    assert_close(scalar(l), 1.551_444_713_932_051, 1e-6, "distinct labels");
}

#[test]
fn supcon_matches_reference() {
    let mut rng = Rng(7);
    let cases: [(&[i64], usize, f64, f64); 3] = [
        (&[0, 1, 0, 2], 3, 0.1, 0.07),
        (&[3, 3, 3, 3, 3], 4, 0.5, 0.5),
        (&[1, 2, 1, 2, 5, 1], 3, 0.2, 0.1),
    ];
    for (labels, d, tau, base) in cases {
        let n = labels.len();
        let a = rng.vec(n * d);
        let b = rng.vec(n * d);
        let expected = ref_supcon(&rows(&a, d), &rows(&b, d), labels, tau, base);
        let l = loss::supcon(
            tensor::<F, 2>(&a, [n, d]),
            tensor(&b, [n, d]),
            int_tensor(labels),
            tau,
            base,
        );
        assert_close(scalar(l), expected, 1e-5, &format!("labels {labels:?}"));
    }
}

#[test]
fn supcon_with_distinct_labels_equals_infonce() {
    let mut rng = Rng(8);
    let (n, d, tau) = (5, 4, 0.2);
    let a = rng.vec(n * d);
    let b = rng.vec(n * d);
    let nce = scalar(loss::infonce(
        tensor::<F, 2>(&a, [n, d]),
        tensor(&b, [n, d]),
        tau,
        false,
    ));
    let sup = scalar(loss::supcon(
        tensor::<F, 2>(&a, [n, d]),
        tensor(&b, [n, d]),
        int_tensor(&[7, 3, 0, 9, 4]),
        tau,
        tau,
    ));
    assert_close(sup, nce, 1e-5, "SupCon vs InfoNCE");
    // τ_base scales linearly.
    let half = scalar(loss::supcon(
        tensor::<F, 2>(&a, [n, d]),
        tensor(&b, [n, d]),
        int_tensor(&[7, 3, 0, 9, 4]),
        tau,
        2.0 * tau,
    ));
    assert_close(half, nce / 2.0, 1e-5, "τ/τ_base");
}

#[test]
fn supcon_gradients() {
    let mut rng = Rng(9);
    let (n, d) = (4, 3);
    let a = rng.vec(n * d);
    let b = rng.vec(n * d);
    let labels = [0, 1, 0, 2];
    check_grad("supcon ∂a", &a, [n, d], 1e-2, 1e-2, |x| {
        loss::supcon(x, tensor(&b, [n, d]), int_tensor(&labels), 0.5, 0.25)
    });
    check_grad("supcon ∂b", &b, [n, d], 1e-2, 1e-2, |x| {
        loss::supcon(tensor(&a, [n, d]), x, int_tensor(&labels), 0.5, 0.5)
    });
}

// ---------------------------------------------------------------------------------------------
// Patch losses (mse, l1)
// ---------------------------------------------------------------------------------------------

/// `[2, 3, 2]` predictions and targets. pred − target per patch and its per-patch means:
/// b0: (1,2) sq 2.5 abs 1.5 | (2,3) sq 6.5 abs 2.5 | (4,4) sq 16 abs 4
/// b1: (−1,1) sq 1 abs 1   | (2,−2) sq 4 abs 2    | (−1,2) sq 2.5 abs 1.5
const PRED: [f64; 12] = [1., 2., 3., 4., 5., 6., -1., 1., 2., -2., 0., 3.];
const TARGET: [f64; 12] = [0., 0., 1., 1., 1., 2., 0., 0., 0., 0., 1., 1.];
const SELECT: [f64; 6] = [1., 0., 1., 0., 0., 1.];

#[test]
fn mse_and_l1_hand_worked() {
    let p = || tensor::<F, 3>(&PRED, [2, 3, 2]);
    let t = || tensor::<F, 3>(&TARGET, [2, 3, 2]);
    let s = || Some(tensor::<F, 2>(&SELECT, [2, 3]));
    // Selected patches b0p0, b0p2, b1p2: mse (2.5 + 16 + 2.5)/3 = 7, l1 (1.5 + 4 + 1.5)/3 = 7/3.
    assert_close(scalar(loss::mse(p(), t(), s())), 7.0, 1e-6, "mse selected");
    assert_close(
        scalar(loss::l1(p(), t(), s())),
        7.0 / 3.0,
        1e-6,
        "l1 selected",
    );
    // All six: mse 32.5/6, l1 12.5/6.
    assert_close(
        scalar(loss::mse(p(), t(), None)),
        32.5 / 6.0,
        1e-6,
        "mse all",
    );
    assert_close(scalar(loss::l1(p(), t(), None)), 12.5 / 6.0, 1e-6, "l1 all");
    // An all-ones selection is the same as None.
    let ones = Some(tensor::<F, 2>(&[1.0; 6], [2, 3]));
    assert_close(scalar(loss::mse(p(), t(), ones)), 32.5 / 6.0, 1e-6, "ones");
    // Nothing selected: 0, not NaN.
    let none = Some(tensor::<F, 2>(&[0.0; 6], [2, 3]));
    assert_eq!(scalar(loss::mse(p(), t(), none)), 0.0);
}

#[test]
fn patch_losses_zero_gradient_outside_selection() {
    for (name, f) in [
        ("mse", loss::mse::<A> as PatchLoss<A>),
        ("l1", loss::l1::<A>),
    ] {
        let pred = tensor::<A, 3>(&PRED, [2, 3, 2]).require_grad();
        let l = f(
            pred.clone(),
            tensor(&TARGET, [2, 3, 2]),
            Some(tensor(&SELECT, [2, 3])),
        );
        let g = values(pred.grad(&l.backward()).unwrap());
        for (patch, &sel) in SELECT.iter().enumerate() {
            for v in &g[2 * patch..2 * patch + 2] {
                if sel == 0.0 {
                    assert_eq!(*v, 0.0, "{name}: patch {patch} not selected");
                } else {
                    assert_ne!(*v, 0.0, "{name}: patch {patch} selected");
                }
            }
        }
        // Hand check of one entry: mse ∂/∂pred[b0,p0,1] = 2·2 / (2 values · 3 patches) = 2/3;
        // l1: sign(2) / 6 = 1/6.
        let expected = if name == "mse" { 2.0 / 3.0 } else { 1.0 / 6.0 };
        assert_close(g[1], expected, 1e-6, name);
    }
}

#[test]
fn patch_losses_match_reference() {
    let mut rng = Rng(10);
    let (b, n, d) = (3, 5, 4);
    let pred = rng.vec(b * n * d);
    let target = rng.vec(b * n * d);
    let select: Vec<f64> = (0..b * n)
        .map(|i| f64::from(u8::from(i % 3 != 1)))
        .collect();
    let sq = |x: f64| x * x;
    for (name, f, err) in [
        ("mse", loss::mse::<F> as PatchLoss<F>, sq as fn(f64) -> f64),
        ("l1", loss::l1::<F>, f64::abs),
    ] {
        let p = || tensor::<F, 3>(&pred, [b, n, d]);
        let t = || tensor::<F, 3>(&target, [b, n, d]);
        let all = ref_patch_loss(&pred, &target, None, d, err);
        assert_close(scalar(f(p(), t(), None)), all, 1e-5, name);
        let sel = ref_patch_loss(&pred, &target, Some(&select), d, err);
        let got = f(p(), t(), Some(tensor(&select, [b, n])));
        assert_close(scalar(got), sel, 1e-5, name);
    }
}

#[test]
fn patch_losses_gradients() {
    let mut rng = Rng(11);
    let (b, n, d) = (2, 3, 4);
    let pred = rng.vec(b * n * d);
    // Targets at least 0.2 away from the predictions, so l1 has no kink within ±eps.
    let target: Vec<f64> = pred
        .iter()
        .map(|p| {
            let u = rng.uniform();
            p + u.signum() * (0.2 + u.abs())
        })
        .collect();
    let select = [1.0, 0.0, 1.0, 1.0, 1.0, 0.0];
    check_grad("mse", &pred, [b, n, d], 1e-2, 1e-2, |x| {
        loss::mse(x, tensor(&target, [b, n, d]), Some(tensor(&select, [b, n])))
    });
    check_grad("mse ∂target", &target, [b, n, d], 1e-2, 1e-2, |x| {
        loss::mse(tensor(&pred, [b, n, d]), x, None)
    });
    check_grad("l1", &pred, [b, n, d], 1e-2, 1e-2, |x| {
        loss::l1(x, tensor(&target, [b, n, d]), Some(tensor(&select, [b, n])))
    });
}

// ---------------------------------------------------------------------------------------------
// Embedding losses (mse_embedding, cosine)
// ---------------------------------------------------------------------------------------------

#[test]
fn embedding_losses_hand_worked() {
    // a − b = [[1, 2], [2, 3]]: mean of squares (1 + 4 + 4 + 9)/4 = 4.5.
    let a = [1.0, 2.0, 3.0, 4.0];
    let b = [0.0, 0.0, 1.0, 1.0];
    let l = loss::mse_embedding(tensor::<F, 2>(&a, [2, 2]), tensor(&b, [2, 2]));
    assert_close(scalar(l), 4.5, 1e-6, "mse_embedding");
    // Row 0: [1,0]·[0,1] → cos 0; row 1: [1,1] vs [2,2] → cos 1. −(0 + 1)/2 = −0.5.
    let l = loss::cosine(
        tensor::<F, 2>(&[1.0, 0.0, 1.0, 1.0], [2, 2]),
        tensor(&[0.0, 1.0, 2.0, 2.0], [2, 2]),
    );
    assert_close(scalar(l), -0.5, 1e-6, "cosine");
}

#[test]
fn embedding_losses_match_reference() {
    let mut rng = Rng(12);
    let (n, d) = (4, 5);
    let a = rng.vec(n * d);
    let b = rng.vec(n * d);
    let mse = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        / (n * d) as f64;
    let got = loss::mse_embedding(tensor::<F, 2>(&a, [n, d]), tensor(&b, [n, d]));
    assert_close(scalar(got), mse, 1e-5, "mse_embedding");
    let cos = rows(&a, d)
        .iter()
        .zip(rows(&b, d))
        .map(|(x, y)| dot(&normalized(x), &normalized(&y)))
        .sum::<f64>()
        / n as f64;
    let got = loss::cosine(tensor::<F, 2>(&a, [n, d]), tensor(&b, [n, d]));
    assert_close(scalar(got), -cos, 1e-5, "cosine");
}

#[test]
fn embedding_losses_gradients() {
    let mut rng = Rng(13);
    let (n, d) = (4, 3);
    let a = rng.vec(n * d);
    let b = rng.vec(n * d);
    check_grad("mse_embedding", &a, [n, d], 1e-2, 1e-2, |x| {
        loss::mse_embedding(x, tensor(&b, [n, d]))
    });
    check_grad("cosine ∂a", &a, [n, d], 1e-2, 1e-2, |x| {
        loss::cosine(x, tensor(&b, [n, d]))
    });
    check_grad("cosine ∂b", &b, [n, d], 1e-2, 1e-2, |x| {
        loss::cosine(tensor(&a, [n, d]), x)
    });
}

// ---------------------------------------------------------------------------------------------
// Tensor ops (patchify, patch_norm, l2norm)
// ---------------------------------------------------------------------------------------------

#[test]
fn patchify_single_channel() {
    let img: Vec<f64> = (0..16).map(f64::from).collect();
    let p = loss::patchify(tensor::<F, 4>(&img, [1, 1, 4, 4]), 2);
    assert_eq!(p.dims(), [1, 4, 4]);
    let expected = [
        0., 1., 4., 5., 2., 3., 6., 7., 8., 9., 12., 13., 10., 11., 14., 15.,
    ];
    assert_eq!(values(p), expected);
}

#[test]
fn patchify_two_channels_is_p1_p2_c() {
    // Channel 0 is [[0, 1], [2, 3]], channel 1 is [[10, 11], [12, 13]]; one 2×2 patch, values
    // in (p1 p2 c) order: (0,0,c0) (0,0,c1) (0,1,c0) (0,1,c1) (1,0,·) (1,1,·).
    let img = [0., 1., 2., 3., 10., 11., 12., 13.];
    let p = loss::patchify(tensor::<F, 4>(&img, [1, 2, 2, 2]), 2);
    assert_eq!(p.dims(), [1, 1, 8]);
    assert_eq!(values(p), [0., 10., 1., 11., 2., 12., 3., 13.]);
}

#[test]
fn patchify_matches_reference() {
    let (b, c, h, w, p) = (2, 3, 4, 6, 2);
    let img: Vec<f64> = (0..b * c * h * w).map(|i| i as f64).collect();
    let (gh, gw) = (h / p, w / p);
    let mut expected = Vec::new();
    for bi in 0..b {
        for gi in 0..gh {
            for gj in 0..gw {
                for p1 in 0..p {
                    for p2 in 0..p {
                        for ci in 0..c {
                            let (y, x) = (gi * p + p1, gj * p + p2);
                            expected.push(img[((bi * c + ci) * h + y) * w + x]);
                        }
                    }
                }
            }
        }
    }
    let got = loss::patchify(tensor::<F, 4>(&img, [b, c, h, w]), p);
    assert_eq!(got.dims(), [b, gh * gw, p * p * c]);
    assert_eq!(values(got), expected);
}

#[test]
#[should_panic(expected = "must divide")]
fn patchify_rejects_indivisible_size() {
    let _ = loss::patchify(tensor::<F, 4>(&[0.0; 12], [1, 1, 3, 4]), 2);
}

#[test]
fn patch_norm_hand_worked() {
    // [1, 2, 3, 4]: mean 2.5, unbiased var (2.25 + 0.25 + 0.25 + 2.25)/3 = 5/3; with eps = 1/3,
    // var + eps = 2, so the result is [−1.5, −0.5, 0.5, 1.5]/√2.
    // [5, 5, 5, 5]: var 0 → (x − 5)/√eps = 0.
    let x = [1., 2., 3., 4., 5., 5., 5., 5.];
    let got = values(loss::patch_norm(tensor::<F, 3>(&x, [1, 2, 4]), 1.0 / 3.0));
    let r = std::f64::consts::FRAC_1_SQRT_2;
    let expected = [-1.5 * r, -0.5 * r, 0.5 * r, 1.5 * r, 0., 0., 0., 0.];
    assert_all_close(&got, &expected, 1e-6, "patch_norm");
}

#[test]
fn patch_norm_matches_reference() {
    let mut rng = Rng(14);
    let (b, n, d, eps) = (2, 3, 5, 1e-6);
    let x = rng.vec(b * n * d);
    let mut expected = Vec::new();
    for patch in x.chunks(d) {
        let mean = patch.iter().sum::<f64>() / d as f64;
        let var = patch.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (d - 1) as f64;
        expected.extend(patch.iter().map(|v| (v - mean) / (var + eps).sqrt()));
    }
    let got = values(loss::patch_norm(tensor::<F, 3>(&x, [b, n, d]), eps));
    assert_all_close(&got, &expected, 1e-5, "patch_norm");
}

#[test]
fn patch_norm_gradients() {
    let mut rng = Rng(15);
    let (b, n, d) = (2, 2, 4);
    let x = rng.vec(b * n * d);
    let w = rng.vec(b * n * d);
    // Project onto fixed random weights to get a scalar.
    check_grad("patch_norm", &x, [b, n, d], 1e-2, 1e-2, |t| {
        loss::patch_norm(t, 1e-6).mul(tensor(&w, [b, n, d])).sum()
    });
}

#[test]
fn l2norm_hand_worked_and_zero_vector() {
    // [3, 4] has norm 5 → [0.6, 0.8]; [0, 0] stays [0, 0] (norm clamped to 1e-12, no NaN).
    let got = values(loss::l2norm(tensor::<F, 2>(&[3., 4., 0., 0.], [2, 2])));
    assert_all_close(&got, &[0.6, 0.8, 0.0, 0.0], 1e-6, "l2norm");
    // Rank 3, normalised over the last dim only.
    let got = values(loss::l2norm(tensor::<F, 3>(&[0., 2., 1., 0.], [1, 2, 2])));
    assert_all_close(&got, &[0., 1., 1., 0.], 1e-6, "rank 3");
    // The gradient at a zero vector is finite.
    let x = tensor::<A, 2>(&[0., 0., 1., 2.], [2, 2]).require_grad();
    let g = values(x.grad(&loss::l2norm(x.clone()).sum().backward()).unwrap());
    assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
}

#[test]
fn l2norm_gradients() {
    let mut rng = Rng(16);
    let (n, d) = (3, 4);
    let x = rng.vec(n * d);
    let w = rng.vec(n * d);
    check_grad("l2norm", &x, [n, d], 1e-2, 1e-2, |t| {
        loss::l2norm(t).mul(tensor(&w, [n, d])).sum()
    });
}
