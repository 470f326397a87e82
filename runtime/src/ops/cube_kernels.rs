//! The CubeCL kernels behind [`super::cube`] and their launches, for the CUDA and wgpu
//! backends (compiled with either feature).
//!
//! Row-wise kernels (LayerNorm forward and `dx`, the scaled softmax and its backward step, the
//! L2 normalisation, the contrastive cross-entropy, the row errors, the target normalisation)
//! run one cube of 32–128 units per row: unit `u` takes the row's elements `u, u + w, …`, so a
//! cube's loads are contiguous, and the row's sums and maxima meet in shared memory.
//! BatchNorm's kernels run one cube per 32 columns and up to 8 groups of rows, meeting in
//! shared memory likewise. A loss's mean over its rows is one cube. The others (GELU both ways,
//! the bias adds, heads, flat layout, AdamW, EMA) run one unit per element written. All but the
//! copies compute in f32 whatever the tensors' float type. Launches go through CubeCL's
//! checked `launch` (out-of-range reads give zero, writes are dropped), as the crate has no
//! `unsafe`.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Shape, Tensor, TensorPrimitive};
use burn_cubecl::CubeRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::{empty_device_contiguous_dtype, full_device_dtype};
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;
use cubecl::{CubeDim, calculate_cube_count_elemwise};
use std::any::Any;

/// The sum of every unit's `v` over this cube's `w` units, for all of them, through `shared`
/// (`w` floats; a fixed order, so every unit gets the same bits).
#[cube]
fn cube_sum(v: f32, shared: &mut SharedMemory<f32>, #[comptime] w: usize) -> f32 {
    shared[UNIT_POS as usize] = v;
    sync_cube();
    let mut total = f32::new(0.0);
    for i in 0..w {
        total += shared[i];
    }
    sync_cube();
    total
}

/// The largest of every unit's `v` over this cube's `w` units, as [`cube_sum`].
#[cube]
fn cube_max(v: f32, shared: &mut SharedMemory<f32>, #[comptime] w: usize) -> f32 {
    shared[UNIT_POS as usize] = v;
    sync_cube();
    let mut m = shared[0];
    for i in 1..w {
        m = f32::max(m, shared[i]);
    }
    sync_cube();
    m
}

/// One cube of `w` units per row of `x` (`[rows, d]`); unit `u` takes columns `u, u + w, …`,
/// so a cube's loads are contiguous.
#[cube(launch)]
fn layer_norm_kernel<E: Float>(
    x: &Array<E>,
    gamma: &Array<E>,
    beta: &Array<E>,
    y: &mut Array<E>,
    xhat: &mut Array<E>,
    rstd: &mut Array<E>,
    rows: usize,
    d: usize,
    eps: f32,
    #[comptime] w: usize,
    #[define(E)] _dtype: StorageType,
) {
    let row = CUBE_POS;
    if row >= rows {
        terminate!();
    }
    let mut shared = SharedMemory::<f32>::new(w);
    let (u, base, steps) = (UNIT_POS as usize, row * d, d.div_ceil(w));
    let inv_d = f32::new(1.0) / f32::cast_from(d);
    let mut part = f32::new(0.0);
    for k in 0..steps {
        let i = k * w + u;
        if i < d {
            part += f32::cast_from(x[base + i]);
        }
    }
    let mean = cube_sum(part, &mut shared, w) * inv_d;
    let mut part = f32::new(0.0);
    for k in 0..steps {
        let i = k * w + u;
        if i < d {
            let c = f32::cast_from(x[base + i]) - mean;
            part += c * c;
        }
    }
    let r = f32::new(1.0) / f32::sqrt(cube_sum(part, &mut shared, w) * inv_d + eps);
    for k in 0..steps {
        let i = k * w + u;
        if i < d {
            let h = (f32::cast_from(x[base + i]) - mean) * r;
            xhat[base + i] = E::cast_from(h);
            y[base + i] = E::cast_from(h * f32::cast_from(gamma[i]) + f32::cast_from(beta[i]));
        }
    }
    if u == 0 {
        rstd[row] = E::cast_from(r);
    }
}

/// One cube of `w` units per row, as [`layer_norm_kernel`]. Besides `dx`, writes each row's
/// `dy·x̂` and `dy` side by side into `sums` (`[rows, 2d]`), whose column sums are `(dγ, dβ)`.
#[cube(launch)]
fn layer_norm_dx_kernel<E: Float>(
    dy: &Array<E>,
    xhat: &Array<E>,
    rstd: &Array<E>,
    gamma: &Array<E>,
    dx: &mut Array<E>,
    sums: &mut Array<E>,
    rows: usize,
    d: usize,
    #[comptime] w: usize,
    #[define(E)] _dtype: StorageType,
) {
    let row = CUBE_POS;
    if row >= rows {
        terminate!();
    }
    let mut shared = SharedMemory::<f32>::new(w);
    let (u, base, steps) = (UNIT_POS as usize, row * d, d.div_ceil(w));
    let inv_d = f32::new(1.0) / f32::cast_from(d);
    let mut p1 = f32::new(0.0);
    let mut p2 = f32::new(0.0);
    for k in 0..steps {
        let i = k * w + u;
        if i < d {
            let g = f32::cast_from(dy[base + i]) * f32::cast_from(gamma[i]);
            p1 += g;
            p2 += g * f32::cast_from(xhat[base + i]);
        }
    }
    let m1 = cube_sum(p1, &mut shared, w) * inv_d;
    let m2 = cube_sum(p2, &mut shared, w) * inv_d;
    let r = f32::cast_from(rstd[row]);
    for k in 0..steps {
        let i = k * w + u;
        if i < d {
            let g = f32::cast_from(dy[base + i]);
            let h = f32::cast_from(xhat[base + i]);
            dx[base + i] = E::cast_from(r * (g * f32::cast_from(gamma[i]) - m1 - h * m2));
            sums[2 * base + i] = E::cast_from(g * h);
            sums[2 * base + d + i] = dy[base + i];
        }
    }
}

/// Columns per BatchNorm cube; its `rs` row groups make the cube `COLS × rs` units.
const COLS: usize = 32;

/// The sum of every unit's `v` over this cube's `rs` row groups for the unit's column
/// (`UNIT_POS_X`), through `shared` (`COLS·rs` floats; a fixed order, as [`cube_sum`]).
#[cube]
fn col_sum(v: f32, shared: &mut SharedMemory<f32>, #[comptime] rs: usize) -> f32 {
    let x = UNIT_POS_X as usize;
    shared[UNIT_POS_Y as usize * COLS + x] = v;
    sync_cube();
    let mut total = f32::new(0.0);
    for j in 0..rs {
        total += shared[j * COLS + x];
    }
    sync_cube();
    total
}

/// Rows per cube of [`col_sum_kernel`], taken by its [`ROW_GROUPS`] row groups.
const CHUNK: usize = 256;

/// Row groups per cube of [`col_sum_kernel`] (`COLS × ROW_GROUPS` = 256 units).
const ROW_GROUPS: usize = 8;

/// Column sums of `x` (`[rows, c]`) by chunks of rows: cube `(bx, by)` sums columns
/// `COLS·bx + UNIT_POS_X` over rows `[CHUNK·by, CHUNK·(by + 1))` ([`ROW_GROUPS`] row groups meeting in
/// shared memory, a fixed order) into `part[by, col]` (`[⌈rows / CHUNK⌉, c]`), so one launch
/// per `CHUNK`-fold reduction, every cube's loads coalesced along a row.
#[cube(launch)]
fn col_sum_kernel<E: Float>(
    x: &Array<E>,
    part: &mut Array<E>,
    rows: usize,
    c: usize,
    #[define(E)] _dtype: StorageType,
) {
    let col = CUBE_POS_X as usize * COLS + UNIT_POS_X as usize;
    let start = CUBE_POS_Y as usize * CHUNK;
    let ry = UNIT_POS_Y as usize;
    let mut shared = SharedMemory::<f32>::new(COLS * ROW_GROUPS);
    let mut v = f32::new(0.0);
    if col < c {
        for k in 0..CHUNK / ROW_GROUPS {
            let r = start + k * ROW_GROUPS + ry;
            if r < rows {
                v += f32::cast_from(x[r * c + col]);
            }
        }
    }
    let total = col_sum(v, &mut shared, ROW_GROUPS);
    if ry == 0 && col < c {
        part[CUBE_POS_Y as usize * c + col] = E::cast_from(total);
    }
}

/// BatchNorm's training forward on `x` (`[n, c]`): each cube takes `COLS` adjacent columns
/// (coalesced loads along a row) and `rs` groups of rows (`UNIT_POS_Y`, rows `y, y + rs, …`),
/// meeting in shared memory. Writes `y = x̂·γ + β` (then `max(y, 0)` with `relu`; `γ = 1`,
/// `β = 0` without `affine`), `x̂`, `r = 1/√(σ² + ε)` and the running statistics moved by
/// `momentum` towards the batch's mean and unbiased variance. Units past the last column
/// stay for the cube's barriers and write nothing.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn batch_norm_kernel<E: Float>(
    x: &Array<E>,
    gamma: &Array<E>,
    beta: &Array<E>,
    running_mean: &Array<E>,
    running_var: &Array<E>,
    y: &mut Array<E>,
    xhat: &mut Array<E>,
    rstd: &mut Array<E>,
    mean_out: &mut Array<E>,
    var_out: &mut Array<E>,
    n: usize,
    c: usize,
    eps: f32,
    momentum: f32,
    #[comptime] rs: usize,
    #[comptime] affine: bool,
    #[comptime] relu: bool,
    #[define(E)] _dtype: StorageType,
) {
    let col = CUBE_POS * COLS + UNIT_POS_X as usize;
    let (ry, steps) = (UNIT_POS_Y as usize, n.div_ceil(rs));
    let live = col < c;
    let mut shared = SharedMemory::<f32>::new(COLS * rs);
    let inv_n = f32::new(1.0) / f32::cast_from(n);
    let mut part = f32::new(0.0);
    if live {
        for k in 0..steps {
            let r = k * rs + ry;
            if r < n {
                part += f32::cast_from(x[r * c + col]);
            }
        }
    }
    let mean = col_sum(part, &mut shared, rs) * inv_n;
    let mut part = f32::new(0.0);
    if live {
        for k in 0..steps {
            let r = k * rs + ry;
            if r < n {
                let d = f32::cast_from(x[r * c + col]) - mean;
                part += d * d;
            }
        }
    }
    let var = col_sum(part, &mut shared, rs) * inv_n;
    let inv = f32::new(1.0) / f32::sqrt(var + eps);
    if live {
        let mut g = f32::new(1.0);
        let mut b = f32::new(0.0);
        if affine {
            g = f32::cast_from(gamma[col]);
            b = f32::cast_from(beta[col]);
        }
        for k in 0..steps {
            let r = k * rs + ry;
            if r < n {
                let i = r * c + col;
                let h = (f32::cast_from(x[i]) - mean) * inv;
                xhat[i] = E::cast_from(h);
                let mut v = h * g + b;
                if relu {
                    v = f32::max(v, f32::new(0.0));
                }
                y[i] = E::cast_from(v);
            }
        }
        if ry == 0 {
            let mut unbiased = var;
            if n > 1 {
                unbiased = var * f32::cast_from(n) / f32::cast_from(n - 1);
            }
            let keep = f32::new(1.0) - momentum;
            rstd[col] = E::cast_from(inv);
            mean_out[col] =
                E::cast_from(f32::cast_from(running_mean[col]) * keep + mean * momentum);
            var_out[col] =
                E::cast_from(f32::cast_from(running_var[col]) * keep + unbiased * momentum);
        }
    }
}

/// BatchNorm's backward step, laid out as [`batch_norm_kernel`]: with `g = dy` (zero where the
/// forward's `relu` cut `x̂·γ + β ≤ 0`), `dβ = Σ g`, `dγ = Σ g·x̂` over the batch and
/// `dx = r·γ·(g − dβ/n − x̂·dγ/n)`.
#[cube(launch)]
// The comptime flags stay in their own `if`s: CubeCL resolves those at expansion.
#[allow(clippy::too_many_arguments, clippy::collapsible_if)]
fn batch_norm_dx_kernel<E: Float>(
    dy: &Array<E>,
    xhat: &Array<E>,
    rstd: &Array<E>,
    gamma: &Array<E>,
    beta: &Array<E>,
    dx: &mut Array<E>,
    dgamma: &mut Array<E>,
    dbeta: &mut Array<E>,
    n: usize,
    c: usize,
    #[comptime] rs: usize,
    #[comptime] affine: bool,
    #[comptime] relu: bool,
    #[define(E)] _dtype: StorageType,
) {
    let col = CUBE_POS * COLS + UNIT_POS_X as usize;
    let (ry, steps) = (UNIT_POS_Y as usize, n.div_ceil(rs));
    let live = col < c;
    let mut shared = SharedMemory::<f32>::new(COLS * rs);
    let mut g = f32::new(1.0);
    let mut b = f32::new(0.0);
    if affine {
        if live {
            g = f32::cast_from(gamma[col]);
            b = f32::cast_from(beta[col]);
        }
    }
    let mut p1 = f32::new(0.0);
    let mut p2 = f32::new(0.0);
    if live {
        for k in 0..steps {
            let r = k * rs + ry;
            if r < n {
                let i = r * c + col;
                let h = f32::cast_from(xhat[i]);
                let mut d = f32::cast_from(dy[i]);
                if relu {
                    if h * g + b <= f32::new(0.0) {
                        d = f32::new(0.0);
                    }
                }
                p1 += d;
                p2 += d * h;
            }
        }
    }
    let s1 = col_sum(p1, &mut shared, rs);
    let s2 = col_sum(p2, &mut shared, rs);
    if live {
        let inv_n = f32::new(1.0) / f32::cast_from(n);
        let scale = f32::cast_from(rstd[col]) * g;
        let (m1, m2) = (s1 * inv_n, s2 * inv_n);
        for k in 0..steps {
            let r = k * rs + ry;
            if r < n {
                let i = r * c + col;
                let h = f32::cast_from(xhat[i]);
                let mut d = f32::cast_from(dy[i]);
                if relu {
                    if h * g + b <= f32::new(0.0) {
                        d = f32::new(0.0);
                    }
                }
                dx[i] = E::cast_from(scale * (d - m1 - h * m2));
            }
        }
        if ry == 0 {
            dgamma[col] = E::cast_from(s2);
            dbeta[col] = E::cast_from(s1);
        }
    }
}

/// MAE's per-patch target normalisation `(x − μ)/√(s² + ε)` over each row of `d`, `s²` the
/// unbiased variance; one cube of `w` units per row, as [`layer_norm_kernel`].
#[cube(launch)]
fn patch_norm_kernel<E: Float>(
    x: &Array<E>,
    y: &mut Array<E>,
    rows: usize,
    d: usize,
    eps: f32,
    #[comptime] w: usize,
    #[define(E)] _dtype: StorageType,
) {
    let row = CUBE_POS;
    if row >= rows {
        terminate!();
    }
    let mut shared = SharedMemory::<f32>::new(w);
    let (u, base, steps) = (UNIT_POS as usize, row * d, d.div_ceil(w));
    let mut part = f32::new(0.0);
    for k in 0..steps {
        let i = k * w + u;
        if i < d {
            part += f32::cast_from(x[base + i]);
        }
    }
    let mean = cube_sum(part, &mut shared, w) / f32::cast_from(d);
    let mut part = f32::new(0.0);
    for k in 0..steps {
        let i = k * w + u;
        if i < d {
            let c = f32::cast_from(x[base + i]) - mean;
            part += c * c;
        }
    }
    let var = cube_sum(part, &mut shared, w) / f32::cast_from(d - 1);
    let r = f32::new(1.0) / f32::sqrt(var + eps);
    for k in 0..steps {
        let i = k * w + u;
        if i < d {
            y[base + i] = E::cast_from((f32::cast_from(x[base + i]) - mean) * r);
        }
    }
}

/// Each row of `x` (`[rows, d]`) over its L2 norm clamped below by `eps` (torch's
/// `F.normalize`): `y = x·r`, `r = 1/√max(Σx², eps²)`, keeping `info = [r, clamped]` per row
/// for the backward step. One cube of `w` units per row, as [`layer_norm_kernel`].
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn l2norm_kernel<E: Float>(
    x: &Array<E>,
    y: &mut Array<E>,
    info: &mut Array<E>,
    rows: usize,
    d: usize,
    eps: f32,
    #[comptime] w: usize,
    #[define(E)] _dtype: StorageType,
) {
    let row = CUBE_POS;
    if row >= rows {
        terminate!();
    }
    let mut shared = SharedMemory::<f32>::new(w);
    let (u, base, steps) = (UNIT_POS as usize, row * d, d.div_ceil(w));
    let mut part = f32::new(0.0);
    for k in 0..steps {
        let i = k * w + u;
        if i < d {
            let v = f32::cast_from(x[base + i]);
            part += v * v;
        }
    }
    let ss = cube_sum(part, &mut shared, w);
    let floor = eps * eps;
    let r = f32::new(1.0) / f32::sqrt(f32::max(ss, floor));
    for k in 0..steps {
        let i = k * w + u;
        if i < d {
            y[base + i] = E::cast_from(f32::cast_from(x[base + i]) * r);
        }
    }
    if u == 0 {
        info[2 * row] = E::cast_from(r);
        let mut clamped = f32::new(0.0);
        if ss < floor {
            clamped = f32::new(1.0);
        }
        info[2 * row + 1] = E::cast_from(clamped);
    }
}

/// The L2 normalisation's backward step, as [`l2norm_kernel`]: `dx = r·(dy − y·Σ(dy·y))`, or
/// `r·dy` where the norm was clamped (a constant there).
#[cube(launch)]
fn l2norm_dx_kernel<E: Float>(
    dy: &Array<E>,
    y: &Array<E>,
    info: &Array<E>,
    dx: &mut Array<E>,
    rows: usize,
    d: usize,
    #[comptime] w: usize,
    #[define(E)] _dtype: StorageType,
) {
    let row = CUBE_POS;
    if row >= rows {
        terminate!();
    }
    let mut shared = SharedMemory::<f32>::new(w);
    let (u, base, steps) = (UNIT_POS as usize, row * d, d.div_ceil(w));
    let mut part = f32::new(0.0);
    for k in 0..steps {
        let i = k * w + u;
        if i < d {
            part += f32::cast_from(dy[base + i]) * f32::cast_from(y[base + i]);
        }
    }
    let mut dot = cube_sum(part, &mut shared, w);
    let r = f32::cast_from(info[2 * row]);
    if f32::cast_from(info[2 * row + 1]) > f32::new(0.5) {
        dot = f32::new(0.0);
    }
    for k in 0..steps {
        let i = k * w + u;
        if i < d {
            let g = f32::cast_from(dy[base + i]) - f32::cast_from(y[base + i]) * dot;
            dx[base + i] = E::cast_from(r * g);
        }
    }
}

/// The contrastive losses' cross-entropy on cosine logits `s` (`[rows, cols]`, before the
/// temperature): for row `i`, with logits `s·inv_t` over the columns `j ≠ i` (all columns
/// without `self_mask`), `ℓ_i = logsumexp_j − s_{i,p}·inv_t` for the positive column
/// `p = (i + shift) mod cols`; also keeps each row's `logsumexp`. One cube of `w` units per
/// row, as [`layer_norm_kernel`].
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn contrastive_ce_kernel<E: Float>(
    s: &Array<E>,
    loss: &mut Array<E>,
    lse: &mut Array<E>,
    rows: usize,
    cols: usize,
    shift: usize,
    inv_t: f32,
    #[comptime] w: usize,
    #[comptime] self_mask: bool,
    #[define(E)] _dtype: StorageType,
) {
    let row = CUBE_POS;
    if row >= rows {
        terminate!();
    }
    let mut shared = SharedMemory::<f32>::new(w);
    let (u, base, steps) = (UNIT_POS as usize, row * cols, cols.div_ceil(w));
    // A finite floor: WGSL has no infinite literals.
    let mut part = f32::new(-3.0e38);
    for k in 0..steps {
        let j = k * w + u;
        let mut live = j < cols;
        if self_mask {
            live = live && j != row;
        }
        if live {
            part = f32::max(part, f32::cast_from(s[base + j]) * inv_t);
        }
    }
    let max = cube_max(part, &mut shared, w);
    let mut part = f32::new(0.0);
    for k in 0..steps {
        let j = k * w + u;
        let mut live = j < cols;
        if self_mask {
            live = live && j != row;
        }
        if live {
            part += f32::exp(f32::cast_from(s[base + j]) * inv_t - max);
        }
    }
    let l = max + f32::ln(cube_sum(part, &mut shared, w));
    if u == 0 {
        let pos = (row + shift) % cols;
        lse[row] = E::cast_from(l);
        loss[row] = E::cast_from(l - f32::cast_from(s[base + pos]) * inv_t);
    }
}

/// The gradient of `scale·mean_i ℓ_i` ([`contrastive_ce_kernel`]) in the logits `s`:
/// `dl·scale/rows · (softmax_ij − [j = p_i])·inv_t`, zero on a masked diagonal; `dl` one
/// element. One cube of `w` units per row. (The masked diagonal's gradient would not reach the
/// embeddings anyway: the L2 normalisation's backward step projects it out.)
#[cube(launch)]
// The comptime flag stays in its own `if`: CubeCL resolves it at expansion.
#[allow(clippy::too_many_arguments, clippy::collapsible_if)]
fn contrastive_ce_dx_kernel<E: Float>(
    s: &Array<E>,
    lse: &Array<E>,
    dl: &Array<E>,
    ds: &mut Array<E>,
    rows: usize,
    cols: usize,
    shift: usize,
    inv_t: f32,
    scale: f32,
    #[comptime] w: usize,
    #[comptime] self_mask: bool,
    #[define(E)] _dtype: StorageType,
) {
    let row = CUBE_POS;
    if row >= rows {
        terminate!();
    }
    let (u, base, steps) = (UNIT_POS as usize, row * cols, cols.div_ceil(w));
    let g = f32::cast_from(dl[0]) * scale / f32::cast_from(rows) * inv_t;
    let (l, pos) = (f32::cast_from(lse[row]), (row + shift) % cols);
    for k in 0..steps {
        let j = k * w + u;
        if j < cols {
            let mut p = f32::exp(f32::cast_from(s[base + j]) * inv_t - l);
            if self_mask {
                if j == row {
                    p = f32::new(0.0);
                }
            }
            if j == pos {
                p -= f32::new(1.0);
            }
            ds[base + j] = E::cast_from(g * p);
        }
    }
}

/// Each row's error against the target, `mean_j (p − t)²` (or `|p − t|` with `l1`), one cube
/// of `w` units per row of `d`, as [`layer_norm_kernel`].
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn row_error_kernel<E: Float>(
    pred: &Array<E>,
    target: &Array<E>,
    err: &mut Array<E>,
    rows: usize,
    d: usize,
    #[comptime] w: usize,
    #[comptime] l1: bool,
    #[define(E)] _dtype: StorageType,
) {
    let row = CUBE_POS;
    if row >= rows {
        terminate!();
    }
    let mut shared = SharedMemory::<f32>::new(w);
    let (u, base, steps) = (UNIT_POS as usize, row * d, d.div_ceil(w));
    let mut part = f32::new(0.0);
    for k in 0..steps {
        let i = k * w + u;
        if i < d {
            let e = f32::cast_from(pred[base + i]) - f32::cast_from(target[base + i]);
            if l1 {
                part += f32::abs(e);
            } else {
                part += e * e;
            }
        }
    }
    let total = cube_sum(part, &mut shared, w);
    if u == 0 {
        err[row] = E::cast_from(total / f32::cast_from(d));
    }
}

/// One cube of `w` units: `loss = scale·Σ err·sel / den`, `den = max(Σ sel, f32::MIN_POSITIVE)`
/// (`sel = 1` for every row without `select`), into `loss` and `den` (one element each).
#[cube(launch)]
fn selected_mean_kernel<E: Float>(
    err: &Array<E>,
    select: &Array<E>,
    loss: &mut Array<E>,
    den_out: &mut Array<E>,
    rows: usize,
    scale: f32,
    #[comptime] w: usize,
    #[comptime] selected: bool,
    #[define(E)] _dtype: StorageType,
) {
    let mut shared = SharedMemory::<f32>::new(w);
    let (u, steps) = (UNIT_POS as usize, rows.div_ceil(w));
    let mut num = f32::new(0.0);
    let mut den = f32::new(0.0);
    for k in 0..steps {
        let i = k * w + u;
        if i < rows {
            let mut s = f32::new(1.0);
            if selected {
                s = f32::cast_from(select[i]);
            }
            num += f32::cast_from(err[i]) * s;
            den += s;
        }
    }
    let num = cube_sum(num, &mut shared, w);
    let den = f32::max(cube_sum(den, &mut shared, w), f32::new(f32::MIN_POSITIVE));
    if u == 0 {
        loss[0] = E::cast_from(num / den * scale);
        den_out[0] = E::cast_from(den);
    }
}

/// The gradient of [`selected_mean_kernel`]'s loss in `pred`: `dl·sel/den · 2(p − t)/d` (or
/// `sign(p − t)/d` with `l1`; `sign(0) = 0`), `dl` and `den` one element each.
/// One unit per element.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn row_error_dx_kernel<E: Float>(
    pred: &Array<E>,
    target: &Array<E>,
    select: &Array<E>,
    dl: &Array<E>,
    den: &Array<E>,
    dpred: &mut Array<E>,
    n: usize,
    d: usize,
    #[comptime] selected: bool,
    #[comptime] l1: bool,
    #[define(E)] _dtype: StorageType,
) {
    let i = ABSOLUTE_POS;
    if i >= n {
        terminate!();
    }
    let mut scale = f32::cast_from(dl[0]) / (f32::cast_from(den[0]) * f32::cast_from(d));
    if selected {
        scale *= f32::cast_from(select[i / d]);
    }
    let e = f32::cast_from(pred[i]) - f32::cast_from(target[i]);
    let mut g = f32::new(2.0) * e;
    if l1 {
        g = f32::new(0.0);
        if e > f32::new(0.0) {
            g = f32::new(1.0);
        }
        if e < f32::new(0.0) {
            g = f32::new(-1.0);
        }
    }
    dpred[i] = E::cast_from(scale * g);
}

#[cube(launch)]
fn gelu_kernel<E: Float>(
    x: &Array<E>,
    y: &mut Array<E>,
    phi: &mut Array<E>,
    n: usize,
    #[define(E)] _dtype: StorageType,
) {
    let i = ABSOLUTE_POS;
    if i >= n {
        terminate!();
    }
    let v = f32::cast_from(x[i]);
    let p =
        f32::new(0.5) * (f32::new(1.0) + Erf::erf(v * f32::new(core::f32::consts::FRAC_1_SQRT_2)));
    phi[i] = E::cast_from(p);
    y[i] = E::cast_from(v * p);
}

/// GELU of `h + b` (`b` broadcast over the rows of `width`), also keeping the sum `x` and
/// `Φ(x)` for the backward step. One unit per element.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn bias_gelu_kernel<E: Float>(
    h: &Array<E>,
    b: &Array<E>,
    y: &mut Array<E>,
    x: &mut Array<E>,
    phi: &mut Array<E>,
    n: usize,
    width: usize,
    #[define(E)] _dtype: StorageType,
) {
    let i = ABSOLUTE_POS;
    if i >= n {
        terminate!();
    }
    let v = f32::cast_from(h[i]) + f32::cast_from(b[i % width]);
    let p =
        f32::new(0.5) * (f32::new(1.0) + Erf::erf(v * f32::new(core::f32::consts::FRAC_1_SQRT_2)));
    x[i] = E::cast_from(v);
    phi[i] = E::cast_from(p);
    y[i] = E::cast_from(v * p);
}

/// The residual add `r + (h + b)` (`b` broadcast over the rows of `width`). One unit per
/// element.
#[cube(launch)]
fn bias_residual_kernel<E: Float>(
    r: &Array<E>,
    h: &Array<E>,
    b: &Array<E>,
    y: &mut Array<E>,
    n: usize,
    width: usize,
    #[define(E)] _dtype: StorageType,
) {
    let i = ABSOLUTE_POS;
    if i >= n {
        terminate!();
    }
    let v = f32::cast_from(h[i]) + f32::cast_from(b[i % width]);
    y[i] = E::cast_from(f32::cast_from(r[i]) + v);
}

#[cube(launch)]
fn gelu_dx_kernel<E: Float>(
    dy: &Array<E>,
    x: &Array<E>,
    phi: &Array<E>,
    dx: &mut Array<E>,
    n: usize,
    #[define(E)] _dtype: StorageType,
) {
    let i = ABSOLUTE_POS;
    if i >= n {
        terminate!();
    }
    let v = f32::cast_from(x[i]);
    // φ(x) = e^{−x²/2}/√(2π)
    let pdf = f32::exp(v * v * f32::new(-0.5)) * f32::new(0.398_942_3);
    dx[i] = E::cast_from(f32::cast_from(dy[i]) * (v * pdf + f32::cast_from(phi[i])));
}

/// One cube of `w` units per row of `len` scores, as [`layer_norm_kernel`].
#[cube(launch)]
fn softmax_kernel<E: Float>(
    s: &Array<E>,
    p: &mut Array<E>,
    rows: usize,
    len: usize,
    scale: f32,
    #[comptime] w: usize,
    #[define(E)] _dtype: StorageType,
) {
    let row = CUBE_POS;
    if row >= rows {
        terminate!();
    }
    let mut shared = SharedMemory::<f32>::new(w);
    let (u, base, steps) = (UNIT_POS as usize, row * len, len.div_ceil(w));
    // A finite floor: WGSL has no infinite literals.
    let mut part = f32::new(-3.0e38);
    for k in 0..steps {
        let i = k * w + u;
        if i < len {
            part = f32::max(part, f32::cast_from(s[base + i]) * scale);
        }
    }
    let max = cube_max(part, &mut shared, w);
    let mut part = f32::new(0.0);
    for k in 0..steps {
        let i = k * w + u;
        if i < len {
            part += f32::exp(f32::cast_from(s[base + i]) * scale - max);
        }
    }
    let inv = f32::new(1.0) / cube_sum(part, &mut shared, w);
    for k in 0..steps {
        let i = k * w + u;
        if i < len {
            p[base + i] = E::cast_from(f32::exp(f32::cast_from(s[base + i]) * scale - max) * inv);
        }
    }
}

/// `[B, T, S, H, dh]` → `[S, B, H, T, dh]` (the heads of a packed `qkv`, or of an attention
/// output's gradient with `S = 1`): one unit per element.
#[cube(launch)]
fn split_heads_kernel<E: Float>(
    x: &Array<E>,
    out: &mut Array<E>,
    b: usize,
    t: usize,
    s: usize,
    h: usize,
    dh: usize,
    #[define(E)] _dtype: StorageType,
) {
    let i = ABSOLUTE_POS;
    if i >= b * t * s * h * dh {
        terminate!();
    }
    let e = i % dh;
    let r = i / dh;
    let head = r % h;
    let r = r / h;
    let part = r % s;
    let r = r / s;
    let tok = r % t;
    let img = r / t;
    out[(((part * b + img) * h + head) * t + tok) * dh + e] = x[i];
}

/// `dq`, `dk`, `dv` (`[B, H, T, dh]` each) → `dqkv` `[B, T, 3, H, dh]`: one unit per element.
#[cube(launch)]
fn pack_heads_kernel<E: Float>(
    dq: &Array<E>,
    dk: &Array<E>,
    dv: &Array<E>,
    out: &mut Array<E>,
    b: usize,
    t: usize,
    h: usize,
    dh: usize,
    #[define(E)] _dtype: StorageType,
) {
    let i = ABSOLUTE_POS;
    if i >= b * t * 3 * h * dh {
        terminate!();
    }
    let e = i % dh;
    let r = i / dh;
    let head = r % h;
    let r = r / h;
    let part = r % 3;
    let r = r / 3;
    let tok = r % t;
    let img = r / t;
    let src = ((img * h + head) * t + tok) * dh + e;
    if part == 0 {
        out[i] = dq[src];
    } else if part == 1 {
        out[i] = dk[src];
    } else {
        out[i] = dv[src];
    }
}

/// The softmax's backward step `dS = P ⊙ (dP − rowsum(dP ⊙ P))·scale`, one cube of `w` units
/// per row of `len`, as [`layer_norm_kernel`].
#[cube(launch)]
fn softmax_dx_kernel<E: Float>(
    p: &Array<E>,
    dp: &Array<E>,
    ds: &mut Array<E>,
    rows: usize,
    len: usize,
    scale: f32,
    #[comptime] w: usize,
    #[define(E)] _dtype: StorageType,
) {
    let row = CUBE_POS;
    if row >= rows {
        terminate!();
    }
    let mut shared = SharedMemory::<f32>::new(w);
    let (u, base, steps) = (UNIT_POS as usize, row * len, len.div_ceil(w));
    let mut part = f32::new(0.0);
    for k in 0..steps {
        let i = k * w + u;
        if i < len {
            part += f32::cast_from(dp[base + i]) * f32::cast_from(p[base + i]);
        }
    }
    let dot = cube_sum(part, &mut shared, w);
    for k in 0..steps {
        let i = k * w + u;
        if i < len {
            let pi = f32::cast_from(p[base + i]);
            ds[base + i] = E::cast_from(pi * (f32::cast_from(dp[base + i]) - dot) * scale);
        }
    }
}

/// One AdamW step (Burn's `AdamW` arithmetic, in f32) of flat weights `p` with gradient `g` and
/// moments `m1`, `m2`: `m1' = β₁m1 + (1 − β₁)g`, `m2' = β₂m2 + (1 − β₂)g²`,
/// `p' = p·k − lr·(m1'/c₁)/(√(m2'/c₂) + ε)` (`k = 1 − lr·λ`, 1 without decay). One unit per
/// element.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn adamw_kernel<E: Float>(
    p: &Array<E>,
    g: &Array<E>,
    m1: &Array<E>,
    m2: &Array<E>,
    p_out: &mut Array<E>,
    m1_out: &mut Array<E>,
    m2_out: &mut Array<E>,
    n: usize,
    beta_1: f32,
    factor_1: f32,
    beta_2: f32,
    factor_2: f32,
    correction_1: f32,
    correction_2: f32,
    epsilon: f32,
    lr: f32,
    keep: f32,
    #[define(E)] _dtype: StorageType,
) {
    let i = ABSOLUTE_POS;
    if i >= n {
        terminate!();
    }
    let gi = f32::cast_from(g[i]);
    let a = f32::cast_from(m1[i]) * beta_1 + gi * factor_1;
    let b = f32::cast_from(m2[i]) * beta_2 + gi * gi * factor_2;
    let delta = (a / correction_1) / (f32::sqrt(b / correction_2) + epsilon);
    m1_out[i] = E::cast_from(a);
    m2_out[i] = E::cast_from(b);
    p_out[i] = E::cast_from(f32::cast_from(p[i]) * keep - delta * lr);
}

/// Up to eight 1-D tensors laid end to end into `out[base..]`, each followed by zeros up to
/// its padded length: piece `j` (`l_j` values) fills `[s_j, s_{j+1})` of the launch's range
/// (`s_0 = 0`). One unit per element written.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn gather_kernel<E: Float>(
    a0: &Array<E>,
    a1: &Array<E>,
    a2: &Array<E>,
    a3: &Array<E>,
    a4: &Array<E>,
    a5: &Array<E>,
    a6: &Array<E>,
    a7: &Array<E>,
    out: &mut Array<E>,
    base: usize,
    l0: usize,
    l1: usize,
    l2: usize,
    l3: usize,
    l4: usize,
    l5: usize,
    l6: usize,
    l7: usize,
    s1: usize,
    s2: usize,
    s3: usize,
    s4: usize,
    s5: usize,
    s6: usize,
    s7: usize,
    s8: usize,
    #[define(E)] _dtype: StorageType,
) {
    let i = ABSOLUTE_POS;
    if i >= s8 {
        terminate!();
    }
    let mut v = E::from_int(0);
    if i < s1 {
        if i < l0 {
            v = a0[i];
        }
    } else if i < s2 {
        let k = i - s1;
        if k < l1 {
            v = a1[k];
        }
    } else if i < s3 {
        let k = i - s2;
        if k < l2 {
            v = a2[k];
        }
    } else if i < s4 {
        let k = i - s3;
        if k < l3 {
            v = a3[k];
        }
    } else if i < s5 {
        let k = i - s4;
        if k < l4 {
            v = a4[k];
        }
    } else if i < s6 {
        let k = i - s5;
        if k < l5 {
            v = a5[k];
        }
    } else if i < s7 {
        let k = i - s6;
        if k < l6 {
            v = a6[k];
        }
    } else {
        let k = i - s7;
        if k < l7 {
            v = a7[k];
        }
    }
    out[base + i] = v;
}

/// The EMA step `o_j = t_j·m + s_j·a` (`a = 1 − m`) of up to four teacher tensors `t_j`
/// towards their sources `s_j`: tensor `j` is units `[e_j, e_{j+1})` (`e_0 = 0`).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn ema_kernel<E: Float>(
    t0: &Array<E>,
    t1: &Array<E>,
    t2: &Array<E>,
    t3: &Array<E>,
    s0: &Array<E>,
    s1: &Array<E>,
    s2: &Array<E>,
    s3: &Array<E>,
    o0: &mut Array<E>,
    o1: &mut Array<E>,
    o2: &mut Array<E>,
    o3: &mut Array<E>,
    e1: usize,
    e2: usize,
    e3: usize,
    e4: usize,
    m: f32,
    a: f32,
    #[define(E)] _dtype: StorageType,
) {
    let i = ABSOLUTE_POS;
    if i >= e4 {
        terminate!();
    }
    let (m, a) = (E::cast_from(m), E::cast_from(a));
    if i < e1 {
        o0[i] = t0[i] * m + s0[i] * a;
    } else if i < e2 {
        let k = i - e1;
        o1[k] = t1[k] * m + s1[k] * a;
    } else if i < e3 {
        let k = i - e2;
        o2[k] = t2[k] * m + s2[k] * a;
    } else {
        let k = i - e3;
        o3[k] = t3[k] * m + s3[k] * a;
    }
}

/// `out[flat[r]] = r` for each of the `m` entries of `flat` (distinct row indices into `out`),
/// one unit each; `out` keeps its other values.
#[cube(launch)]
fn inverse_rows_kernel(flat: &Array<i32>, out: &mut Array<i32>, m: usize) {
    let r = ABSOLUTE_POS;
    if r >= m {
        terminate!();
    }
    let to = usize::cast_from(flat[r]);
    out[to] = i32::cast_from(r);
}

/// The backend's primitive of `t`, as runtime `R`'s `CubeTensor` (the caller checked the type),
/// made contiguous.
fn cube<B: Backend, R: CubeRuntime, const D: usize>(t: &Tensor<B, D>) -> CubeTensor<R> {
    let p: B::FloatTensorPrimitive = t.clone().into_primitive().tensor();
    let boxed: Box<dyn Any> = Box::new(p);
    into_contiguous(
        *boxed
            .downcast::<CubeTensor<R>>()
            .unwrap_or_else(|_| unreachable!("cube: the backend was checked to be CubeCL's")),
    )
}

/// The backend's primitive of the integer tensor `t`, as runtime `R`'s `CubeTensor` (the
/// caller checked the type), made contiguous.
fn cube_int<B: Backend, R: CubeRuntime, const D: usize>(t: &Tensor<B, D, Int>) -> CubeTensor<R> {
    let boxed: Box<dyn Any> = Box::new(t.clone().into_primitive());
    into_contiguous(
        *boxed
            .downcast::<CubeTensor<R>>()
            .unwrap_or_else(|_| unreachable!("cube_int: the backend was checked to be CubeCL's")),
    )
}

/// `t` back as a tensor of backend `B`.
fn tensor<B: Backend, R: CubeRuntime, const D: usize>(t: CubeTensor<R>) -> Tensor<B, D> {
    let boxed: Box<dyn Any> = Box::new(t);
    let p = *boxed
        .downcast::<B::FloatTensorPrimitive>()
        .unwrap_or_else(|_| unreachable!("tensor: the backend was checked to be CubeCL's"));
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

/// An uninitialised contiguous (row-major, unpadded) tensor like `t` with `shape`, the layout
/// every kernel here writes. Not Burn's `empty_device_dtype`: on CUDA that pads each row to a
/// pitch of up to 512 bytes (`[rows, 192]` f32 gets a row stride of 256), so a kernel writing
/// `row·d + i` would leave the tensor's metadata pointing at the wrong elements (the NaN losses
/// of the first H100 lease, BENCHMARKS.md). Filled with NaN instead when
/// `CANC_POISON_OUTPUTS=1` (read once), so that a test shows any element a kernel left
/// unwritten (wgpu zeroes new buffers, CUDA does not).
fn empty<R: CubeRuntime>(t: &CubeTensor<R>, shape: Shape) -> CubeTensor<R> {
    static POISON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *POISON.get_or_init(|| crate::backend::env_switch("CANC_POISON_OUTPUTS").unwrap_or(false)) {
        let nan = InputScalar::new(f32::NAN, t.dtype);
        let full = full_device_dtype(t.client.clone(), shape, t.device.clone(), nan, t.dtype);
        return into_contiguous(full);
    }
    empty_device_contiguous_dtype(t.client.clone(), t.device.clone(), shape, t.dtype)
}

/// A 1-D launch of `units` units.
fn grid<R: CubeRuntime>(t: &CubeTensor<R>, units: usize) -> (CubeCount, CubeDim) {
    let dim = CubeDim::new(&t.client, units);
    (calculate_cube_count_elemwise(&t.client, units, dim), dim)
}

/// The units per row for rows of `len` (32, 64 or 128: about four values a unit, at most 128).
fn row_width(len: usize) -> usize {
    (len / 4).next_power_of_two().clamp(32, 128)
}

/// A launch of one cube of `w` units per row, `rows` rows.
fn row_grid<R: CubeRuntime>(t: &CubeTensor<R>, rows: usize, w: usize) -> (CubeCount, CubeDim) {
    let dim = CubeDim::new_1d(w as u32);
    (calculate_cube_count_elemwise(&t.client, rows * w, dim), dim)
}

/// [`super::cube::layer_norm`] on runtime `R` (the caller checked that `B` is its backend).
pub(super) fn layer_norm_on<B: Backend, R: CubeRuntime>(
    x: &Tensor<B, 2>,
    gamma: &Tensor<B, 1>,
    beta: &Tensor<B, 1>,
    eps: f64,
) -> (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 2>) {
    let [rows, d] = x.dims();
    let (x, g, b) = (
        cube::<B, R, 2>(x),
        cube::<B, R, 1>(gamma),
        cube::<B, R, 1>(beta),
    );
    let dtype = x.dtype;
    let y = empty(&x, Shape::new([rows, d]));
    let xhat = empty(&x, Shape::new([rows, d]));
    let rstd = empty(&x, Shape::new([rows, 1]));
    let w = row_width(d);
    let (count, dim) = row_grid(&x, rows, w);
    layer_norm_kernel::launch(
        &x.client,
        count,
        dim,
        x.clone().into_array_arg(),
        g.into_array_arg(),
        b.into_array_arg(),
        y.clone().into_array_arg(),
        xhat.clone().into_array_arg(),
        rstd.clone().into_array_arg(),
        rows,
        d,
        eps as f32,
        w,
        dtype.into(),
    );
    (tensor(y), tensor(xhat), tensor(rstd))
}

/// [`super::cube::layer_norm_dx`] on runtime `R` (the caller checked that `B` is its backend).
pub(super) fn layer_norm_dx_on<B: Backend, R: CubeRuntime>(
    dy: &Tensor<B, 2>,
    xhat: &Tensor<B, 2>,
    rstd: &Tensor<B, 2>,
    gamma: &Tensor<B, 1>,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let [rows, d] = dy.dims();
    let (dy, xhat) = (cube::<B, R, 2>(dy), cube::<B, R, 2>(xhat));
    let (rstd, g) = (cube::<B, R, 2>(rstd), cube::<B, R, 1>(gamma));
    let dtype = dy.dtype;
    let dx = empty(&dy, Shape::new([rows, d]));
    let sums = empty(&dy, Shape::new([rows, 2 * d]));
    let w = row_width(d);
    let (count, dim) = row_grid(&dy, rows, w);
    layer_norm_dx_kernel::launch(
        &dy.client,
        count,
        dim,
        dy.clone().into_array_arg(),
        xhat.into_array_arg(),
        rstd.into_array_arg(),
        g.into_array_arg(),
        dx.clone().into_array_arg(),
        sums.clone().into_array_arg(),
        rows,
        d,
        w,
        dtype.into(),
    );
    (tensor(dx), tensor(sums))
}

/// [`super::cube::gelu`] on runtime `R` (the caller checked that `B` is its backend).
/// Row groups per BatchNorm cube for a batch of `n`: up to 8 (256 units), fewer for small
/// batches.
fn row_groups(n: usize) -> usize {
    (n / 8).next_power_of_two().clamp(1, 8)
}

fn column_grid(c: usize, rs: usize) -> (CubeCount, CubeDim) {
    let cubes = c.div_ceil(COLS) as u32;
    (
        CubeCount::Static(cubes, 1, 1),
        CubeDim::new_2d(COLS as u32, rs as u32),
    )
}

/// [`super::cube::batch_norm`] on runtime `R` (the caller checked that `B` is its backend).
pub(super) fn batch_norm_on<B: Backend, R: CubeRuntime>(
    x: &Tensor<B, 2>,
    affine: super::cube::Affine<'_, B>,
    running: (&Tensor<B, 1>, &Tensor<B, 1>),
    eps: f64,
    momentum: f64,
    relu: bool,
) -> super::cube::BatchNormOut<B> {
    let [n, c] = x.dims();
    let x = cube::<B, R, 2>(x);
    // Without an affine the kernel reads neither: any array stands in.
    let (g, b) = match affine {
        Some((g, b)) => (cube::<B, R, 1>(g), cube::<B, R, 1>(b)),
        None => (x.clone(), x.clone()),
    };
    let (rm, rv) = (cube::<B, R, 1>(running.0), cube::<B, R, 1>(running.1));
    let dtype = x.dtype;
    let y = empty(&x, Shape::new([n, c]));
    let xhat = empty(&x, Shape::new([n, c]));
    let rstd = empty(&x, Shape::new([c]));
    let mean = empty(&x, Shape::new([c]));
    let var = empty(&x, Shape::new([c]));
    let rs = row_groups(n);
    let (count, dim) = column_grid(c, rs);
    batch_norm_kernel::launch(
        &x.client,
        count,
        dim,
        x.clone().into_array_arg(),
        g.into_array_arg(),
        b.into_array_arg(),
        rm.into_array_arg(),
        rv.into_array_arg(),
        y.clone().into_array_arg(),
        xhat.clone().into_array_arg(),
        rstd.clone().into_array_arg(),
        mean.clone().into_array_arg(),
        var.clone().into_array_arg(),
        n,
        c,
        eps as f32,
        momentum as f32,
        rs,
        affine.is_some(),
        relu,
        dtype.into(),
    );
    super::cube::BatchNormOut {
        y: tensor(y),
        xhat: tensor(xhat),
        rstd: tensor(rstd),
        running_mean: tensor(mean),
        running_var: tensor(var),
    }
}

/// [`super::cube::batch_norm_dx`] on runtime `R` (the caller checked that `B` is its backend).
pub(super) fn batch_norm_dx_on<B: Backend, R: CubeRuntime>(
    dy: &Tensor<B, 2>,
    xhat: &Tensor<B, 2>,
    rstd: &Tensor<B, 1>,
    affine: super::cube::Affine<'_, B>,
    relu: bool,
) -> (Tensor<B, 2>, Tensor<B, 1>, Tensor<B, 1>) {
    let [n, c] = dy.dims();
    let (dy, xhat, rstd) = (
        cube::<B, R, 2>(dy),
        cube::<B, R, 2>(xhat),
        cube::<B, R, 1>(rstd),
    );
    let (g, b) = match affine {
        Some((g, b)) => (cube::<B, R, 1>(g), cube::<B, R, 1>(b)),
        None => (rstd.clone(), rstd.clone()),
    };
    let dtype = dy.dtype;
    let dx = empty(&dy, Shape::new([n, c]));
    let dgamma = empty(&dy, Shape::new([c]));
    let dbeta = empty(&dy, Shape::new([c]));
    let rs = row_groups(n);
    let (count, dim) = column_grid(c, rs);
    batch_norm_dx_kernel::launch(
        &dy.client,
        count,
        dim,
        dy.clone().into_array_arg(),
        xhat.into_array_arg(),
        rstd.into_array_arg(),
        g.into_array_arg(),
        b.into_array_arg(),
        dx.clone().into_array_arg(),
        dgamma.clone().into_array_arg(),
        dbeta.clone().into_array_arg(),
        n,
        c,
        rs,
        affine.is_some(),
        relu,
        dtype.into(),
    );
    (tensor(dx), tensor(dgamma), tensor(dbeta))
}

/// [`super::cube::patch_norm`] on runtime `R` (the caller checked that `B` is its backend).
pub(super) fn patch_norm_on<B: Backend, R: CubeRuntime>(
    x: &Tensor<B, 2>,
    eps: f64,
) -> Tensor<B, 2> {
    let [rows, d] = x.dims();
    let x = cube::<B, R, 2>(x);
    let dtype = x.dtype;
    let y = empty(&x, Shape::new([rows, d]));
    let w = row_width(d);
    let (count, dim) = row_grid(&x, rows, w);
    patch_norm_kernel::launch(
        &x.client,
        count,
        dim,
        x.clone().into_array_arg(),
        y.clone().into_array_arg(),
        rows,
        d,
        eps as f32,
        w,
        dtype.into(),
    );
    tensor(y)
}

/// [`super::cube::patch_error`] on runtime `R` (the caller checked that `B` is its backend).
pub(super) fn patch_error_on<B: Backend, R: CubeRuntime>(
    pred: &Tensor<B, 2>,
    target: &Tensor<B, 2>,
    select: Option<&Tensor<B, 1>>,
    l1: bool,
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let [rows, d] = pred.dims();
    let (p, t) = (cube::<B, R, 2>(pred), cube::<B, R, 2>(target));
    let dtype = p.dtype;
    let err = empty(&p, Shape::new([rows]));
    let w = row_width(d);
    let (count, dim) = row_grid(&p, rows, w);
    row_error_kernel::launch(
        &p.client,
        count,
        dim,
        p.clone().into_array_arg(),
        t.into_array_arg(),
        err.clone().into_array_arg(),
        rows,
        d,
        w,
        l1,
        dtype.into(),
    );
    let (loss, den) = selected_mean(err, select.map(cube::<B, R, 1>), 1.0);
    (tensor(loss), tensor(den))
}

/// `scale·Σ err·sel / max(Σ sel, f32::MIN_POSITIVE)` over a flat `err` (`sel = 1` without
/// `select`) and the denominator, `[1]` each: one launch of a single cube.
fn selected_mean<R: CubeRuntime>(
    err: CubeTensor<R>,
    select: Option<CubeTensor<R>>,
    scale: f64,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let rows = err.meta.num_elements();
    let dtype = err.dtype;
    let (loss, den) = (empty(&err, Shape::new([1])), empty(&err, Shape::new([1])));
    let selected = select.is_some();
    // Without a selection the kernel reads none: any array stands in.
    let sel = select.unwrap_or_else(|| err.clone());
    let w = 256;
    selected_mean_kernel::launch(
        &err.client,
        CubeCount::Static(1, 1, 1),
        CubeDim::new_1d(w as u32),
        err.clone().into_array_arg(),
        sel.into_array_arg(),
        loss.clone().into_array_arg(),
        den.clone().into_array_arg(),
        rows,
        scale as f32,
        w,
        selected,
        dtype.into(),
    );
    (loss, den)
}

/// [`super::cube::l2norm`] on runtime `R` (the caller checked that `B` is its backend).
pub(super) fn l2norm_on<B: Backend, R: CubeRuntime>(
    x: &Tensor<B, 2>,
    eps: f64,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let [rows, d] = x.dims();
    let x = cube::<B, R, 2>(x);
    let dtype = x.dtype;
    let y = empty(&x, Shape::new([rows, d]));
    let info = empty(&x, Shape::new([rows, 2]));
    let w = row_width(d);
    let (count, dim) = row_grid(&x, rows, w);
    l2norm_kernel::launch(
        &x.client,
        count,
        dim,
        x.clone().into_array_arg(),
        y.clone().into_array_arg(),
        info.clone().into_array_arg(),
        rows,
        d,
        eps as f32,
        w,
        dtype.into(),
    );
    (tensor(y), tensor(info))
}

/// [`super::cube::l2norm_dx`] on runtime `R` (the caller checked that `B` is its backend).
pub(super) fn l2norm_dx_on<B: Backend, R: CubeRuntime>(
    dy: &Tensor<B, 2>,
    y: &Tensor<B, 2>,
    info: &Tensor<B, 2>,
) -> Tensor<B, 2> {
    let [rows, d] = dy.dims();
    let (dy, y, info) = (
        cube::<B, R, 2>(dy),
        cube::<B, R, 2>(y),
        cube::<B, R, 2>(info),
    );
    let dtype = dy.dtype;
    let dx = empty(&dy, Shape::new([rows, d]));
    let w = row_width(d);
    let (count, dim) = row_grid(&dy, rows, w);
    l2norm_dx_kernel::launch(
        &dy.client,
        count,
        dim,
        dy.clone().into_array_arg(),
        y.into_array_arg(),
        info.into_array_arg(),
        dx.clone().into_array_arg(),
        rows,
        d,
        w,
        dtype.into(),
    );
    tensor(dx)
}

/// [`super::cube::contrastive_ce`] on runtime `R` (the caller checked that `B` is its backend).
pub(super) fn contrastive_ce_on<B: Backend, R: CubeRuntime>(
    s: &Tensor<B, 2>,
    ce: super::cube::Ce,
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let [rows, cols] = s.dims();
    let s = cube::<B, R, 2>(s);
    let dtype = s.dtype;
    let (loss, lse) = (empty(&s, Shape::new([rows])), empty(&s, Shape::new([rows])));
    let w = row_width(cols);
    let (count, dim) = row_grid(&s, rows, w);
    contrastive_ce_kernel::launch(
        &s.client,
        count,
        dim,
        s.clone().into_array_arg(),
        loss.clone().into_array_arg(),
        lse.clone().into_array_arg(),
        rows,
        cols,
        ce.shift,
        (1.0 / ce.temperature) as f32,
        w,
        ce.self_mask,
        dtype.into(),
    );
    let (mean, _) = selected_mean(loss, None, ce.scale);
    (tensor(mean), tensor(lse))
}

/// [`super::cube::contrastive_ce_dx`] on runtime `R` (the caller checked that `B` is its
/// backend).
pub(super) fn contrastive_ce_dx_on<B: Backend, R: CubeRuntime>(
    s: &Tensor<B, 2>,
    lse: &Tensor<B, 1>,
    dl: &Tensor<B, 1>,
    ce: super::cube::Ce,
) -> Tensor<B, 2> {
    let [rows, cols] = s.dims();
    let (s, lse, dl) = (
        cube::<B, R, 2>(s),
        cube::<B, R, 1>(lse),
        cube::<B, R, 1>(dl),
    );
    let dtype = s.dtype;
    let ds = empty(&s, Shape::new([rows, cols]));
    let w = row_width(cols);
    let (count, dim) = row_grid(&s, rows, w);
    contrastive_ce_dx_kernel::launch(
        &s.client,
        count,
        dim,
        s.clone().into_array_arg(),
        lse.into_array_arg(),
        dl.into_array_arg(),
        ds.clone().into_array_arg(),
        rows,
        cols,
        ce.shift,
        (1.0 / ce.temperature) as f32,
        ce.scale as f32,
        w,
        ce.self_mask,
        dtype.into(),
    );
    tensor(ds)
}

/// [`super::cube::patch_error_dx`] on runtime `R` (the caller checked that `B` is its backend).
pub(super) fn patch_error_dx_on<B: Backend, R: CubeRuntime>(
    pred: &Tensor<B, 2>,
    target: &Tensor<B, 2>,
    select: Option<&Tensor<B, 1>>,
    (dl, den): (&Tensor<B, 1>, &Tensor<B, 1>),
    l1: bool,
) -> Tensor<B, 2> {
    let [rows, d] = pred.dims();
    let (p, t) = (cube::<B, R, 2>(pred), cube::<B, R, 2>(target));
    let (dl, den) = (cube::<B, R, 1>(dl), cube::<B, R, 1>(den));
    let sel = select.map_or_else(|| den.clone(), cube::<B, R, 1>);
    let dtype = p.dtype;
    let dp = empty(&p, Shape::new([rows, d]));
    let (count, dim) = grid(&p, rows * d);
    row_error_dx_kernel::launch(
        &p.client,
        count,
        dim,
        p.clone().into_array_arg(),
        t.into_array_arg(),
        sel.into_array_arg(),
        dl.into_array_arg(),
        den.into_array_arg(),
        dp.clone().into_array_arg(),
        rows * d,
        d,
        select.is_some(),
        l1,
        dtype.into(),
    );
    tensor(dp)
}

pub(super) fn gelu_on<B: Backend, R: CubeRuntime>(
    x: &Tensor<B, 1>,
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let [n] = x.dims();
    let x = cube::<B, R, 1>(x);
    let dtype = x.dtype;
    let (y, phi) = (empty(&x, Shape::new([n])), empty(&x, Shape::new([n])));
    let (count, dim) = grid(&x, n);
    gelu_kernel::launch(
        &x.client,
        count,
        dim,
        x.clone().into_array_arg(),
        y.clone().into_array_arg(),
        phi.clone().into_array_arg(),
        n,
        dtype.into(),
    );
    (tensor(y), tensor(phi))
}

/// [`super::cube::gelu_dx`] on runtime `R` (the caller checked that `B` is its backend).
/// [`super::cube::bias_gelu`] on runtime `R` (the caller checked that `B` is its backend).
pub(super) fn bias_gelu_on<B: Backend, R: CubeRuntime>(
    h: &Tensor<B, 2>,
    b: &Tensor<B, 1>,
) -> [Tensor<B, 2>; 3] {
    let [rows, width] = h.dims();
    let (h, b) = (cube::<B, R, 2>(h), cube::<B, R, 1>(b));
    let dtype = h.dtype;
    let out = || empty(&h, Shape::new([rows, width]));
    let (y, x, phi) = (out(), out(), out());
    let (count, dim) = grid(&h, rows * width);
    bias_gelu_kernel::launch(
        &h.client,
        count,
        dim,
        h.clone().into_array_arg(),
        b.into_array_arg(),
        y.clone().into_array_arg(),
        x.clone().into_array_arg(),
        phi.clone().into_array_arg(),
        rows * width,
        width,
        dtype.into(),
    );
    [tensor(y), tensor(x), tensor(phi)]
}

/// [`super::cube::bias_residual`] on runtime `R` (the caller checked that `B` is its backend).
pub(super) fn bias_residual_on<B: Backend, R: CubeRuntime>(
    r: &Tensor<B, 2>,
    h: &Tensor<B, 2>,
    b: &Tensor<B, 1>,
) -> Tensor<B, 2> {
    let [rows, width] = h.dims();
    let (r, h, b) = (cube::<B, R, 2>(r), cube::<B, R, 2>(h), cube::<B, R, 1>(b));
    let dtype = h.dtype;
    let y = empty(&h, Shape::new([rows, width]));
    let (count, dim) = grid(&h, rows * width);
    bias_residual_kernel::launch(
        &h.client,
        count,
        dim,
        r.into_array_arg(),
        h.clone().into_array_arg(),
        b.into_array_arg(),
        y.clone().into_array_arg(),
        rows * width,
        width,
        dtype.into(),
    );
    tensor(y)
}

pub(super) fn gelu_dx_on<B: Backend, R: CubeRuntime>(
    dy: &Tensor<B, 1>,
    x: &Tensor<B, 1>,
    phi: &Tensor<B, 1>,
) -> Tensor<B, 1> {
    let [n] = dy.dims();
    let (dy, x, phi) = (
        cube::<B, R, 1>(dy),
        cube::<B, R, 1>(x),
        cube::<B, R, 1>(phi),
    );
    let dtype = dy.dtype;
    let dx = empty(&dy, Shape::new([n]));
    let (count, dim) = grid(&dy, n);
    gelu_dx_kernel::launch(
        &dy.client,
        count,
        dim,
        dy.clone().into_array_arg(),
        x.into_array_arg(),
        phi.into_array_arg(),
        dx.clone().into_array_arg(),
        n,
        dtype.into(),
    );
    tensor(dx)
}

/// [`super::cube::softmax`] on runtime `R` (the caller checked that `B` is its backend).
pub(super) fn softmax_on<B: Backend, R: CubeRuntime, const D: usize>(
    s: &Tensor<B, D>,
    scale: f64,
) -> Tensor<B, D> {
    let dims = s.dims();
    let len = dims[D - 1];
    let rows = dims.iter().product::<usize>() / len;
    let s = cube::<B, R, D>(s);
    let dtype = s.dtype;
    let p = empty(&s, Shape::new(dims));
    let w = row_width(len);
    let (count, dim) = row_grid(&s, rows, w);
    softmax_kernel::launch(
        &s.client,
        count,
        dim,
        s.clone().into_array_arg(),
        p.clone().into_array_arg(),
        rows,
        len,
        scale as f32,
        w,
        dtype.into(),
    );
    tensor(p)
}

/// [`super::cube::split_heads`] on runtime `R` (the caller checked that `B` is its backend).
pub(super) fn split_heads_on<B: Backend, R: CubeRuntime>(
    x: &Tensor<B, 3>,
    parts: usize,
    heads: usize,
) -> Tensor<B, 5> {
    let [b, t, width] = x.dims();
    let dh = width / parts / heads;
    let x = cube::<B, R, 3>(x);
    let dtype = x.dtype;
    let out = empty(&x, Shape::new([parts, b, heads, t, dh]));
    let (count, dim) = grid(&x, b * t * width);
    split_heads_kernel::launch(
        &x.client,
        count,
        dim,
        x.clone().into_array_arg(),
        out.clone().into_array_arg(),
        b,
        t,
        parts,
        heads,
        dh,
        dtype.into(),
    );
    tensor(out)
}

/// [`super::cube::pack_heads`] on runtime `R` (the caller checked that `B` is its backend).
pub(super) fn pack_heads_on<B: Backend, R: CubeRuntime>(
    dq: &Tensor<B, 4>,
    dk: &Tensor<B, 4>,
    dv: &Tensor<B, 4>,
) -> Tensor<B, 3> {
    let [b, h, t, dh] = dq.dims();
    let (dq, dk, dv) = (
        cube::<B, R, 4>(dq),
        cube::<B, R, 4>(dk),
        cube::<B, R, 4>(dv),
    );
    let dtype = dq.dtype;
    let out = empty(&dq, Shape::new([b, t, 3 * h * dh]));
    let (count, dim) = grid(&dq, b * t * 3 * h * dh);
    pack_heads_kernel::launch(
        &dq.client,
        count,
        dim,
        dq.clone().into_array_arg(),
        dk.into_array_arg(),
        dv.into_array_arg(),
        out.clone().into_array_arg(),
        b,
        t,
        h,
        dh,
        dtype.into(),
    );
    tensor(out)
}

/// [`super::cube::softmax_dx`] on runtime `R` (the caller checked that `B` is its backend).
pub(super) fn softmax_dx_on<B: Backend, R: CubeRuntime, const D: usize>(
    p: &Tensor<B, D>,
    dp: &Tensor<B, D>,
    scale: f64,
) -> Tensor<B, D> {
    let dims = p.dims();
    let len = dims[D - 1];
    let rows = dims.iter().product::<usize>() / len;
    let (p, dp) = (cube::<B, R, D>(p), cube::<B, R, D>(dp));
    let dtype = p.dtype;
    let ds = empty(&p, Shape::new(dims));
    let w = row_width(len);
    let (count, dim) = row_grid(&p, rows, w);
    softmax_dx_kernel::launch(
        &p.client,
        count,
        dim,
        p.clone().into_array_arg(),
        dp.into_array_arg(),
        ds.clone().into_array_arg(),
        rows,
        len,
        scale as f32,
        w,
        dtype.into(),
    );
    tensor(ds)
}

/// [`super::cube::adamw`] on runtime `R` (the caller checked that `B` is its backend).
pub(super) fn adamw_on<B: Backend, R: CubeRuntime>(
    [p, g, m1, m2]: [&Tensor<B, 1>; 4],
    s: &super::inplace::AdamWStep,
) -> [Tensor<B, 1>; 3] {
    let [n] = p.dims();
    let (p, g, m1, m2) = (
        cube::<B, R, 1>(p),
        cube::<B, R, 1>(g),
        cube::<B, R, 1>(m1),
        cube::<B, R, 1>(m2),
    );
    let dtype = p.dtype;
    let out = || empty(&p, Shape::new([n]));
    let (po, m1o, m2o) = (out(), out(), out());
    let (count, dim) = grid(&p, n);
    adamw_kernel::launch(
        &p.client,
        count,
        dim,
        p.clone().into_array_arg(),
        g.into_array_arg(),
        m1.into_array_arg(),
        m2.into_array_arg(),
        po.clone().into_array_arg(),
        m1o.clone().into_array_arg(),
        m2o.clone().into_array_arg(),
        n,
        s.beta_1,
        s.factor_1,
        s.beta_2,
        s.factor_2,
        s.correction_1,
        s.correction_2,
        s.epsilon,
        s.lr,
        s.decay.unwrap_or(1.0),
        dtype.into(),
    );
    [tensor(po), tensor(m1o), tensor(m2o)]
}

/// [`super::cube::lay_end_to_end`] on runtime `R` (the caller checked that `B` is its backend).
pub(super) fn lay_end_to_end_on<B: Backend, R: CubeRuntime>(
    pieces: &[Tensor<B, 1>],
    padded: &[usize],
    total: usize,
) -> Tensor<B, 1> {
    let first = cube::<B, R, 1>(&pieces[0]);
    let out = empty(&first, Shape::new([total]));
    let mut base = 0;
    for (chunk, pads) in pieces.chunks(8).zip(padded.chunks(8)) {
        let mut arrays: Vec<CubeTensor<R>> = chunk.iter().map(cube::<B, R, 1>).collect();
        let mut lens: Vec<usize> = arrays.iter().map(|a| a.meta.num_elements()).collect();
        let mut ends = Vec::with_capacity(8);
        let mut end = 0;
        for p in pads {
            end += p;
            ends.push(end);
        }
        while arrays.len() < 8 {
            // Unused slots: an empty range over any array.
            arrays.push(first.clone());
            lens.push(0);
            ends.push(end);
        }
        let (count, dim) = grid(&first, end);
        let mut a = arrays.into_iter().map(CubeTensor::into_array_arg);
        let mut next = || a.next().unwrap_or_else(|| unreachable!("eight arrays"));
        gather_kernel::launch(
            &first.client,
            count,
            dim,
            next(),
            next(),
            next(),
            next(),
            next(),
            next(),
            next(),
            next(),
            out.clone().into_array_arg(),
            base,
            lens[0],
            lens[1],
            lens[2],
            lens[3],
            lens[4],
            lens[5],
            lens[6],
            lens[7],
            ends[0],
            ends[1],
            ends[2],
            ends[3],
            ends[4],
            ends[5],
            ends[6],
            ends[7],
            first.dtype.into(),
        );
        base += end;
    }
    tensor(out)
}

/// [`super::cube::ema_many`] on runtime `R` (the caller checked that `B` is its backend).
pub(super) fn ema_many_on<B: Backend, R: CubeRuntime>(
    teacher: &[Tensor<B, 1>],
    source: &[Tensor<B, 1>],
    m: f64,
) -> Vec<Tensor<B, 1>> {
    let mut out = Vec::with_capacity(teacher.len());
    for (ts, ss) in teacher.chunks(4).zip(source.chunks(4)) {
        let ts: Vec<CubeTensor<R>> = ts.iter().map(cube::<B, R, 1>).collect();
        let ss: Vec<CubeTensor<R>> = ss.iter().map(cube::<B, R, 1>).collect();
        let os: Vec<CubeTensor<R>> = ts
            .iter()
            .map(|t| empty(t, t.meta.shape().clone()))
            .collect();
        let mut ends = Vec::with_capacity(4);
        let mut end = 0;
        for t in &ts {
            end += t.meta.num_elements();
            ends.push(end);
        }
        ends.resize(4, end);
        // Unused slots: empty ranges over the first tensor and output.
        let slot = |v: &[CubeTensor<R>], j: usize| v.get(j).unwrap_or(&v[0]).clone();
        let (first, dtype) = (ts[0].clone(), ts[0].dtype);
        let (count, dim) = grid(&first, end);
        ema_kernel::launch(
            &first.client,
            count,
            dim,
            slot(&ts, 0).into_array_arg(),
            slot(&ts, 1).into_array_arg(),
            slot(&ts, 2).into_array_arg(),
            slot(&ts, 3).into_array_arg(),
            slot(&ss, 0).into_array_arg(),
            slot(&ss, 1).into_array_arg(),
            slot(&ss, 2).into_array_arg(),
            slot(&ss, 3).into_array_arg(),
            slot(&os, 0).into_array_arg(),
            slot(&os, 1).into_array_arg(),
            slot(&os, 2).into_array_arg(),
            slot(&os, 3).into_array_arg(),
            ends[0],
            ends[1],
            ends[2],
            ends[3],
            m as f32,
            (1.0 - m) as f32,
            dtype.into(),
        );
        out.extend(os.into_iter().map(tensor));
    }
    out
}

/// [`super::cube::col_sum`] on runtime `R` (the caller checked that `B` is its backend):
/// [`col_sum_kernel`] until one row is left (two launches up to 65,536 rows).
pub(super) fn col_sum_on<B: Backend, R: CubeRuntime>(x: &Tensor<B, 2>) -> Tensor<B, 1> {
    let [mut rows, c] = x.dims();
    let mut x = cube::<B, R, 2>(x);
    let dtype = x.dtype;
    loop {
        let chunks = rows.div_ceil(CHUNK).max(1);
        let part = empty(&x, Shape::new([chunks, c]));
        col_sum_kernel::launch(
            &x.client.clone(),
            CubeCount::Static(c.div_ceil(COLS) as u32, chunks as u32, 1),
            CubeDim::new_2d(COLS as u32, ROW_GROUPS as u32),
            x.into_array_arg(),
            part.clone().into_array_arg(),
            rows,
            c,
            dtype.into(),
        );
        if chunks == 1 {
            return tensor::<B, R, 2>(part).reshape([c]);
        }
        (x, rows) = (part, chunks);
    }
}

/// [`super::cube::inverse_rows`] on runtime `R` (the caller checked that `B` is its backend):
/// `fill` everywhere by Burn's `full`, then one launch writes each row's index at its place.
pub(super) fn inverse_rows_on<B: Backend, R: CubeRuntime>(
    flat: &Tensor<B, 1, Int>,
    total: usize,
    fill: usize,
) -> Tensor<B, 1, Int> {
    let [m] = flat.dims();
    let out = Tensor::<B, 1, Int>::full([total], fill as i64, &flat.device());
    let (f, o) = (cube_int::<B, R, 1>(flat), cube_int::<B, R, 1>(&out));
    let (count, dim) = grid(&f, m);
    inverse_rows_kernel::launch(
        &f.client.clone(),
        count,
        dim,
        f.into_array_arg(),
        o.into_array_arg(),
        m,
    );
    out
}
