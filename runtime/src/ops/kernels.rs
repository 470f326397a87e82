//! The CPU kernels of the fused ops, on plain `f32` slices: GELU, LayerNorm and multi-head
//! self-attention, forward and backward.
//!
//! Each kernel splits its rows over rayon's pool and runs every chunk through
//! [`pulp::Arch::dispatch`], so the loops (written to auto-vectorise: independent lanes, no
//! branches, no libm calls) are compiled for AVX2+FMA or AVX-512 when the CPU has them, without
//! `unsafe` and without `-C target-cpu`.

use super::gemm::MatRef;
use rayon::prelude::*;

/// Elements per rayon task of an elementwise kernel.
const CHUNK: usize = 1 << 14;

/// Runs the `#[inline(always)]` kernel function `$kernel` on the SIMD token and `$args` (of
/// the one-lifetime type `$ty`) compiled for the best instruction set the CPU has: the call is
/// written inside pulp's `WithSimd::with_simd`, so it is inlined into pulp's
/// `#[target_feature]` entry points with every `#[inline(always)]` helper below it. (A closure
/// or function pointer passed through a generic `FnOnce` is not reliably inlined there and then
/// runs as baseline SSE2.)
macro_rules! simd {
    ($kernel:ident($ty:ident) -> $out:ty, $args:expr) => {{
        struct Run<'a>($ty<'a>);
        impl pulp::WithSimd for Run<'_> {
            type Output = $out;
            #[inline(always)]
            fn with_simd<S: pulp::Simd>(self, simd: S) -> $out {
                $kernel(simd, self.0)
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

/// [`exp`] on a SIMD vector, with fused multiply-adds (the same range reduction and
/// polynomial; results may differ from [`exp`]'s in the last bit).
#[inline(always)]
fn exp_v<S: pulp::Simd>(simd: S, x: S::f32s) -> S::f32s {
    let x = simd.max_f32s(
        simd.min_f32s(x, simd.splat_f32s(88.7)),
        simd.splat_f32s(-87.3),
    );
    let t = simd.mul_add_e_f32s(
        x,
        simd.splat_f32s(std::f32::consts::LOG2_E),
        simd.splat_f32s(12_582_912.0),
    );
    let n = simd.sub_f32s(t, simd.splat_f32s(12_582_912.0));
    let r = simd.mul_add_e_f32s(n, simd.splat_f32s(-0.693_145_75), x);
    let r = simd.mul_add_e_f32s(n, simd.splat_f32s(-1.428_606_8e-6), r);
    let mut p = simd.splat_f32s(1.0 / 5040.0);
    for k in [720.0, 120.0, 24.0, 6.0, 2.0, 1.0, 1.0] {
        p = simd.mul_add_e_f32s(p, r, simd.splat_f32s(1.0 / k));
    }
    let bits = simd.transmute_u32s_f32s(t);
    let bits = simd.add_u32s(
        simd.sub_u32s(bits, simd.splat_u32s(0x4B40_0000)),
        simd.splat_u32s(127),
    );
    let two_n = simd.wrapping_dyn_shl_u32s(bits, simd.splat_u32s(23));
    simd.mul_f32s(p, simd.transmute_f32s_u32s(two_n))
}

/// `(Φ(x), φ(x))` for a SIMD vector: the standard normal CDF and density. `Φ` from Abramowitz
/// & Stegun 7.1.26 (absolute error of `erf` below 1.5·10⁻⁷), written as `erfc(|x|/√2)` in the
/// lower tail so that `x·Φ(x)` keeps its relative accuracy for negative `x`; one `exp` serves
/// both.
#[inline(always)]
fn normal_cdf_pdf_v<S: pulp::Simd>(simd: S, x: S::f32s) -> (S::f32s, S::f32s) {
    let e = exp_v(
        simd,
        simd.mul_f32s(simd.mul_f32s(x, x), simd.splat_f32s(-0.5)),
    );
    let z = simd.mul_f32s(
        simd.abs_f32s(x),
        simd.splat_f32s(std::f32::consts::FRAC_1_SQRT_2),
    );
    let t = simd.div_f32s(
        simd.splat_f32s(1.0),
        simd.mul_add_e_f32s(z, simd.splat_f32s(0.327_591_1), simd.splat_f32s(1.0)),
    );
    let mut poly = simd.splat_f32s(1.061_405_4);
    for a in [-1.453_152, 1.421_413_7, -0.284_496_74, 0.254_829_6] {
        poly = simd.mul_add_e_f32s(poly, t, simd.splat_f32s(a));
    }
    let half_erfc = simd.mul_f32s(
        simd.mul_f32s(poly, t),
        simd.mul_f32s(e, simd.splat_f32s(0.5)),
    );
    let cdf = simd.select_f32s(
        simd.greater_than_or_equal_f32s(x, simd.splat_f32s(0.0)),
        simd.sub_f32s(simd.splat_f32s(1.0), half_erfc),
        half_erfc,
    );
    (cdf, simd.mul_f32s(e, simd.splat_f32s(0.398_942_3)))
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
fn gelu_chunk<S: pulp::Simd>(simd: S, (y, x): GeluArgs) {
    let (ys, y_tail) = S::as_mut_simd_f32s(y);
    let (xs, x_tail) = S::as_simd_f32s(x);
    for (y, &x) in ys.iter_mut().zip(xs) {
        *y = gelu_v(simd, x);
    }
    if !y_tail.is_empty() {
        let v = gelu_v(simd, simd.partial_load_f32s(x_tail));
        simd.partial_store_f32s(y_tail, v);
    }
}

/// `x·Φ(x)` on a SIMD vector.
#[inline(always)]
fn gelu_v<S: pulp::Simd>(simd: S, x: S::f32s) -> S::f32s {
    simd.mul_f32s(x, normal_cdf_pdf_v(simd, x).0)
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
fn gelu_backward_chunk<S: pulp::Simd>(simd: S, (o, (x, g)): GeluBackArgs) {
    let (os, o_tail) = S::as_mut_simd_f32s(o);
    let (xs, x_tail) = S::as_simd_f32s(x);
    let (gs, g_tail) = S::as_simd_f32s(g);
    for ((o, &x), &g) in os.iter_mut().zip(xs).zip(gs) {
        *o = gelu_grad_v(simd, x, g);
    }
    if !o_tail.is_empty() {
        let (x, g) = (
            simd.partial_load_f32s(x_tail),
            simd.partial_load_f32s(g_tail),
        );
        let v = gelu_grad_v(simd, x, g);
        simd.partial_store_f32s(o_tail, v);
    }
}

/// `g·(Φ(x) + x·φ(x))` on SIMD vectors.
#[inline(always)]
fn gelu_grad_v<S: pulp::Simd>(simd: S, x: S::f32s, g: S::f32s) -> S::f32s {
    let (cdf, pdf) = normal_cdf_pdf_v(simd, x);
    simd.mul_f32s(g, simd.mul_add_e_f32s(x, pdf, cdf))
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
fn layer_norm_rows<S: pulp::Simd>(_: S, (y, x, mean, rstd, gamma, beta, d, eps): LnRows) {
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
fn layer_norm_backward_rows<S: pulp::Simd>(
    _: S,
    (dx, x, dy, mean, rstd, gamma, d): LnBackRows,
) -> (Vec<f32>, Vec<f32>) {
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

/// `C = alpha·A·B` for an `m × k` matrix `A` (any strides: a transpose costs nothing), a
/// `k × n` matrix `B` (row stride `ldb`) and an `m × n` matrix `C` (row stride `ldc`),
/// overwriting `C`. `A` is copied 4 rows at a time into `pack` (interleaved, `k × 4`); each
/// 4-row panel times 2 SIMD vectors of columns of `B` (4 × 16 with AVX2) is accumulated in
/// registers with fused multiply-adds, the last block of a row with partial vectors. Written
/// with `simd`'s vectors rather than left to the auto-vectoriser, which kept the accumulators
/// on the stack in some instantiations (scalar code, 4× slower) and never fuses `a·b + c`. The
/// attention matrices are small (tens of rows), so `B` is used in place, not packed.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn small_gemm<S: pulp::Simd>(
    simd: S,
    n: usize,
    alpha: f32,
    a: MatRef<'_>,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    pack: &mut Vec<f32>,
) {
    let (m, k) = (a.rows, a.cols);
    let lanes = S::F32_LANES;
    let alpha = simd.splat_f32s(alpha);
    let zero = simd.splat_f32s(0.0);
    pack.resize(4 * k, 0.0);
    let (pack, _) = pack.as_chunks_mut::<4>();
    let mut i = 0;
    while i < m {
        let rows = (m - i).min(4);
        // Rows past m repeat the last row; their results are not stored.
        for (p, a4) in pack.iter_mut().enumerate() {
            for (r, x) in a4.iter_mut().enumerate() {
                *x = a.data[(i + r.min(rows - 1)) * a.rs + p * a.cs];
            }
        }
        let mut j = 0;
        while j < n {
            let w0 = (n - j).min(lanes);
            let w1 = (n - j - w0).min(lanes);
            let b_rows = b[j..].chunks(ldb).take(k);
            // Eight independent accumulators hide the FMA latency.
            let mut acc = [[zero; 2]; 4];
            if w1 == lanes {
                for (a4, row) in pack.iter().zip(b_rows) {
                    let (b0, b1) = row[..2 * lanes].split_at(lanes);
                    let (b0, b1) = (S::as_simd_f32s(b0).0[0], S::as_simd_f32s(b1).0[0]);
                    fma_rows(simd, &mut acc, a4, b0, b1);
                }
            } else {
                for (a4, row) in pack.iter().zip(b_rows) {
                    let (b0, b1) = row[..w0 + w1].split_at(w0);
                    fma_rows(simd, &mut acc, a4, load(simd, b0), load(simd, b1));
                }
            }
            for (r, acc) in acc.iter().enumerate().take(rows) {
                let out = &mut c[(i + r) * ldc + j..][..w0 + w1];
                let (o0, o1) = out.split_at_mut(w0);
                store(simd, o0, simd.mul_f32s(alpha, acc[0]));
                store(simd, o1, simd.mul_f32s(alpha, acc[1]));
            }
            j += w0 + w1;
        }
        i += rows;
    }
}

/// One step of [`small_gemm`]'s inner loop: `acc[r] += a4[r]·(b0, b1)` for the 4 rows.
#[inline(always)]
fn fma_rows<S: pulp::Simd>(
    simd: S,
    acc: &mut [[S::f32s; 2]; 4],
    a4: &[f32; 4],
    b0: S::f32s,
    b1: S::f32s,
) {
    for r in 0..4 {
        let av = simd.splat_f32s(a4[r]);
        acc[r][0] = simd.mul_add_e_f32s(av, b0, acc[r][0]);
        acc[r][1] = simd.mul_add_e_f32s(av, b1, acc[r][1]);
    }
}

/// One SIMD vector from `x` (`x.len() ≤` the lane count; missing lanes read as zero).
#[inline(always)]
fn load<S: pulp::Simd>(simd: S, x: &[f32]) -> S::f32s {
    if x.len() == S::F32_LANES {
        S::as_simd_f32s(x).0[0]
    } else {
        simd.partial_load_f32s(x)
    }
}

/// Stores the first `x.len() ≤` lane count lanes of `v` into `x`.
#[inline(always)]
fn store<S: pulp::Simd>(simd: S, x: &mut [f32], v: S::f32s) {
    if x.len() == S::F32_LANES {
        S::as_mut_simd_f32s(x).0[0] = v;
    } else {
        simd.partial_store_f32s(x, v);
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

/// Softmax of the first `t` entries of `row` in place, zeroing the rest. `row.len()` is a
/// multiple of 8 (see [`AttnShape::tp`]), so every pass runs in whole 8-lane chunks: a loop
/// over just the `t` entries (25 for a 5×5 grid) would run in LLVM's scalar remainder loop.
#[inline(always)]
fn softmax_padded(row: &mut [f32], t: usize) {
    let m = max(&row[..t]);
    let (chunks, tail) = row.as_chunks_mut::<8>();
    for c in chunks.iter_mut() {
        for x in c.iter_mut() {
            *x = exp(*x - m);
        }
    }
    for x in tail.iter_mut() {
        *x = exp(*x - m);
    }
    row[t..].fill(0.0);
    let inv = 1.0 / sum(row);
    let (chunks, tail) = row.as_chunks_mut::<8>();
    for c in chunks.iter_mut() {
        for x in c.iter_mut() {
            *x *= inv;
        }
    }
    for x in tail.iter_mut() {
        *x *= inv;
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
fn attention_image<S: pulp::Simd>(simd: S, (qkv, s, img, out, probs): AttnFwd) {
    let AttnShape { t, h, dh, .. } = s;
    let (d, tp, row) = (s.d(), s.tp(), s.row());
    let scale = 1.0 / (dh as f32).sqrt();
    let rows = &qkv[s.at(img, 0, 0, 0)..][..t * row];
    let mut kt = vec![0f32; dh * tp];
    let mut pack = Vec::new();
    for head in 0..h {
        let (q, k, v) = (head * dh, d + head * dh, 2 * d + head * dh);
        // Kᵀ [dh, tp], zero past column t.
        transpose(t, dh, &rows[k..], row, &mut kt, tp);
        let p = &mut probs[head * t * tp..][..t * tp];
        let qh = MatRef::strided(&rows[q..], t, dh, row);
        small_gemm(simd, tp, scale, qh, &kt, tp, p, tp, &mut pack);
        for r in p.chunks_exact_mut(tp) {
            softmax_padded(r, t);
        }
        let ph = MatRef::strided(p, t, t, tp);
        small_gemm(
            simd,
            dh,
            1.0,
            ph,
            &rows[v..],
            row,
            &mut out[head * dh..],
            d,
            &mut pack,
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
fn attention_backward_image<S: pulp::Simd>(simd: S, (qkv, probs, dout, s, img, dq): AttnBack) {
    let AttnShape { t, h, dh, .. } = s;
    let (d, tp, row) = (s.d(), s.tp(), s.row());
    let scale = 1.0 / (dh as f32).sqrt();
    let rows = &qkv[s.at(img, 0, 0, 0)..][..t * row];
    let dout = &dout[img * t * d..][..t * d];
    let mut vt = vec![0f32; dh * tp];
    let mut ds = vec![0f32; t * tp];
    let mut pack = Vec::new();
    for head in 0..h {
        let (q, k, v) = (head * dh, d + head * dh, 2 * d + head * dh);
        let p = MatRef::strided(&probs[(img * h + head) * t * tp..][..t * tp], t, t, tp);
        let dout_h = &dout[head * dh..];
        // dV = Pᵀ·dO
        small_gemm(
            simd,
            dh,
            1.0,
            p.t(),
            dout_h,
            d,
            &mut dq[v..],
            row,
            &mut pack,
        );
        // dP = dO·Vᵀ, then dS = P ⊙ (dP − rowsum(dP ⊙ P)) / √dh in place.
        transpose(t, dh, &rows[v..], row, &mut vt, tp);
        let doh = MatRef::strided(dout_h, t, dh, d);
        small_gemm(simd, tp, 1.0, doh, &vt, tp, &mut ds, tp, &mut pack);
        for (dsr, pr) in ds.chunks_exact_mut(tp).zip(p.data.chunks_exact(tp)) {
            let rowdot = dot(dsr, pr);
            let (dsr, _) = dsr.as_chunks_mut::<8>();
            let (pr, _) = pr.as_chunks::<8>();
            for (x, pv) in dsr.iter_mut().zip(pr) {
                for l in 0..8 {
                    x[l] = pv[l] * (x[l] - rowdot) * scale;
                }
            }
        }
        // dQ = dS·K, dK = dSᵀ·Q.
        let dsv = MatRef::strided(&ds, t, t, tp);
        small_gemm(
            simd,
            dh,
            1.0,
            dsv,
            &rows[k..],
            row,
            &mut dq[q..],
            row,
            &mut pack,
        );
        small_gemm(
            simd,
            dh,
            1.0,
            dsv.t(),
            &rows[q..],
            row,
            &mut dq[k..],
            row,
            &mut pack,
        );
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

    /// [`exp_v`] over a slice, with the best instruction set the CPU has.
    fn exp_v_all(x: &[f32]) -> Vec<f32> {
        struct Run<'a>(&'a [f32]);
        impl pulp::WithSimd for Run<'_> {
            type Output = Vec<f32>;
            #[inline(always)]
            fn with_simd<S: pulp::Simd>(self, simd: S) -> Vec<f32> {
                let mut y = vec![0f32; self.0.len()];
                let (ys, y_tail) = S::as_mut_simd_f32s(&mut y);
                let (xs, x_tail) = S::as_simd_f32s(self.0);
                for (y, &x) in ys.iter_mut().zip(xs) {
                    *y = exp_v(simd, x);
                }
                let v = exp_v(simd, simd.partial_load_f32s(x_tail));
                simd.partial_store_f32s(y_tail, v);
                y
            }
        }
        pulp::Arch::new().dispatch(Run(x))
    }

    #[test]
    fn vector_exp_matches_std() {
        let xs: Vec<f32> = (-8001..=8000).map(|i| i as f32 * 0.01).collect();
        let mut worst = 0f32;
        for (&x, y) in xs.iter().zip(exp_v_all(&xs)) {
            worst = worst.max(((y - x.exp()) / x.exp()).abs());
        }
        assert!(worst < 4e-7, "relative error {worst}");
        let far = exp_v_all(&[-1.0e4]);
        assert!(far[0] < 1.0e-37 && far[0] >= 0.0);
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
