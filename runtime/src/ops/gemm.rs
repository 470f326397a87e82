//! A safe, bounds-checked matrix product on f32 slices (the `gemm` crate that Burn's CPU
//! backend uses), writing into a buffer the caller owns ([`matmul_into`]) or a new one that is
//! never zero-filled ([`matmul`]): the fused Linear op ([`super::linear`]) calls them so that a
//! product lands in its output `Vec` directly, with the bias already in it, instead of Burn's
//! zero-filled, re-aligned copy per matmul output.

use rayon::prelude::*;

/// A read-only `rows × cols` matrix view of a slice: element `(i, j)` is at `i·rs + j·cs`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    /// The backing data.
    pub data: &'a [f32],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Row stride, in elements.
    pub rs: usize,
    /// Column stride, in elements.
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major `rows × cols` matrix.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// A `rows × cols` matrix with row stride `rs` (columns contiguous): a block of a wider
    /// row-major matrix.
    pub fn strided(data: &'a [f32], rows: usize, cols: usize, rs: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs,
            cs: 1,
        }
    }

    /// The transpose (a view, nothing is copied).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// Whether every element the strides address lies inside `data`.
    fn in_bounds(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        let last = (self.rows - 1)
            .checked_mul(self.rs)
            .zip((self.cols - 1).checked_mul(self.cs))
            .and_then(|(a, b)| a.checked_add(b));
        last.is_some_and(|l| l < self.data.len())
    }
}

/// Products below this many multiply-adds run on the calling thread (Burn's threshold).
const PARALLEL_MIN: usize = 192 * 192 * 192;

/// `dst = a·b` (`accumulate = false`) or `dst += a·b` (`true`), with `dst` row-major
/// `a.rows × b.cols`.
///
/// # Panics
/// If the shapes disagree or a view addresses memory outside its slice.
pub fn matmul_into(dst: &mut [f32], accumulate: bool, a: MatRef<'_>, b: MatRef<'_>) {
    let (m, k, n) = check(a, b);
    assert_eq!(dst.len(), m * n, "matmul_into: destination is not {m}×{n}");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    // SAFETY: `dst` is exactly `m × n` and borrowed mutably for the call, so nothing else reads
    // or writes it; with `accumulate` gemm reads the initialised values already there.
    #[allow(unsafe_code)]
    unsafe {
        product(dst.as_mut_ptr(), accumulate, a, b, true);
    }
}

/// `a·b` in a new row-major `a.rows × b.cols` buffer, written by the product directly: no
/// zero-fill first, which on a training step's gradients is a pass over memory per product.
///
/// # Panics
/// If the shapes disagree or a view addresses memory outside its slice.
pub fn matmul(a: MatRef<'_>, b: MatRef<'_>) -> Vec<f32> {
    let (m, k, n) = check(a, b);
    let len = m.checked_mul(n).expect("matmul: output size overflows");
    if len == 0 || k == 0 {
        return vec![0.0; len];
    }
    let mut dst = Vec::with_capacity(len);
    // SAFETY: `dst` has capacity for the `m × n` result and nothing else refers to it. With
    // `read_dst = false` gemm reads no destination element and writes every one of them (it
    // stores `a·b` for each output tile), so all `len` elements are initialised when it returns
    // and `set_len` exposes only written values. A panic inside gemm leaves the length at 0.
    #[allow(unsafe_code)]
    unsafe {
        product(dst.as_mut_ptr(), false, a, b, true);
        dst.set_len(len);
    }
    dst
}

/// The shapes of `a·b`, `(m, k, n)`, after checking that they agree and that both views lie
/// inside their slices.
fn check(a: MatRef<'_>, b: MatRef<'_>) -> (usize, usize, usize) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "matmul: inner dimensions {k} and {}", b.rows);
    assert!(a.in_bounds() && b.in_bounds(), "matmul: view out of bounds");
    (m, k, n)
}

/// Whether an `m × k × n` product is large enough to gain from more than one thread.
fn worth_splitting(m: usize, k: usize, n: usize) -> bool {
    m.saturating_mul(n).saturating_mul(k) >= PARALLEL_MIN
}

/// `dst (+)= a·b` through gemm, spread over the thread pool by gemm if `parallel` and
/// [`worth_splitting`].
///
/// # Safety
/// `dst` must be valid for writes of `a.rows × b.cols` f32 (row-major, row stride `b.cols`),
/// not aliased by anything else during the call, and initialised if `accumulate`; `a` and `b`
/// must have passed [`check`], with every dimension non-zero.
#[allow(unsafe_code)]
unsafe fn product(dst: *mut f32, accumulate: bool, a: MatRef<'_>, b: MatRef<'_>, parallel: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let parallelism = if parallel && worth_splitting(m, k, n) {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the caller guarantees `dst`; every element of `a` (m × k) and `b` (k × n) that
    // the strides address lies inside its slice (checked, without overflow), and the slices are
    // shared borrows for the call, so nothing writes them and `dst` cannot alias them.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `x·w (+ bias)` for row-major `x` (`m × k`) and `w` (`k × n`): a new row-major `m × n`
/// buffer, never zero-filled. On a pool of up to [`BAND_THREADS`] threads the rows are split
/// into one band per thread, and each thread writes its band's bias and accumulates its band's
/// product onto it while the band is in its cache, with no synchronisation inside the product
/// (CAN's forward measured 4–12% faster on 2 threads than one product split by `gemm`); on
/// larger pools, where each band would repack the whole weight, `gemm` splits one product.
pub fn linear(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
) -> Vec<f32> {
    let wv = MatRef::rows(w, k, n);
    check(MatRef::rows(x, m, k), wv);
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "linear: bias of {} for {n} outputs", b.len());
    }
    let len = m.checked_mul(n).expect("linear: output size overflows");
    if len == 0 || k == 0 {
        let mut y = vec![0.0; len];
        if let Some(b) = bias {
            y.chunks_exact_mut(n.max(1))
                .for_each(|r| r.copy_from_slice(b));
        }
        return y;
    }
    let threads = rayon::current_num_threads();
    let banded = threads <= BAND_THREADS && worth_splitting(m, k, n);
    let rows = if banded {
        m.div_ceil(threads).max(BAND_MIN)
    } else {
        m
    };
    let mut y: Vec<f32> = Vec::with_capacity(len);
    y.spare_capacity_mut()[..len]
        .par_chunks_mut(rows * n)
        .zip(x.par_chunks(rows * k))
        .for_each(|(yb, xb)| {
            if let Some(b) = bias {
                for row in yb.chunks_exact_mut(n) {
                    for (d, &v) in row.iter_mut().zip(b) {
                        d.write(v);
                    }
                }
            }
            // SAFETY: `yb` is this band's `rows × n` part of the capacity, borrowed mutably for
            // the call; it holds the bias when accumulating, and with `read_dst = false` gemm
            // writes every element and reads none. `xb` is the band's rows of `x`, checked.
            #[allow(unsafe_code)]
            unsafe {
                product(
                    yb.as_mut_ptr().cast(),
                    bias.is_some(),
                    MatRef::rows(xb, yb.len() / n, k),
                    wv,
                    !banded,
                );
            }
        });
    // SAFETY: the bands cover all `len` elements and each wrote every one of its own.
    #[allow(unsafe_code)]
    unsafe {
        y.set_len(len);
    }
    y
}

/// The largest pool on which [`linear`] splits its rows into bands (measured on 2 threads).
const BAND_THREADS: usize = 4;

/// The fewest rows in a band of [`linear`].
const BAND_MIN: usize = 64;

/// The gradients of [`linear`] given `dy` (`m × n`): `(dx = dy·wᵀ, dw = xᵀ·dy, db = Σ_rows dy)`,
/// each computed only when asked for. `dx` and `dw` (the same number of multiply-adds) run
/// side by side on the thread pool rather than one after the other, each product splitting
/// further only where threads are idle.
pub fn linear_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    (m, k, n): (usize, usize, usize),
    want: [bool; 3],
) -> [Option<Vec<f32>>; 3] {
    let dyv = MatRef::rows(dy, m, n);
    let dx = || want[0].then(|| matmul(dyv, MatRef::rows(w, k, n).t()));
    let dw_db = || {
        let dw = want[1].then(|| matmul(MatRef::rows(x, m, k).t(), dyv));
        let db = want[2].then(|| {
            let mut db = vec![0.0f32; n];
            for row in dy.chunks_exact(n.max(1)) {
                for (acc, v) in db.iter_mut().zip(row) {
                    *acc += v;
                }
            }
            db
        });
        (dw, db)
    };
    let (dx, (dw, db)) = if want[0] && want[1] {
        rayon::join(dx, dw_db)
    } else {
        (dx(), dw_db())
    };
    [dx, dw, db]
}
