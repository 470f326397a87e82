//! In-place parameter updates on `f32` slices for the CPU backend: an AdamW step and an EMA
//! step, each one pass over memory split over rayon's pool.
//!
//! Burn's AdamW on `Flex` is 13–15 element-wise ops per parameter tensor, each a
//! single-threaded pass that allocates its output (or rewrites its input in place when it owns
//! it); the EMA update `t·m + s·(1 − m)` is three. Here each is one loop that reads the
//! gradient (or source) and rewrites the weights and moments where they lie. The arithmetic is
//! Burn's op for op (the same f32 scalars, the same order, no fused multiply-adds), so the
//! results are bitwise those of Burn's ops (tested in `runtime/tests/update.rs`).

use rayon::prelude::*;

/// Elements per rayon task.
const CHUNK: usize = 1 << 15;

/// The scalars of one AdamW step of one tensor, as Burn's `AdamW` derives them in f32.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep {
    /// `β₁` and `1 − β₁`.
    pub beta_1: f32,
    pub factor_1: f32,
    /// `β₂` and `1 − β₂`.
    pub beta_2: f32,
    pub factor_2: f32,
    /// Bias corrections `1 − β₁ᵗ` and `1 − β₂ᵗ` at this step's time `t`.
    pub correction_1: f32,
    pub correction_2: f32,
    pub epsilon: f32,
    /// The learning rate, and `1 − lr·weight_decay` (`None` without decay).
    pub lr: f32,
    pub decay: Option<f32>,
    /// Whether this is the tensor's first step: the moments start from the gradient alone.
    pub first: bool,
}

impl AdamWStep {
    /// The scalars for a step at `time` (1 for the first) with these hyper-parameters, each
    /// rounded to f32 where Burn's `AdamW` rounds it.
    pub fn new(
        (beta_1, beta_2, epsilon, weight_decay): (f32, f32, f32, f32),
        lr: f64,
        time: usize,
    ) -> Self {
        let t = i32::try_from(time).unwrap_or(i32::MAX);
        let decay_rate = lr * weight_decay as f64;
        AdamWStep {
            beta_1,
            factor_1: 1.0 - beta_1,
            beta_2,
            factor_2: 1.0 - beta_2,
            correction_1: 1f32 - beta_1.powi(t),
            correction_2: 1f32 - beta_2.powi(t),
            epsilon,
            lr: lr as f32,
            decay: (decay_rate != 0.0).then_some((1.0 - decay_rate) as f32),
            first: time <= 1,
        }
    }
}

/// One AdamW step of weights `p` with gradient `g`, first and second moments `m1` and `m2`
/// (ignored on input and overwritten when `s.first`), all of one length.
///
/// # Panics
/// If the lengths differ (a caller's bug: the tensors are one parameter's).
pub fn adamw(p: &mut [f32], g: &[f32], m1: &mut [f32], m2: &mut [f32], s: &AdamWStep) {
    assert!(
        p.len() == g.len() && p.len() == m1.len() && p.len() == m2.len(),
        "adamw: weights, gradient and moments differ in length"
    );
    p.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(m1.par_chunks_mut(CHUNK).zip(m2.par_chunks_mut(CHUNK)))
        .for_each(|((p, g), (m1, m2))| adamw_chunk(p, g, m1, m2, s));
}

/// [`adamw`] on one chunk, in the vector width the CPU has (pulp's dispatch).
fn adamw_chunk(p: &mut [f32], g: &[f32], m1: &mut [f32], m2: &mut [f32], s: &AdamWStep) {
    struct Run<'a>(
        &'a mut [f32],
        &'a [f32],
        &'a mut [f32],
        &'a mut [f32],
        &'a AdamWStep,
    );
    impl pulp::WithSimd for Run<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) {
            let Run(p, g, m1, m2, s) = self;
            adamw_loop(p, g, m1, m2, s);
        }
    }
    pulp::Arch::new().dispatch(Run(p, g, m1, m2, s));
}

/// The element loop of [`adamw`], written so that it vectorises: each line is one of Burn's
/// ops (`moment_1.mul_scalar(β₁).add(grad.mul_scalar(1 − β₁))`, …).
#[inline(always)]
fn adamw_loop(p: &mut [f32], g: &[f32], m1: &mut [f32], m2: &mut [f32], s: &AdamWStep) {
    let n = p.len().min(g.len()).min(m1.len()).min(m2.len());
    let (p, g, m1, m2) = (&mut p[..n], &g[..n], &mut m1[..n], &mut m2[..n]);
    for i in 0..n {
        let gi = g[i];
        let (a, b) = if s.first {
            (gi * s.factor_1, (gi * gi) * s.factor_2)
        } else {
            (
                m1[i] * s.beta_1 + gi * s.factor_1,
                m2[i] * s.beta_2 + (gi * gi) * s.factor_2,
            )
        };
        m1[i] = a;
        m2[i] = b;
        let delta = (a / s.correction_1) / ((b / s.correction_2).sqrt() + s.epsilon);
        let w = match s.decay {
            Some(k) => p[i] * k,
            None => p[i],
        };
        p[i] = w - delta * s.lr;
    }
}

/// The EMA step `t ← t·keep + s·take` (Burn's `t.mul_scalar(m) + s.mul_scalar(1 − m)`, with
/// `keep = m` and `take = 1 − m` rounded to f32).
///
/// # Panics
/// If the lengths differ (a caller's bug: teacher and source are one parameter's).
pub fn ema(t: &mut [f32], s: &[f32], keep: f32, take: f32) {
    assert_eq!(t.len(), s.len(), "ema: teacher and source differ in length");
    t.par_chunks_mut(CHUNK)
        .zip(s.par_chunks(CHUNK))
        .for_each(|(t, s)| ema_chunk(t, s, keep, take));
}

/// [`ema`] on one chunk, in the vector width the CPU has.
fn ema_chunk(t: &mut [f32], s: &[f32], keep: f32, take: f32) {
    struct Run<'a>(&'a mut [f32], &'a [f32], f32, f32);
    impl pulp::WithSimd for Run<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) {
            let Run(t, s, keep, take) = self;
            for (t, &s) in t.iter_mut().zip(s) {
                *t = *t * keep + s * take;
            }
        }
    }
    pulp::Arch::new().dispatch(Run(t, s, keep, take));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AdamW worked by hand in f64 for one weight: β = (0.9, 0.999), ε = 1e-8, lr = 0.1,
    /// decay 0.01, gradients 2 then −1.
    #[test]
    fn two_steps_match_the_hand_worked_values() {
        let hp = (0.9, 0.999, 1e-8, 0.01);
        let (mut p, mut m1, mut m2) = ([1.0f32], [0.0f32], [0.0f32]);
        adamw(
            &mut p,
            &[2.0],
            &mut m1,
            &mut m2,
            &AdamWStep::new(hp, 0.1, 1),
        );
        // m1 = 0.2, m2 = 0.004; m̂1 = 2, m̂2 = 4; delta = 2/(2 + 1e-8) ≈ 1.
        // p = 1·(1 − 0.001) − 0.1·1 = 0.899.
        // (1 − β₂ in f32 is 0.000999987: relative tolerances of 3e-5.)
        assert!((m1[0] - 0.2).abs() < 2e-6, "{}", m1[0]);
        assert!((m2[0] - 0.004).abs() < 1.2e-7, "{}", m2[0]);
        assert!((p[0] - 0.899).abs() < 1e-6, "{}", p[0]);
        adamw(
            &mut p,
            &[-1.0],
            &mut m1,
            &mut m2,
            &AdamWStep::new(hp, 0.1, 2),
        );
        // m1 = 0.18 − 0.1 = 0.08; m2 = 0.003996 + 0.001 = 0.004996;
        // m̂1 = 0.08/0.19, m̂2 = 0.004996/0.001999; delta = m̂1/(√m̂2 + ε).
        let (h1, h2) = (0.08 / 0.19, 0.004996 / (1.0 - 0.999f64.powi(2)));
        let want = 0.899 * (1.0 - 0.001) - 0.1 * h1 / (h2.sqrt() + 1e-8);
        assert!((m1[0] as f64 - 0.08).abs() < 1e-6);
        assert!((m2[0] as f64 - 0.004996).abs() < 1.5e-7, "{}", m2[0]);
        assert!((p[0] as f64 - want).abs() < 1e-6, "{} vs {want}", p[0]);
    }

    #[test]
    fn no_decay_leaves_the_weight_term_alone() {
        let s = AdamWStep::new((0.9, 0.999, 1e-8, 0.0), 0.5, 1);
        assert_eq!(s.decay, None);
        let (mut p, mut m1, mut m2) = ([3.0f32], [9.0f32], [9.0f32]);
        adamw(&mut p, &[-4.0], &mut m1, &mut m2, &s);
        // First step: the moments ignore their old values; delta = −1 (up to ε).
        assert!((p[0] - 3.5).abs() < 1e-6, "{}", p[0]);
    }

    #[test]
    fn ema_moves_each_weight_towards_its_source() {
        let n = 3 * CHUNK + 5;
        let mut t = vec![1.0f32; n];
        let s: Vec<f32> = (0..n).map(|i| i as f32).collect();
        ema(&mut t, &s, 0.75, 0.25);
        for (i, v) in t.iter().enumerate() {
            assert_eq!(*v, 0.75 + i as f32 * 0.25, "element {i}");
        }
    }
}
