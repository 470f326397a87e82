//! The CPU kernels of the fused ops, on plain `f32` slices: GELU, LayerNorm and multi-head
//! self-attention, forward and backward.
//!
//! Each kernel splits its rows over rayon's pool and runs every chunk through
//! [`pulp::Arch::dispatch`], so the loops (written to auto-vectorise: independent lanes, no
//! branches, no libm calls) are compiled for AVX2+FMA or AVX-512 when the CPU has them, without
//! `unsafe` and without `-C target-cpu`.

use rayon::prelude::*;

/// Elements per rayon task of an elementwise kernel.
const CHUNK: usize = 1 << 14;

/// Runs the `#[inline(always)]` kernel function `$kernel` on `$args` (of the one-lifetime
/// type `$ty`) compiled for the best instruction set the CPU has: the call is written inside
/// pulp's `WithSimd::with_simd`, so it is inlined into pulp's `#[target_feature]` entry points
/// with every `#[inline(always)]` helper below it. (A closure or function pointer passed
/// through a generic `FnOnce` is not reliably inlined there and then runs as baseline SSE2.)
macro_rules! simd {
    ($kernel:ident($ty:ident) -> $out:ty, $args:expr) => {{
        struct Run<'a>($ty<'a>);
        impl pulp::WithSimd for Run<'_> {
            type Output = $out;
            #[inline(always)]
            fn with_simd<S: pulp::Simd>(self, _: S) -> $out {
                $kernel(self.0)
            }
        }
        pulp::Arch::new().dispatch(Run($args))
    }};
}

/// `eˣ` for every `f32` input, branch-free so that loops over it vectorise: `x` is clamped to
/// `[−87.3, 88.7]` (so `eˣ` for `x < −87.3` is about 1.2·10⁻³⁸, not 0), split as `n·ln 2 + r`
/// with `|r| ≤ ln 2 / 2`, and `eʳ` is a degree-7 Taylor polynomial (relative error below 2·10⁻⁷).
/// `n` is rounded with the `1.5·2²³` trick and `2ⁿ` built from its bits, so no float-to-int
/// conversion (which LLVM scalarises for `as i32`'s saturation) is needed.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer in the low bits
    let x = x.clamp(-87.3, 88.7);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r / 5040.0))))));
    // The low bits of `t` hold n (two's complement, offset by ROUND's bits 0x4B40_0000).
    let two_n = t.to_bits().wrapping_sub(0x4B40_0000).wrapping_add(127) << 23;
    p * f32::from_bits(two_n)
}

/// `(Φ(x), φ(x))`: the standard normal CDF and density. `Φ` from Abramowitz & Stegun 7.1.26
/// (absolute error of `erf` below 1.5·10⁻⁷), written as `erfc(|x|/√2)` in the lower tail so
/// that `x·Φ(x)` keeps its relative accuracy for negative `x`; one `exp` serves both.
#[inline(always)]
fn normal_cdf_pdf(x: f32) -> (f32, f32) {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152,
        1.061_405_4,
    ];
    const INV_SQRT2: f32 = std::f32::consts::FRAC_1_SQRT_2;
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let e = exp(-0.5 * x * x);
    let z = x.abs() * INV_SQRT2;
    let t = 1.0 / (1.0 + P * z);
    let erfc = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4])))) * e;
    let cdf = if x >= 0.0 {
        1.0 - 0.5 * erfc
    } else {
        0.5 * erfc
    };
    (cdf, e * INV_SQRT_2PI)
}

/// GELU (exact, erf form) of every element: `x·Φ(x)`.
pub fn gelu(x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|args| simd!(gelu_chunk(GeluArgs) -> (), args));
    y
}

/// One chunk of [`gelu`]: output, input.
type GeluArgs<'a> = (&'a mut [f32], &'a [f32]);

#[inline(always)]
fn gelu_chunk((y, x): GeluArgs) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = x * normal_cdf_pdf(x).0;
    }
}

/// The gradient of [`gelu`] at `x` times `grad`: `grad·(Φ(x) + x·φ(x))`.
pub fn gelu_backward(x: &[f32], grad: &[f32]) -> Vec<f32> {
    assert_eq!(
        x.len(),
        grad.len(),
        "gelu_backward: input and gradient differ"
    );
    let mut out = vec![0.0; x.len()];
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(grad.par_chunks(CHUNK)))
        .for_each(|args| simd!(gelu_backward_chunk(GeluBackArgs) -> (), args));
    out
}

/// One chunk of [`gelu_backward`]: output, (input, gradient).
type GeluBackArgs<'a> = (&'a mut [f32], (&'a [f32], &'a [f32]));

#[inline(always)]
fn gelu_backward_chunk((o, (x, g)): GeluBackArgs) {
    for ((o, &x), &g) in o.iter_mut().zip(x).zip(g) {
        let (cdf, pdf) = normal_cdf_pdf(x);
        *o = g * (cdf + x * pdf);
    }
}

/// Sum of a slice with eight independent accumulators (vectorises; the order of additions is
/// fixed, so results are deterministic).
#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    let (chunks, tail) = x.as_chunks::<8>();
    let mut acc = [0f32; 8];
    for c in chunks {
        for l in 0..8 {
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

/// Maximum of a non-empty slice with eight independent lanes.
#[inline(always)]
fn max(x: &[f32]) -> f32 {
    let (chunks, tail) = x.as_chunks::<8>();
    let mut acc = [f32::NEG_INFINITY; 8];
    for c in chunks {
        for l in 0..8 {
            acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
        }
    }
    let m = tail.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    acc.iter().fold(m, |a, &b| a.max(b))
}

/// Dot product with eight independent accumulators.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (ca, ta) = a[..n].as_chunks::<8>();
    let (cb, tb) = b[..n].as_chunks::<8>();
    let mut acc = [0f32; 8];
    for (x, y) in ca.iter().zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ta.iter().zip(tb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// `y += a·x`, eight lanes at a time (LLVM would otherwise unroll to 32 lanes and run short
/// rows such as a 25-token attention row entirely in its scalar remainder loop).
#[inline(always)]
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    let n = y.len().min(x.len());
    let (cy, ty) = y[..n].as_chunks_mut::<8>();
    let (cx, tx) = x[..n].as_chunks::<8>();
    for (y8, x8) in cy.iter_mut().zip(cx) {
        for l in 0..8 {
            y8[l] += a * x8[l];
        }
    }
    for (y, &x) in ty.iter_mut().zip(tx) {
        *y += a * x;
    }
}

/// Rows per rayon task for row-wise kernels of rows of length `d`.
fn rows_per_task(rows: usize, d: usize) -> usize {
    (CHUNK / d.max(1)).clamp(1, rows.max(1))
}

/// LayerNorm of the rows (length `d`) of `x`: `(x − mean)/√(var + eps)·gamma + beta`, with the
/// biased variance. Returns the output and, per row, the mean and `1/√(var + eps)` that
/// [`layer_norm_backward`] needs.
pub fn layer_norm(
    x: &[f32],
    gamma: &[f32],
    beta: Option<&[f32]>,
    d: usize,
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(
        gamma.len(),
        d,
        "layer_norm: gamma length differs from the row length"
    );
    assert!(
        beta.is_none_or(|b| b.len() == d),
        "layer_norm: beta length differs"
    );
    let rows = x.len() / d;
    let mut y = vec![0.0; x.len()];
    let mut mean = vec![0.0; rows];
    let mut rstd = vec![0.0; rows];
    let r = rows_per_task(rows, d);
    y.par_chunks_mut(r * d)
        .zip(x.par_chunks(r * d))
        .zip(mean.par_chunks_mut(r).zip(rstd.par_chunks_mut(r)))
        .for_each(|((y, x), (mean, rstd))| {
            simd!(layer_norm_rows(LnRows) -> (), (y, x, mean, rstd, gamma, beta, d, eps));
        });
    (y, mean, rstd)
}

/// The rows of one [`layer_norm`] task.
type LnRows<'a> = (
    &'a mut [f32],
    &'a [f32],
    &'a mut [f32],
    &'a mut [f32],
    &'a [f32],
    Option<&'a [f32]>,
    usize,
    f32,
);

#[inline(always)]
fn layer_norm_rows((y, x, mean, rstd, gamma, beta, d, eps): LnRows) {
    for (((y, x), m), s) in y
        .chunks_exact_mut(d)
        .zip(x.chunks_exact(d))
        .zip(mean.iter_mut())
        .zip(rstd.iter_mut())
    {
        let mu = sum(x) / d as f32;
        let mut acc = [0f32; 8];
        let mut c = x.chunks_exact(8);
        for v in &mut c {
            for l in 0..8 {
                let t = v[l] - mu;
                acc[l] += t * t;
            }
        }
        let tail: f32 = c.remainder().iter().map(|v| (v - mu) * (v - mu)).sum();
        let var = (acc.iter().sum::<f32>() + tail) / d as f32;
        let inv = 1.0 / (var + eps).sqrt();
        match beta {
            Some(beta) => {
                for (((y, &x), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
                    *y = (x - mu) * inv * g + b;
                }
            }
            None => {
                for ((y, &x), &g) in y.iter_mut().zip(x).zip(gamma) {
                    *y = (x - mu) * inv * g;
                }
            }
        }
        *m = mu;
        *s = inv;
    }
}

/// The gradients of [`layer_norm`] given the output gradient `dy`: `(dx, dgamma, dbeta)`.
/// With `x̂ = (x − mean)·rstd` and `g = dy·gamma`:
/// `dx = rstd·(g − mean(g) − x̂·mean(g·x̂))`, `dgamma = Σ_rows dy·x̂`, `dbeta = Σ_rows dy`.
pub fn layer_norm_backward(
    x: &[f32],
    mean: &[f32],
    rstd: &[f32],
    gamma: &[f32],
    dy: &[f32],
    d: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(
        x.len(),
        dy.len(),
        "layer_norm_backward: input and gradient differ"
    );
    assert_eq!(gamma.len(), d, "layer_norm_backward: gamma length differs");
    let rows = x.len() / d;
    let mut dx = vec![0.0; x.len()];
    let r = rows_per_task(rows, d);
    // Each task returns its partial dgamma and dbeta; they are summed in task order.
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(r * d)
        .zip(x.par_chunks(r * d).zip(dy.par_chunks(r * d)))
        .zip(mean.par_chunks(r).zip(rstd.par_chunks(r)))
        .map(|((dx, (x, dy)), (mean, rstd))| {
            simd!(layer_norm_backward_rows(LnBackRows) -> (Vec<f32>, Vec<f32>), (dx, x, dy, mean, rstd, gamma, d))
        })
        .collect();
    let mut dgamma = vec![0f32; d];
    let mut dbeta = vec![0f32; d];
    for (dg, db) in partials {
        axpy(&mut dgamma, 1.0, &dg);
        axpy(&mut dbeta, 1.0, &db);
    }
    (dx, dgamma, dbeta)
}

/// The rows of one [`layer_norm_backward`] task.
type LnBackRows<'a> = (
    &'a mut [f32],
    &'a [f32],
    &'a [f32],
    &'a [f32],
    &'a [f32],
    &'a [f32],
    usize,
);

#[inline(always)]
fn layer_norm_backward_rows((dx, x, dy, mean, rstd, gamma, d): LnBackRows) -> (Vec<f32>, Vec<f32>) {
    let mut dg = vec![0f32; d];
    let mut db = vec![0f32; d];
    let mut xhat = vec![0f32; d];
    let mut g = vec![0f32; d];
    for ((((dx, x), dy), &mu), &inv) in dx
        .chunks_exact_mut(d)
        .zip(x.chunks_exact(d))
        .zip(dy.chunks_exact(d))
        .zip(mean)
        .zip(rstd)
    {
        for i in 0..d {
            xhat[i] = (x[i] - mu) * inv;
            g[i] = dy[i] * gamma[i];
            dg[i] += dy[i] * xhat[i];
            db[i] += dy[i];
        }
        let mg = sum(&g) / d as f32;
        let mgx = dot(&g, &xhat) / d as f32;
        for i in 0..d {
            dx[i] = inv * (g[i] - mg - xhat[i] * mgx);
        }
    }
    (dg, db)
}

/// The shape of a multi-head self-attention over a packed `qkv` buffer `[b, t, 3·h·dh]` whose
/// last dimension is laid out `(3, h, dh)` (timm's qkv Linear).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnShape {
    /// Batch.
    pub b: usize,
    /// Tokens.
    pub t: usize,
    /// Heads.
    pub h: usize,
    /// Width of a head.
    pub dh: usize,
}

impl AttnShape {
    /// The model width `h·dh`.
    #[inline(always)]
    pub fn d(&self) -> usize {
        self.h * self.dh
    }

    /// `t` rounded up to a multiple of 8: the row length of the score and probability
    /// matrices, whose columns past `t` are zero.
    #[inline(always)]
    pub fn tp(&self) -> usize {
        self.t.div_ceil(8) * 8
    }

    /// Row stride of `qkv`: `3·h·dh`.
    #[inline(always)]
    fn row(&self) -> usize {
        3 * self.d()
    }

    /// Offset of head `head`'s part `part` (0 = q, 1 = k, 2 = v) in token row `i` of image
    /// `img` of `qkv`.
    #[inline(always)]
    fn at(&self, img: usize, i: usize, part: usize, head: usize) -> usize {
        (img * self.t + i) * self.row() + part * self.d() + head * self.dh
    }
}

/// `C = alpha·A·B` for an `m × k` matrix `A` (row stride `lda`), a `k × n` matrix `B` (row
/// stride `ldb`) and an `m × n` matrix `C` (row stride `ldc`), overwriting `C`. Blocks of 4 rows
/// × 16 columns are accumulated in registers (two AVX vectors per row); columns past the last
/// multiple of 16 (then 8) and rows past the last multiple of 4 take narrower loops. The attention
/// matrices are small (tens of rows), so `A` and `B` are used in place, not packed.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn small_gemm(
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
) {
    let n16 = n / 16 * 16;
    let n8 = n / 8 * 8;
    let mut i = 0;
    while i < m {
        let rows = (m - i).min(4);
        // Rows past m repeat the last row; their results are not stored.
        let a_rows: [&[f32]; 4] = std::array::from_fn(|r| {
            let r = i + r.min(rows - 1);
            &a[r * lda..r * lda + k]
        });
        // 4 × 16 blocks: eight independent accumulator vectors hide the FMA latency.
        for j in (0..n16).step_by(16) {
            let mut acc = [[0f32; 16]; 4];
            for (p, b_row) in b.chunks(ldb).take(k).enumerate() {
                let bv: &[f32; 16] = b_row[j..j + 16]
                    .try_into()
                    .unwrap_or_else(|_| unreachable!());
                for r in 0..4 {
                    let av = a_rows[r][p];
                    for l in 0..16 {
                        acc[r][l] += av * bv[l];
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate().take(rows) {
                let out = &mut c[(i + r) * ldc + j..][..16];
                for l in 0..16 {
                    out[l] = alpha * acc[l];
                }
            }
        }
        for j in (n16..n8).step_by(8) {
            let mut acc = [[0f32; 8]; 4];
            for (p, b_row) in b.chunks(ldb).take(k).enumerate() {
                let bv: &[f32; 8] = b_row[j..j + 8]
                    .try_into()
                    .unwrap_or_else(|_| unreachable!());
                for r in 0..4 {
                    let av = a_rows[r][p];
                    for l in 0..8 {
                        acc[r][l] += av * bv[l];
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate().take(rows) {
                let out = &mut c[(i + r) * ldc + j..][..8];
                for l in 0..8 {
                    out[l] = alpha * acc[l];
                }
            }
        }
        for j in n8..n {
            for (r, a_row) in a_rows.iter().enumerate().take(rows) {
                let mut acc = 0f32;
                for (p, &av) in a_row.iter().enumerate() {
                    acc += av * b[p * ldb + j];
                }
                c[(i + r) * ldc + j] = alpha * acc;
            }
        }
        i += rows;
    }
}

/// Writes the transpose of the `rows × cols` matrix `src` (row stride `lds`) into `dst`
/// (row stride `ldd`, so `dst[c·ldd + r] = src[r·lds + c]`).
#[inline(always)]
fn transpose(rows: usize, cols: usize, src: &[f32], lds: usize, dst: &mut [f32], ldd: usize) {
    for r in 0..rows {
        for (c, &v) in src[r * lds..r * lds + cols].iter().enumerate() {
            dst[c * ldd + r] = v;
        }
    }
}

/// Softmax attention `softmax(q·kᵀ/√dh)·v` per image and head, from a packed `qkv`
/// (see [`AttnShape`]). Returns the output `[b, t, h·dh]` (heads concatenated, ready for the
/// output projection) and the attention probabilities `[b, h, t, tp]` (rows padded with zeros
/// to [`AttnShape::tp`]) for the backward pass.
pub fn attention(qkv: &[f32], s: AttnShape) -> (Vec<f32>, Vec<f32>) {
    let AttnShape { b, t, h, .. } = s;
    assert_eq!(
        qkv.len(),
        b * t * s.row(),
        "attention: qkv has the wrong size"
    );
    let d = s.d();
    let mut probs = vec![0f32; b * h * t * s.tp()];
    let mut out = vec![0f32; b * t * d];
    // One image per task: its heads write disjoint columns of its output rows.
    out.par_chunks_mut(t * d)
        .zip(probs.par_chunks_mut(h * t * s.tp()))
        .enumerate()
        .for_each(
            |(img, (out, probs))| simd!(attention_image(AttnFwd) -> (), (qkv, s, img, out, probs)),
        );
    (out, probs)
}

/// The inputs of one image of [`attention`].
type AttnFwd<'a> = (&'a [f32], AttnShape, usize, &'a mut [f32], &'a mut [f32]);

#[inline(always)]
fn attention_image((qkv, s, img, out, probs): AttnFwd) {
    let AttnShape { t, h, dh, .. } = s;
    let (d, tp, row) = (s.d(), s.tp(), s.row());
    let scale = 1.0 / (dh as f32).sqrt();
    let rows = &qkv[s.at(img, 0, 0, 0)..][..t * row];
    let mut kt = vec![0f32; dh * tp];
    for head in 0..h {
        let (q, k, v) = (head * dh, d + head * dh, 2 * d + head * dh);
        // Kᵀ [dh, tp], zero past column t.
        transpose(t, dh, &rows[k..], row, &mut kt, tp);
        let p = &mut probs[head * t * tp..][..t * tp];
        small_gemm((t, tp, dh), scale, &rows[q..], row, &kt, tp, p, tp);
        for r in p.chunks_exact_mut(tp) {
            let (r, pad) = r.split_at_mut(t);
            let m = max(r);
            for x in r.iter_mut() {
                *x = exp(*x - m);
            }
            let inv = 1.0 / sum(r);
            for x in r.iter_mut() {
                *x *= inv;
            }
            pad.fill(0.0);
        }
        small_gemm(
            (t, dh, t),
            1.0,
            p,
            tp,
            &rows[v..],
            row,
            &mut out[head * dh..],
            d,
        );
    }
}

/// The gradient of [`attention`] with respect to the packed `qkv`, given the probabilities it
/// returned and the output gradient `dout` `[b, t, h·dh]`. Per image and head, with `P` the
/// probabilities and `dO` the head's output gradient: `dV = Pᵀ·dO`, `dP = dO·Vᵀ`,
/// `dS = P ⊙ (dP − rowsum(dP ⊙ P))`, `dQ = dS·K/√dh`, `dK = dSᵀ·Q/√dh`.
pub fn attention_backward(qkv: &[f32], probs: &[f32], dout: &[f32], s: AttnShape) -> Vec<f32> {
    let AttnShape { b, t, h, .. } = s;
    assert_eq!(
        qkv.len(),
        b * t * s.row(),
        "attention_backward: qkv has the wrong size"
    );
    assert_eq!(
        dout.len(),
        b * t * s.d(),
        "attention_backward: gradient has the wrong size"
    );
    assert_eq!(
        probs.len(),
        b * h * t * s.tp(),
        "attention_backward: probabilities have the wrong size"
    );
    let mut dqkv = vec![0f32; qkv.len()];
    // One image per task: the heads of an image write disjoint parts of its rows.
    dqkv.par_chunks_mut(t * s.row()).enumerate().for_each(
        |(img, dq)| simd!(attention_backward_image(AttnBack) -> (), (qkv, probs, dout, s, img, dq)),
    );
    dqkv
}

/// The inputs of one image of [`attention_backward`].
type AttnBack<'a> = (
    &'a [f32],
    &'a [f32],
    &'a [f32],
    AttnShape,
    usize,
    &'a mut [f32],
);

#[inline(always)]
fn attention_backward_image((qkv, probs, dout, s, img, dq): AttnBack) {
    let AttnShape { t, h, dh, .. } = s;
    let (d, tp, row) = (s.d(), s.tp(), s.row());
    let scale = 1.0 / (dh as f32).sqrt();
    let rows = &qkv[s.at(img, 0, 0, 0)..][..t * row];
    let dout = &dout[img * t * d..][..t * d];
    let mut vt = vec![0f32; dh * tp];
    let mut ds = vec![0f32; t * tp];
    let mut tr = vec![0f32; t * tp];
    for head in 0..h {
        let (q, k, v) = (head * dh, d + head * dh, 2 * d + head * dh);
        let p = &probs[(img * h + head) * t * tp..][..t * tp];
        let dout_h = &dout[head * dh..];
        // dV = Pᵀ·dO
        transpose(t, t, p, tp, &mut tr, tp);
        small_gemm((t, dh, t), 1.0, &tr, tp, dout_h, d, &mut dq[v..], row);
        // dP = dO·Vᵀ, then dS = P ⊙ (dP − rowsum(dP ⊙ P)) / √dh in place.
        transpose(t, dh, &rows[v..], row, &mut vt, tp);
        small_gemm((t, tp, dh), 1.0, dout_h, d, &vt, tp, &mut ds, tp);
        for (dsr, pr) in ds.chunks_exact_mut(tp).zip(p.chunks_exact(tp)) {
            let rowdot = dot(dsr, pr);
            for (x, &pv) in dsr.iter_mut().zip(pr) {
                *x = pv * (*x - rowdot) * scale;
            }
        }
        // dQ = dS·K, dK = dSᵀ·Q.
        small_gemm((t, dh, t), 1.0, &ds, tp, &rows[k..], row, &mut dq[q..], row);
        transpose(t, t, &ds, tp, &mut tr, tp);
        small_gemm((t, dh, t), 1.0, &tr, tp, &rows[q..], row, &mut dq[k..], row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std() {
        let mut worst = 0f32;
        for i in -8000..=8000 {
            let x = i as f32 * 0.01;
            let rel = ((exp(x) - x.exp()) / x.exp()).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 4e-7, "relative error {worst}");
        assert!(exp(-1.0e4) < 1.0e-37 && exp(-1.0e4) >= 0.0);
    }

    #[test]
    fn gelu_matches_erf_form() {
        // Φ(x) = (1 + erf(x/√2))/2 with erf from its Taylor series (|x| ≤ 3 converges fast).
        let erf = |z: f64| {
            let (mut term, mut acc) = (z, z);
            for n in 1..80 {
                term *= -z * z / n as f64;
                acc += term / (2 * n + 1) as f64;
            }
            acc * 2.0 / std::f64::consts::PI.sqrt()
        };
        let xs: Vec<f32> = (-300..=300).map(|i| i as f32 * 0.01).collect();
        let y = gelu(&xs);
        for (&x, &y) in xs.iter().zip(&y) {
            let want = 0.5 * x as f64 * (1.0 + erf(x as f64 / 2f64.sqrt()));
            // A&S's |erf error| ≤ 1.5·10⁻⁷ scaled by x/2, plus f32 rounding.
            let tol = 0.8e-7 * f64::from(x.abs()) + 1.5e-7 * want.abs() + 1e-8;
            assert!(
                (y as f64 - want).abs() < tol,
                "gelu({x}) = {y}, want {want}"
            );
        }
    }
}
