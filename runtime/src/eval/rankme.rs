//! Collapse indicators of an embedding matrix: RankMe, the effective rank of Garrido et al.
//! (ICML 2023, "RankMe: Assessing the downstream performance of pretrained self-supervised
//! representations by their rank"), and the per-dimension std of L2-normalised embeddings
//! (SimSiam's collapse indicator, Chen & He 2021: about `1/√d` when spread out, 0 when
//! collapsed).
//!
//! Singular values come from the eigenvalues of the smaller Gram matrix (`ZᵀZ` or `ZZᵀ`),
//! accumulated in f64 and diagonalised by cyclic Jacobi rotations: exact to rounding, and fast
//! for the widths used here (d ≤ 1024).

use rayon::prelude::*;

/// The paper's ε added to each normalised singular value.
pub const RANKME_EPS: f64 = 1e-7;

/// Rows per partial Gram sum (fixed, so the sum is the same whatever the thread count).
const GRAM_CHUNK: usize = 512;

/// RankMe of `emb` (`n × d`, row-major): `exp(−Σ p_k log p_k)` with
/// `p_k = σ_k / Σσ + ε` over its singular values `σ`; between 1 and `min(n, d)` (up to ε),
/// and 0 for an all-zero (or empty) matrix.
///
/// # Panics
/// If `emb.len() != n · d`.
pub fn rankme(emb: &[f32], n: usize, d: usize) -> f64 {
    let s = singular_values(emb, n, d);
    let total: f64 = s.iter().sum();
    if total.is_nan() || total <= 0.0 {
        return 0.0;
    }
    let entropy: f64 = s
        .iter()
        .map(|&x| {
            let p = x / total + RANKME_EPS;
            -p * p.ln()
        })
        .sum();
    entropy.exp()
}

/// Mean over dimensions of the std (population) of the L2-normalised rows of `emb`
/// (`n × d`): about `1/√d` for spread-out embeddings, 0 for collapsed ones. A zero row stays
/// zero.
///
/// # Panics
/// If `emb.len() != n · d`.
pub fn embedding_std(emb: &[f32], n: usize, d: usize) -> f64 {
    assert_eq!(emb.len(), n * d, "embedding is not {n} × {d}");
    if n == 0 || d == 0 {
        return 0.0;
    }
    let mut sum = vec![0.0f64; d];
    let mut sq = vec![0.0f64; d];
    for row in emb.chunks(d) {
        let norm = row
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt();
        let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
        for (j, &x) in row.iter().enumerate() {
            let v = f64::from(x) * inv;
            sum[j] += v;
            sq[j] += v * v;
        }
    }
    let nf = n as f64;
    sum.iter()
        .zip(&sq)
        .map(|(s, q)| (q / nf - (s / nf) * (s / nf)).max(0.0).sqrt())
        .sum::<f64>()
        / d as f64
}

/// The `min(n, d)` singular values of `emb` (`n × d`, row-major), descending.
///
/// # Panics
/// If `emb.len() != n · d`.
pub fn singular_values(emb: &[f32], n: usize, d: usize) -> Vec<f64> {
    assert_eq!(emb.len(), n * d, "embedding is not {n} × {d}");
    let gram = if d <= n {
        gram_cols(emb, n, d)
    } else {
        gram_rows(emb, n, d)
    };
    let m = n.min(d);
    let mut s: Vec<f64> = sym_eigenvalues(gram, m)
        .into_iter()
        .map(|l| l.max(0.0).sqrt())
        .collect();
    s.sort_by(|a, b| b.total_cmp(a));
    s
}

/// `ZᵀZ` (`d × d`).
fn gram_cols(emb: &[f32], n: usize, d: usize) -> Vec<f64> {
    if n == 0 || d == 0 {
        return vec![0.0; d * d];
    }
    let partials: Vec<Vec<f64>> = emb
        .par_chunks(GRAM_CHUNK * d)
        .map(|rows| {
            let mut g = vec![0.0f64; d * d];
            let mut r = vec![0.0f64; d];
            for row in rows.chunks(d) {
                r.iter_mut().zip(row).for_each(|(a, &x)| *a = f64::from(x));
                for i in 0..d {
                    let ri = r[i];
                    if ri == 0.0 {
                        continue;
                    }
                    for (gj, &rj) in g[i * d + i..(i + 1) * d].iter_mut().zip(&r[i..]) {
                        *gj += ri * rj;
                    }
                }
            }
            g
        })
        .collect();
    let mut g = vec![0.0f64; d * d];
    for p in partials {
        g.iter_mut().zip(&p).for_each(|(a, b)| *a += b);
    }
    for i in 0..d {
        for j in 0..i {
            g[i * d + j] = g[j * d + i];
        }
    }
    g
}

/// `ZZᵀ` (`n × n`).
fn gram_rows(emb: &[f32], n: usize, d: usize) -> Vec<f64> {
    let mut g = vec![0.0f64; n * n];
    for i in 0..n {
        for j in i..n {
            let v: f64 = emb[i * d..(i + 1) * d]
                .iter()
                .zip(&emb[j * d..(j + 1) * d])
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            g[i * n + j] = v;
            g[j * n + i] = v;
        }
    }
    g
}

/// Eigenvalues of the symmetric `m × m` matrix `a` (row-major), by cyclic Jacobi rotations
/// (Golub & Van Loan §8.5; rotation formulas as in Numerical Recipes' `jacobi`).
pub(crate) fn sym_eigenvalues(mut a: Vec<f64>, m: usize) -> Vec<f64> {
    let norm2: f64 = a.iter().map(|x| x * x).sum();
    if norm2 == 0.0 {
        return vec![0.0; m];
    }
    for _sweep in 0..100 {
        let mut off = 0.0;
        for p in 0..m {
            for q in p + 1..m {
                off += a[p * m + q] * a[p * m + q];
            }
        }
        if off <= 1e-30 * norm2 {
            break;
        }
        for p in 0..m {
            for q in p + 1..m {
                let apq = a[p * m + q];
                if apq == 0.0 {
                    continue;
                }
                let (app, aqq) = (a[p * m + p], a[q * m + q]);
                let theta = (aqq - app) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                // A ← A·J (columns p, q), then A ← Jᵀ·A (rows p, q).
                for k in 0..m {
                    let (akp, akq) = (a[k * m + p], a[k * m + q]);
                    a[k * m + p] = c * akp - s * akq;
                    a[k * m + q] = s * akp + c * akq;
                }
                for k in 0..m {
                    let (apk, aqk) = (a[p * m + k], a[q * m + k]);
                    a[p * m + k] = c * apk - s * aqk;
                    a[q * m + k] = s * apk + c * aqk;
                }
                a[p * m + q] = 0.0;
                a[q * m + p] = 0.0;
            }
        }
    }
    (0..m).map(|i| a[i * m + i]).collect()
}

#[cfg(test)]
mod tests {
    use super::sym_eigenvalues;

    #[test]
    fn jacobi_matches_a_known_spectrum() {
        // [[2, 1], [1, 2]] has eigenvalues 1 and 3; [[4, 1, 0], [1, 4, 1], [0, 1, 4]] has
        // 4 - √2, 4, 4 + √2 (tridiagonal Toeplitz: 4 + 2cos(kπ/4)).
        let mut e = sym_eigenvalues(vec![2.0, 1.0, 1.0, 2.0], 2);
        e.sort_by(f64::total_cmp);
        assert!(
            (e[0] - 1.0).abs() < 1e-12 && (e[1] - 3.0).abs() < 1e-12,
            "{e:?}"
        );
        let mut e = sym_eigenvalues(vec![4.0, 1.0, 0.0, 1.0, 4.0, 1.0, 0.0, 1.0, 4.0], 3);
        e.sort_by(f64::total_cmp);
        let r2 = 2f64.sqrt();
        for (got, want) in e.iter().zip([4.0 - r2, 4.0, 4.0 + r2]) {
            assert!((got - want).abs() < 1e-12, "{e:?}");
        }
    }
}
