//! The fused CPU ops (`canc_runtime::ops`): values against naive f64 formulas and against the
//! same functions written with Burn's tensor ops, gradients against finite differences and
//! against Burn's autodiff of the tensor-op versions, on the CPU backend with and without
//! autodiff. The kernels are switched on for the whole test binary (they are off by default in
//! debug builds).

use burn::backend::{Autodiff, Flex};
use burn::nn::LayerNormConfig;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use canc_runtime::nn::Block;
use canc_runtime::ops::{self, kernels, reference};

mod common;
use common::{fill, values};

type B = Flex;
type AD = Autodiff<Flex>;

/// Every test here exercises the fused kernels, also in debug builds where they are off by
/// default.
fn fused() {
    ops::set_fused(Some(true));
}

fn tensor<const D: usize, Bk: Backend>(v: &[f32], shape: [usize; D]) -> Tensor<Bk, D> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), &Default::default())
}

fn close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{what}: element {i}: {x} vs {y}"
        );
    }
}

/// Central finite differences of the scalar `f` at `x` for the coordinates `at`, compared with
/// `grad`.
fn check_fd(f: impl Fn(&[f32]) -> f32, x: &[f32], grad: &[f32], at: &[usize], what: &str) {
    let eps = 1e-2;
    for &i in at {
        let (mut up, mut down) = (x.to_vec(), x.to_vec());
        up[i] += eps;
        down[i] -= eps;
        let fd = (f(&up) - f(&down)) / (2.0 * eps);
        assert!(
            (fd - grad[i]).abs() < 1e-2 * (1.0 + fd.abs()),
            "{what}: coordinate {i}: finite difference {fd} vs gradient {}",
            grad[i]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// GELU
// ---------------------------------------------------------------------------------------------

/// `f(x)` under autodiff, and the gradient of `Σ f(x)·r` with respect to `x`.
fn value_and_grad(
    f: impl Fn(Tensor<AD, 1>) -> Tensor<AD, 1>,
    x: &[f32],
    r: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let n = x.len();
    let t = tensor::<1, AD>(x, [n]).require_grad();
    let y = f(t.clone());
    let g = (y.clone() * tensor::<1, AD>(r, [n])).sum().backward();
    (values(y), values(t.grad(&g).unwrap()))
}

#[test]
fn gelu_matches_burn_forward_and_backward() {
    fused();
    // Many elements (several rayon chunks), values over the range where GELU bends.
    let n = 40_000;
    let x = fill(n, 1, 6.0);
    let fused = values(ops::gelu(tensor::<1, B>(&x, [n])));
    let burn = values(burn::tensor::activation::gelu(tensor::<1, B>(&x, [n])));
    close(&fused, &burn, 1e-6, "gelu forward (inference)");

    let r = fill(n, 2, 1.0);
    let (y_f, g_f) = value_and_grad(ops::gelu, &x, &r);
    let (y_b, g_b) = value_and_grad(burn::tensor::activation::gelu, &x, &r);
    close(&y_f, &y_b, 1e-6, "gelu forward (autodiff)");
    close(&g_f, &g_b, 2e-6, "gelu backward");
}

#[test]
fn gelu_gradient_matches_finite_differences() {
    fused();
    let x = fill(12, 3, 3.0);
    let r = fill(12, 4, 1.0);
    let f =
        |v: &[f32]| values((ops::gelu(tensor::<2, B>(v, [3, 4])) * tensor(&r, [3, 4])).sum())[0];
    let t = tensor::<2, AD>(&x, [3, 4]).require_grad();
    let g = (ops::gelu(t.clone()) * tensor(&r, [3, 4])).sum().backward();
    let grad = values(t.grad(&g).unwrap());
    check_fd(f, &x, &grad, &(0..12).collect::<Vec<_>>(), "gelu");
}

/// The tensor-op GELU (the CUDA path) against the exact derivative `Φ(x) + x·φ(x)` worked out
/// by hand (Φ, φ from tables), and against Burn's own GELU on this backend (whose backward here
/// is exact). The tanh approximation's derivative, which Burn's default `gelu_backward` gives,
/// differs from these by 3.5e-4 at x = ±1 and 8.7e-4 at x = ±2.
#[test]
fn tensor_op_gelus_have_the_exact_gradient() {
    // The tensor-op form and the GPU path's closed-form backward step (`ops::tensor_ad`).
    type GeluOp = fn(Tensor<AD, 1>) -> Tensor<AD, 1>;
    let forms: [(&str, GeluOp); 2] = [
        ("reference gelu", reference::gelu),
        ("tensor-op gelu", ops::tensor_ad::gelu),
    ];
    for (what, gelu) in forms {
        let x = [0.0f32, 1.0, -1.0, 2.0, -2.0];
        let exact = [
            0.5,
            1.083_315_5, // Φ(1) = 0.841344746, φ(1) = 0.241970725
            -0.083_315_47,
            1.085_231_8, // Φ(2) = 0.977249868, φ(2) = 0.053990967
            -0.085_231_8,
        ];
        let t = tensor::<1, AD>(&x, [5]).require_grad();
        let y = gelu(t.clone());
        let g = y.clone().sum().backward();
        close(&values(t.grad(&g).unwrap()), &exact, 2e-6, what);
        // GELU(1) = Φ(1), GELU(2) = 2Φ(2).
        close(
            &values(y)[..4],
            &[0.0, 0.841_344_7, -0.158_655_3, 1.954_499_7],
            2e-6,
            what,
        );

        let n = 4_000;
        let x = fill(n, 5, 6.0);
        let r = fill(n, 6, 1.0);
        let (y_r, g_r) = value_and_grad(gelu, &x, &r);
        let (y_b, g_b) = value_and_grad(burn::tensor::activation::gelu, &x, &r);
        close(&y_r, &y_b, 2e-6, what);
        close(&g_r, &g_b, 4e-6, what);
    }
}

// ---------------------------------------------------------------------------------------------
// LayerNorm
// ---------------------------------------------------------------------------------------------

/// A LayerNorm of width `d` with non-trivial gamma and beta.
fn layer_norm_module<Bk: Backend>(d: usize, eps: f64) -> burn::nn::LayerNorm<Bk> {
    let mut ln = LayerNormConfig::new(d)
        .with_epsilon(eps)
        .init(&Default::default());
    ln.gamma = ln
        .gamma
        .map(|_| tensor(&fill(d, 5, 1.0), [d]).require_grad());
    ln.beta = ln
        .beta
        .map(|b| b.map(|_| tensor(&fill(d, 6, 1.0), [d]).require_grad()));
    ln
}

#[test]
fn layer_norm_matches_a_naive_reference_and_burn() {
    fused();
    let (rows, d, eps) = (300, 24, 1e-6);
    let x = fill(rows * d, 7, 2.0);
    let ln = layer_norm_module::<B>(d, eps);
    let fused = values(ops::layer_norm(&ln, eps, tensor::<2, B>(&x, [rows, d])));
    let burn = values(ln.forward(tensor::<2, B>(&x, [rows, d])));
    let (g, b) = (fill(d, 5, 1.0), fill(d, 6, 1.0));
    let naive: Vec<f32> = x
        .chunks(d)
        .flat_map(|r| {
            let m = r.iter().map(|&v| f64::from(v)).sum::<f64>() / d as f64;
            let var = r.iter().map(|&v| (f64::from(v) - m).powi(2)).sum::<f64>() / d as f64;
            r.iter()
                .enumerate()
                .map(|(i, &v)| {
                    ((f64::from(v) - m) / (var + eps).sqrt() * f64::from(g[i]) + f64::from(b[i]))
                        as f32
                })
                .collect::<Vec<_>>()
        })
        .collect();
    close(&fused, &naive, 1e-5, "layer norm vs f64");
    close(&burn, &naive, 1e-5, "burn layer norm vs f64");
}

#[test]
fn layer_norm_gradients_match_burn_and_finite_differences() {
    fused();
    let (rows, d, eps) = (5, 16, 1e-6);
    let x = fill(rows * d, 8, 2.0);
    let r = fill(rows * d, 9, 1.0);
    let ln = layer_norm_module::<AD>(d, eps);
    let run = |fused: bool| {
        let t = tensor::<3, AD>(&x, [1, rows, d]).require_grad();
        let y = if fused {
            ops::layer_norm(&ln, eps, t.clone())
        } else {
            ln.forward(t.clone())
        };
        let g = (y * tensor(&r, [1, rows, d])).sum().backward();
        (
            values(t.grad(&g).unwrap()),
            values(ln.gamma.grad(&g).unwrap()),
            values(ln.beta.as_ref().unwrap().grad(&g).unwrap()),
        )
    };
    let (dx, dg, db) = run(true);
    let (dx_b, dg_b, db_b) = run(false);
    close(&dx, &dx_b, 1e-4, "layer norm dx");
    close(&dg, &dg_b, 1e-5, "layer norm dgamma");
    close(&db, &db_b, 1e-5, "layer norm dbeta");

    let lnb = layer_norm_module::<B>(d, eps);
    let f = |v: &[f32]| {
        values(
            (ops::layer_norm(&lnb, eps, tensor::<3, B>(v, [1, rows, d]))
                * tensor(&r, [1, rows, d]))
            .sum(),
        )[0]
    };
    check_fd(f, &x, &dx, &[0, 7, 17, 40, 63, 79], "layer norm dx");
}

/// The GPU path's LayerNorm (`ops::tensor_ad`: tensor ops with a closed-form backward step), run
/// here over `Autodiff<Flex>`: the values, and the gradients of x, gamma and beta, against
/// Burn's autodiff of Burn's own LayerNorm, with finite differences for `dx`; and untracked
/// inputs give the same values.
#[test]
fn tensor_op_layer_norm_has_burns_values_and_gradients() {
    let (rows, d, eps) = (6, 16, 1e-5);
    let x = fill(2 * rows * d, 10, 2.0);
    let r = fill(2 * rows * d, 11, 1.0);
    let ln = layer_norm_module::<AD>(d, eps);
    let shape = [2, rows, d];
    let run = |own: bool| {
        let t = tensor::<3, AD>(&x, shape).require_grad();
        let y = if own {
            let beta = ln.beta.as_ref().map(|b| b.val());
            ops::tensor_ad::layer_norm(t.clone(), ln.gamma.val(), beta, eps)
        } else {
            ln.forward(t.clone())
        };
        let out = values(y.clone());
        let g = (y * tensor(&r, shape)).sum().backward();
        (
            out,
            values(t.grad(&g).unwrap()),
            values(ln.gamma.grad(&g).unwrap()),
            values(ln.beta.as_ref().unwrap().grad(&g).unwrap()),
        )
    };
    let (y, dx, dg, db) = run(true);
    let (y_b, dx_b, dg_b, db_b) = run(false);
    close(&y, &y_b, 1e-5, "tensor-op layer norm values");
    close(&dx, &dx_b, 1e-4, "tensor-op layer norm dx");
    close(&dg, &dg_b, 1e-5, "tensor-op layer norm dgamma");
    close(&db, &db_b, 1e-5, "tensor-op layer norm dbeta");

    let plain = |v: &[f32]| {
        let beta = ln.beta.as_ref().map(|b| b.val());
        ops::tensor_ad::layer_norm(tensor::<3, AD>(v, shape), ln.gamma.val(), beta, eps)
    };
    close(
        &values(plain(&x)),
        &y_b,
        1e-5,
        "untracked tensor-op layer norm",
    );
    let f = |v: &[f32]| values((plain(v) * tensor(&r, shape)).sum())[0];
    check_fd(
        f,
        &x,
        &dx,
        &[0, 9, 33, 95, 100, 191],
        "tensor-op layer norm dx",
    );
}

// ---------------------------------------------------------------------------------------------
// Attention
// ---------------------------------------------------------------------------------------------

/// Naive f64 attention of a packed qkv `[b, t, 3·h·dh]` (layout (3, h, dh)).
fn naive_attention(qkv: &[f32], b: usize, t: usize, h: usize, dh: usize) -> Vec<f32> {
    let d = h * dh;
    let at = |img: usize, i: usize, part: usize, head: usize, k: usize| {
        f64::from(qkv[(img * t + i) * 3 * d + part * d + head * dh + k])
    };
    let mut out = vec![0f32; b * t * d];
    for img in 0..b {
        for head in 0..h {
            for i in 0..t {
                let s: Vec<f64> = (0..t)
                    .map(|j| {
                        (0..dh)
                            .map(|k| at(img, i, 0, head, k) * at(img, j, 1, head, k))
                            .sum::<f64>()
                            / (dh as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
                for k in 0..dh {
                    let o: f64 = (0..t)
                        .map(|j| (s[j] - m).exp() / z * at(img, j, 2, head, k))
                        .sum();
                    out[(img * t + i) * d + head * dh + k] = o as f32;
                }
            }
        }
    }
    out
}

#[test]
fn attention_matches_a_naive_reference_and_burn() {
    fused();
    // The second shape spans more than one 4-row panel and one 2-vector column block of the
    // kernel's small matrix product, with partial vectors after full ones (19 tokens: rows
    // padded to 24; heads 20 wide).
    for (b, t, h, dh) in [(3, 7, 2, 12), (2, 19, 3, 20)] {
        let qkv = fill(b * t * 3 * h * dh, 10, 2.0);
        let naive = naive_attention(&qkv, b, t, h, dh);
        let fused = values(ops::attention(tensor::<3, B>(&qkv, [b, t, 3 * h * dh]), h));
        let burn = values(reference::attention(
            tensor::<3, B>(&qkv, [b, t, 3 * h * dh]),
            h,
        ));
        close(&fused, &naive, 1e-5, "attention vs f64");
        close(&burn, &naive, 1e-5, "burn attention vs f64");
        // The kernel's probabilities are rows of a softmax, padded with zeros.
        let shape = kernels::AttnShape { b, t, h, dh };
        let (_, probs) = kernels::attention(&qkv, shape);
        assert_eq!(shape.tp(), t.div_ceil(8) * 8);
        for row in probs.chunks(shape.tp()) {
            assert!((row[..t].iter().sum::<f32>() - 1.0).abs() < 1e-5);
            assert!(row[..t].iter().all(|p| *p > 0.0));
            assert!(row[t..].iter().all(|p| *p == 0.0));
        }
    }
}

/// An attention op under autodiff: `ops::attention` (the fused CPU op), `reference::attention`
/// (Burn's tensor ops) or `ops::tensor_ad::attention` (the GPU path's).
type AttnOp = fn(Tensor<AD, 3>, usize) -> Tensor<AD, 3>;

/// The output of attention over `qkv` `[b, t, 3·h·dh]` and the gradient of `Σ output ⊙ r`
/// with respect to `qkv`, through `op`.
fn attention_and_grad(
    qkv: &[f32],
    r: &[f32],
    [b, t, h, dh]: [usize; 4],
    op: AttnOp,
) -> (Vec<f32>, Vec<f32>) {
    let x = tensor::<3, AD>(qkv, [b, t, 3 * h * dh]).require_grad();
    let y = op(x.clone(), h);
    let g = (y.clone() * tensor(r, [b, t, h * dh])).sum().backward();
    (values(y), values(x.grad(&g).unwrap()))
}

#[test]
fn attention_gradient_matches_burn_on_a_multi_block_shape() {
    fused();
    let shape @ [b, t, h, dh] = [2, 19, 3, 20];
    let qkv = fill(b * t * 3 * h * dh, 13, 1.5);
    let r = fill(b * t * h * dh, 14, 1.0);
    let (_, g_f) = attention_and_grad(&qkv, &r, shape, ops::attention);
    let (_, g_b) = attention_and_grad(&qkv, &r, shape, reference::attention);
    close(&g_f, &g_b, 1e-4, "attention backward vs burn");
}

/// The GPU path's attention (`ops::tensor_ad`: closed-form backward in tensor ops), run over
/// `Autodiff<Flex>`: values and gradient against Burn's autodiff of its attention on two shapes,
/// the gradient against finite differences, and the same values untracked.
#[test]
fn tensor_op_attention_has_burns_values_and_gradient() {
    for (i, shape @ [b, t, h, dh]) in [[2, 5, 2, 8], [1, 19, 3, 20]].into_iter().enumerate() {
        let w = 3 * h * dh;
        let qkv = fill(b * t * w, 15 + i as u64, 1.5);
        let r = fill(b * t * h * dh, 17 + i as u64, 1.0);
        let (y, g) = attention_and_grad(&qkv, &r, shape, ops::tensor_ad::attention);
        let (y_b, g_b) = attention_and_grad(&qkv, &r, shape, reference::attention);
        close(&y, &y_b, 1e-5, "tensor-op attention values");
        close(&g, &g_b, 1e-4, "tensor-op attention gradient");
        let plain = |v: &[f32]| ops::tensor_ad::attention(tensor::<3, AD>(v, [b, t, w]), h);
        close(
            &values(plain(&qkv)),
            &y_b,
            1e-5,
            "untracked tensor-op attention",
        );
        let f = |v: &[f32]| values((plain(v) * tensor(&r, [b, t, h * dh])).sum())[0];
        let at = [0, 9, 17, 30, 41, 47, b * t * w / 2, b * t * w - 1];
        check_fd(f, &qkv, &g, &at, "tensor-op attention");
    }
}

/// Under bf16 autocast the GPU path's attention takes bf16 `qkv`: it runs there, forward and
/// backward, within bf16's precision of the f32 values.
#[test]
fn tensor_op_attention_runs_in_bf16() {
    use burn::tensor::FloatDType;
    let shape @ [b, t, h, dh] = [2, 7, 2, 8];
    let qkv = fill(b * t * 3 * h * dh, 19, 1.5);
    let r = fill(b * t * h * dh, 20, 1.0);
    let bf16: AttnOp =
        |x, h| ops::tensor_ad::attention(x.cast(FloatDType::BF16), h).cast(FloatDType::F32);
    let (y, g) = attention_and_grad(&qkv, &r, shape, bf16);
    let (y_f, g_f) = attention_and_grad(&qkv, &r, shape, reference::attention);
    close(&y, &y_f, 3e-2, "bf16 tensor-op attention values");
    close(&g, &g_f, 5e-2, "bf16 tensor-op attention gradient");
}

#[test]
fn attention_gradient_matches_burn_and_finite_differences() {
    fused();
    let (b, t, h, dh) = (2, 5, 2, 8);
    let w = 3 * h * dh;
    let qkv = fill(b * t * w, 11, 1.5);
    let r = fill(b * t * h * dh, 12, 1.0);
    let (y_f, g_f) = attention_and_grad(&qkv, &r, [b, t, h, dh], ops::attention);
    let (y_b, g_b) = attention_and_grad(&qkv, &r, [b, t, h, dh], reference::attention);
    close(&y_f, &y_b, 1e-5, "attention forward (autodiff)");
    close(&g_f, &g_b, 1e-4, "attention backward vs burn");
    let f = |v: &[f32]| {
        values((ops::attention(tensor::<3, B>(v, [b, t, w]), h) * tensor(&r, [b, t, h * dh])).sum())
            [0]
    };
    // Queries, keys and values of both heads in both images.
    let at = [
        0,
        9,
        17,
        30,
        41,
        47,
        w * t + 3,
        w * t + 20,
        w * t + 44,
        b * t * w - 1,
    ];
    check_fd(f, &qkv, &g_f, &at, "attention");
}

#[test]
fn untracked_inputs_take_the_fused_path_without_gradients() {
    fused();
    // Inputs without require_grad: the ops run, and give the inference values.
    let x = fill(2 * 3 * 12, 13, 1.0);
    let ad = values(ops::attention(tensor::<3, AD>(&x, [2, 3, 12]), 2));
    let cpu = values(ops::attention(tensor::<3, B>(&x, [2, 3, 12]), 2));
    close(&ad, &cpu, 0.0, "attention untracked");
    let ad = values(ops::gelu(tensor::<3, AD>(&x, [2, 3, 12])));
    let cpu = values(ops::gelu(tensor::<3, B>(&x, [2, 3, 12])));
    close(&ad, &cpu, 0.0, "gelu untracked");
}

#[test]
fn block_forward_and_gradient_match_the_tensor_op_path() {
    fused();
    // The block's wiring of the fused ops against the same block written with Burn's ops.
    let (b, t, d, heads, hidden) = (2, 5, 8, 2, 12);
    let block = Block::<AD>::new(d, heads, hidden, 1e-6, 0.0, &Default::default());
    let x = fill(b * t * d, 14, 1.5);
    let r = fill(b * t * d, 15, 1.0);
    let run = |fused: bool| {
        let xt = tensor::<3, AD>(&x, [b, t, d]).require_grad();
        let y = if fused {
            block.forward(xt.clone())
        } else {
            let ln = |n: &burn::nn::LayerNorm<AD>, v: Tensor<AD, 3>| {
                reference::layer_norm(v, n.gamma.val(), n.beta.as_ref().map(|p| p.val()), 1e-6)
            };
            let a = block.proj.forward(reference::attention(
                block.qkv.forward(ln(&block.norm1, xt.clone())),
                heads,
            ));
            let h = xt.clone() + a;
            let m = block.fc2.forward(burn::tensor::activation::gelu(
                block.fc1.forward(ln(&block.norm2, h.clone())),
            ));
            h + m
        };
        let g = (y.clone() * tensor(&r, [b, t, d])).sum().backward();
        (
            values(y),
            values(xt.grad(&g).unwrap()),
            values(block.qkv.weight.grad(&g).unwrap()),
            values(block.norm1.gamma.grad(&g).unwrap()),
        )
    };
    let (y, dx, dw, dg) = run(true);
    let (y_r, dx_r, dw_r, dg_r) = run(false);
    close(&y, &y_r, 1e-5, "block output");
    close(&dx, &dx_r, 1e-4, "block input gradient");
    close(&dw, &dw_r, 1e-4, "block qkv weight gradient");
    close(&dg, &dg_r, 1e-4, "block norm1 gamma gradient");
}

// ---------------------------------------------------------------------------------------------
// Linear
// ---------------------------------------------------------------------------------------------

#[test]
fn linear_by_hand() {
    fused();
    // x = [[1, 2], [3, 4]], w = [[1, 0, -1], [2, 1, 0]] ([in, out]), b = [0.5, -1, 2]:
    // x·w = [[5, 2, -1], [11, 4, -3]].
    let x = tensor::<2, B>(&[1.0, 2.0, 3.0, 4.0], [2, 2]);
    let w = tensor::<2, B>(&[1.0, 0.0, -1.0, 2.0, 1.0, 0.0], [2, 3]);
    let b = tensor::<1, B>(&[0.5, -1.0, 2.0], [3]);
    let y = values(ops::linear(x.clone(), w.clone(), Some(b)));
    assert_eq!(y, vec![5.5, 1.0, 1.0, 11.5, 3.0, -1.0]);
    assert_eq!(
        values(ops::linear(x, w, None)),
        vec![5.0, 2.0, -1.0, 11.0, 4.0, -3.0]
    );
}

/// `gemm::matmul` writes its result into memory it never zero-filled: every element must come
/// from the product. Each shape runs right after a NaN-filled buffer of the same size is freed
/// (which the allocator hands back), on row-major and transposed views, tiny, odd-sized and
/// above the parallel threshold, against an f64 product.
#[test]
fn matmul_writes_every_element_of_its_new_buffer() {
    use canc_runtime::ops::gemm::{MatRef, matmul};
    for (m, k, n) in [
        (1, 1, 1),
        (1, 7, 1),
        (3, 5, 2),
        (16, 16, 16),
        (17, 3, 29),
        (200, 192, 64),
        (300, 192, 200),
    ] {
        let a = fill(m * k, 3, 1.0);
        let b = fill(k * n, 4, 1.0);
        // a·b with a row-major, then with a given as the transpose of its k × m transpose.
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        for transposed in [false, false, true] {
            drop(std::hint::black_box(vec![f32::NAN; m * n]));
            let av = if transposed {
                MatRef::rows(&at, k, m).t()
            } else {
                MatRef::rows(&a, m, k)
            };
            let y = matmul(av, MatRef::rows(&b, k, n));
            assert_eq!(y.len(), m * n);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
                        .sum();
                    let got = y[i * n + j];
                    assert!(
                        (got as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "{m}×{k}×{n} (transposed: {transposed}) at ({i}, {j}): {got} vs {want}"
                    );
                }
            }
        }
    }
    assert!(
        matmul(MatRef::rows(&[], 2, 0), MatRef::rows(&[], 0, 3))
            .iter()
            .all(|&v| v == 0.0)
    );
}

/// Forward and all three gradients against Burn's `linear` under autodiff, with and without a
/// bias, on a small shape (one thread) and two above the parallel threshold (row bands, the
/// last one shorter; the output is never zero-filled, so a NaN-filled buffer of its size is
/// freed first for the allocator to hand back).
#[test]
fn linear_matches_burn_forward_and_backward() {
    fused();
    for (m, k, n) in [(5, 7, 3), (300, 96, 288), (333, 96, 250)] {
        let x = fill(m * k, 20, 1.0);
        let w = fill(k * n, 21, 0.5);
        let bias = fill(n, 22, 0.5);
        let r = fill(m * n, 23, 1.0);
        for with_bias in [true, false] {
            let run = |fused: bool| {
                let xt = tensor::<2, AD>(&x, [m, k]).require_grad();
                let wt = tensor::<2, AD>(&w, [k, n]).require_grad();
                let bt = tensor::<1, AD>(&bias, [n]).require_grad();
                let b = with_bias.then(|| bt.clone());
                drop(std::hint::black_box(vec![f32::NAN; m * n]));
                let y = if fused {
                    ops::linear(xt.clone(), wt.clone(), b)
                } else {
                    burn::tensor::module::linear(xt.clone(), wt.clone(), b)
                };
                let g = (y.clone() * tensor::<2, AD>(&r, [m, n])).sum().backward();
                (
                    values(y),
                    values(xt.grad(&g).unwrap()),
                    values(wt.grad(&g).unwrap()),
                    bt.grad(&g).map(values),
                )
            };
            let what = format!("linear {m}x{k}x{n} bias {with_bias}");
            let (y, dx, dw, db) = run(true);
            let (y_b, dx_b, dw_b, db_b) = run(false);
            close(&y, &y_b, 1e-5, &format!("{what}: forward"));
            close(&dx, &dx_b, 1e-5, &format!("{what}: dx"));
            close(&dw, &dw_b, 1e-4, &format!("{what}: dw"));
            assert_eq!(
                db.is_some(),
                with_bias,
                "{what}: a bias gradient iff a bias"
            );
            if let (Some(db), Some(db_b)) = (db, db_b) {
                close(&db, &db_b, 1e-4, &format!("{what}: db"));
            }
        }
    }
}

#[test]
fn linear_gradients_match_finite_differences() {
    fused();
    let (m, k, n) = (4, 6, 5);
    let x = fill(m * k, 30, 1.0);
    let w = fill(k * n, 31, 0.5);
    let bias = fill(n, 32, 0.5);
    let r = fill(m * n, 33, 1.0);
    let xt = tensor::<2, AD>(&x, [m, k]).require_grad();
    let wt = tensor::<2, AD>(&w, [k, n]).require_grad();
    let bt = tensor::<1, AD>(&bias, [n]).require_grad();
    let y = ops::linear(xt.clone(), wt.clone(), Some(bt.clone()));
    let g = (y * tensor::<2, AD>(&r, [m, n])).sum().backward();
    let (dx, dw, db) = (
        values(xt.grad(&g).unwrap()),
        values(wt.grad(&g).unwrap()),
        values(bt.grad(&g).unwrap()),
    );
    let loss = |x: &[f32], w: &[f32], b: &[f32]| {
        let y = ops::linear(
            tensor::<2, B>(x, [m, k]),
            tensor(w, [k, n]),
            Some(tensor(b, [n])),
        );
        values((y * tensor::<2, B>(&r, [m, n])).sum())[0]
    };
    check_fd(
        |v| loss(v, &w, &bias),
        &x,
        &dx,
        &[0, 5, 13, 23],
        "linear dx",
    );
    check_fd(
        |v| loss(&x, v, &bias),
        &w,
        &dw,
        &[0, 7, 19, 29],
        "linear dw",
    );
    check_fd(|v| loss(&x, &w, v), &bias, &db, &[0, 2, 4], "linear db");
}
