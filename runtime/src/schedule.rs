//! Learning-rate and EMA-momentum schedules, as pure functions of the step.

use canc_compiler::plan::{OptimPlan, Role};
use canc_compiler::resolved::RValue;

/// The learning rate at `step` (0-based) of `total` steps: linear warm-up from
/// `warmup_start · lr` to `lr` over `warmup` steps, then `cosine` decay to `min_lr` (or
/// `constant`). `lr` is the plan's effective (batch-scaled) rate.
#[derive(Debug, Clone, PartialEq)]
pub struct LrSchedule {
    /// Peak learning rate.
    pub lr: f64,
    /// Warm-up steps.
    pub warmup: u64,
    /// Start of warm-up as a fraction of `lr`.
    pub warmup_start: f64,
    /// Final learning rate (cosine).
    pub min_lr: f64,
    /// Total steps.
    pub total: u64,
    /// Cosine decay after warm-up (else constant).
    pub cosine: bool,
}

impl LrSchedule {
    /// The schedule a plan describes, over `total` steps (the plan's or an override).
    pub fn from_plan(o: &OptimPlan, total: u64) -> Self {
        let get = |k: &str| o.schedule_config.get(k).and_then(RValue::as_f64);
        let warmup = o.warmup_steps.unwrap_or(0).min(total);
        LrSchedule {
            lr: o.effective_lr,
            warmup,
            warmup_start: get("warmup_start").unwrap_or(0.0),
            min_lr: get("min_lr").unwrap_or(0.0),
            total,
            cosine: o.schedule == "cosine",
        }
    }

    /// The rate at `step`.
    pub fn at(&self, step: u64) -> f64 {
        if step < self.warmup {
            let start = self.warmup_start * self.lr;
            return start + (self.lr - start) * step as f64 / self.warmup as f64;
        }
        if !self.cosine {
            return self.lr;
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        let t = ((step - self.warmup) as f64 / span).min(1.0);
        self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

/// EMA momentum at `step` of `total`: constant, or BYOL's cosine increase from `momentum` to
/// `momentum_end`: `end − (end − m)·(cos(π t) + 1)/2`.
pub fn ema_momentum(role: &Role, step: u64, total: u64) -> Option<f64> {
    let Role::Ema {
        momentum,
        momentum_end,
        schedule,
        ..
    } = role
    else {
        return None;
    };
    if schedule != "cosine" {
        return Some(*momentum);
    }
    let t = (step as f64 / total.max(1) as f64).min(1.0);
    Some(momentum_end - (momentum_end - momentum) * ((std::f64::consts::PI * t).cos() + 1.0) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(cosine: bool) -> LrSchedule {
        LrSchedule {
            lr: 1.0,
            warmup: 10,
            warmup_start: 0.0,
            min_lr: 0.0,
            total: 110,
            cosine,
        }
    }

    #[test]
    fn warmup_then_cosine() {
        let s = sched(true);
        assert_eq!(s.at(0), 0.0);
        assert!((s.at(5) - 0.5).abs() < 1e-12); // 5 / 10 of the way
        assert!((s.at(10) - 1.0).abs() < 1e-12); // peak
        assert!((s.at(60) - 0.5).abs() < 1e-12); // half of the 100 cosine steps: (1 + cos(π/2))/2
        assert!(s.at(110).abs() < 1e-12); // end: min_lr
        assert!(s.at(500).abs() < 1e-12); // clamps past the end
        assert_eq!(sched(false).at(80), 1.0);
    }

    #[test]
    fn momentum_schedules() {
        let ema = |schedule: &str| Role::Ema {
            source: "encoder".into(),
            momentum: 0.99,
            momentum_end: 1.0,
            schedule: schedule.into(),
        };
        assert_eq!(ema_momentum(&ema("constant"), 50, 100), Some(0.99));
        let c = ema("cosine");
        assert!((ema_momentum(&c, 0, 100).unwrap_or(0.0) - 0.99).abs() < 1e-12);
        assert!((ema_momentum(&c, 50, 100).unwrap_or(0.0) - 0.995).abs() < 1e-12); // midpoint
        assert!((ema_momentum(&c, 100, 100).unwrap_or(0.0) - 1.0).abs() < 1e-12);
        assert_eq!(ema_momentum(&Role::Trained, 0, 1), None);
    }
}
