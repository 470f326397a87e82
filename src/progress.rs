//! Training progress for `canc run`: a live bar on a terminal, plain log lines elsewhere.
//!
//! On a terminal (stderr is a TTY) an [`indicatif`] bar shows the step, epoch, smoothed
//! images/s, the loss and each term, the learning rate, the share of step time spent waiting
//! for data, and the ETA. Elsewhere (CI, `nohup`, a pipe) the same fields go out as one line
//! every *N* steps, *N* being a 1-2-5 number of steps that take about 10 s (10 until the
//! step time is known), plus the first and last step.
//!
//! Timings are smoothed with an exponential moving average that drops the first step (it
//! carries one-off warm-up costs) once a second one arrives.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Seconds of training between two plain log lines, roughly.
const LINE_SECONDS: f64 = 10.0;
/// Plain log lines come every this many steps until a step time is known.
const DEFAULT_EVERY: u64 = 10;
/// Weight of the newest step in the smoothed timings.
const SMOOTHING: f64 = 0.1;

/// The progress display of one training run.
pub struct Progress {
    total: u64,
    start: u64,
    per_epoch: u64,
    batch: usize,
    /// The bar, on a terminal.
    bar: Option<ProgressBar>,
    timing: Smoothed,
}

/// Everything one progress line shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Line<'a> {
    /// The step just finished (0-based).
    pub step: u64,
    /// Steps of the whole run (the last step is `total - 1`).
    pub total: u64,
    /// Steps per epoch.
    pub per_epoch: u64,
    /// Weighted total loss.
    pub loss: f64,
    /// Each loss term.
    pub terms: &'a [(String, f64)],
    /// Learning rate.
    pub lr: f64,
    /// Smoothed throughput, images per second (`None` until known).
    pub images_per_s: Option<f64>,
    /// Smoothed share of the step spent waiting for data, 0..=1.
    pub wait_frac: Option<f64>,
    /// Estimated seconds left (`None` until known).
    pub eta_s: Option<f64>,
}

/// Exponential moving averages of the step and data-wait times.
#[derive(Debug, Clone, Copy, Default)]
struct Smoothed {
    steps: u64,
    step_s: f64,
    wait_s: f64,
}

impl Smoothed {
    fn add(&mut self, step_s: f64, wait_s: f64) {
        self.steps += 1;
        // Steps 1 and 2 set the averages: step 2 replaces the warm-up step 1.
        if self.steps <= 2 {
            self.step_s = step_s;
            self.wait_s = wait_s;
        } else {
            self.step_s += SMOOTHING * (step_s - self.step_s);
            self.wait_s += SMOOTHING * (wait_s - self.wait_s);
        }
    }

    /// The smoothed step time, once a positive one was measured.
    fn step_s(&self) -> Option<f64> {
        (self.steps > 0 && self.step_s > 0.0).then_some(self.step_s)
    }
}

impl Progress {
    /// A display for steps `start..total` (`start > 0` when resuming) of `per_epoch` steps per
    /// epoch and `batch` images per step: a bar when stderr is a terminal, log lines otherwise.
    pub fn new(total: u64, start: u64, per_epoch: u64, batch: usize) -> Self {
        Self::with_terminal(
            total,
            start,
            per_epoch,
            batch,
            std::io::stderr().is_terminal(),
        )
    }

    /// [`Progress::new`] with the display mode chosen by the caller.
    pub fn with_terminal(
        total: u64,
        start: u64,
        per_epoch: u64,
        batch: usize,
        terminal: bool,
    ) -> Self {
        let bar = terminal.then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            // The template is a constant: it parses (checked by a test).
            if let Ok(style) = ProgressStyle::with_template(BAR_TEMPLATE) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_position(start);
            bar.set_message(format!("epoch {}", epoch_of(start, per_epoch, total)));
            bar
        });
        Progress {
            total,
            start,
            per_epoch: per_epoch.max(1),
            batch,
            bar,
            timing: Smoothed::default(),
        }
    }

    /// Records finished step `step`: its weighted loss, its `terms`, the learning rate, the
    /// seconds it waited for data and its wall time; updates the bar or prints a line.
    pub fn on_step(
        &mut self,
        step: u64,
        loss: f64,
        terms: &[(String, f64)],
        lr: f64,
        wait_s: f64,
        step_s: f64,
    ) {
        self.timing.add(step_s, wait_s);
        let smoothed = self.timing.step_s();
        let line = Line {
            step,
            total: self.total,
            per_epoch: self.per_epoch,
            loss,
            terms,
            lr,
            images_per_s: smoothed.map(|s| self.batch as f64 / s),
            wait_frac: smoothed.map(|s| (self.timing.wait_s / s).clamp(0.0, 1.0)),
            eta_s: smoothed.map(|s| s * self.total.saturating_sub(step + 1) as f64),
        };
        match &self.bar {
            Some(bar) => {
                bar.set_position(step + 1);
                bar.set_message(fields(&line));
            }
            None => {
                let every = smoothed.map_or(DEFAULT_EVERY, lines_every);
                if prints(step, self.start, self.total, every) {
                    eprintln!("{}", format_line(&line));
                }
            }
        }
    }

    /// Prints `msg` on its own line (above the bar on a terminal).
    pub fn println(&self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.println(msg),
            None => eprintln!("{msg}"),
        }
    }

    /// Ends the display, leaving the bar's last state on screen.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

/// The bar: its position and length in steps, then [`fields`].
const BAR_TEMPLATE: &str = "{bar:24} {pos}/{len} {msg}";

/// The 1-based epoch of `step` and the number of epochs, as `e/E`.
fn epoch_of(step: u64, per_epoch: u64, total: u64) -> String {
    let per_epoch = per_epoch.max(1);
    format!(
        "{}/{}",
        step / per_epoch + 1,
        total.div_ceil(per_epoch).max(1)
    )
}

/// A loss value in at most ~7 characters: 4 decimals in [0.01, 10⁴), else scientific.
fn short(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 || (1e-2..1e4).contains(&a) || !v.is_finite() {
        format!("{v:.4}")
    } else {
        format!("{v:.2e}")
    }
}

/// A duration as `1h02m`, `3m05s` or `12s`.
pub fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// Everything but the step count: epoch, losses, lr, throughput, data wait, ETA.
pub fn fields(l: &Line<'_>) -> String {
    let mut out = format!(
        "epoch {}  loss {}",
        epoch_of(l.step, l.per_epoch, l.total),
        short(l.loss)
    );
    if !l.terms.is_empty() {
        let terms: Vec<String> = l
            .terms
            .iter()
            .map(|(k, v)| format!("{k} {}", short(*v)))
            .collect();
        out += &format!(" ({})", terms.join(", "));
    }
    out += &format!("  lr {:.2e}", l.lr);
    if let Some(ips) = l.images_per_s {
        out += &format!("  {ips:.0} img/s");
    }
    if let Some(w) = l.wait_frac {
        out += &format!("  data wait {:.0}%", w * 100.0);
    }
    if let Some(eta) = l.eta_s {
        out += &format!("  ETA {}", format_duration(eta));
    }
    out
}

/// One plain log line: `step s/T` (1-based, steps done) then [`fields`].
pub fn format_line(l: &Line<'_>) -> String {
    format!("step {}/{}  {}", l.step + 1, l.total, fields(l))
}

/// How many steps apart plain lines are when a step takes `step_s` seconds: the largest
/// 1-2-5 number (1, 2, 5, 10, 20, …) of steps that take at most [`LINE_SECONDS`], at least 1.
pub fn lines_every(step_s: f64) -> u64 {
    let fit = if step_s > 0.0 {
        LINE_SECONDS / step_s
    } else {
        f64::INFINITY
    };
    let mut best = 1u64;
    for decade in 0..12 {
        for m in [1u64, 2, 5] {
            let n = m * 10u64.pow(decade);
            if (n as f64) <= fit {
                best = n;
            }
        }
    }
    best
}

/// Whether a plain line is printed after step `step` of `start..total`: the first and the last
/// step, and every `every`-th step (counting steps done, `step + 1`).
pub fn prints(step: u64, start: u64, total: u64, every: u64) -> bool {
    step == start || step + 1 == total || (step + 1).is_multiple_of(every.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms() -> Vec<(String, f64)> {
        vec![
            ("nce".to_string(), 4.123456),
            ("mae".to_string(), 0.51234),
            ("denoise".to_string(), 0.0012345),
        ]
    }

    #[test]
    fn a_full_line() {
        let t = terms();
        let l = Line {
            step: 1199,
            total: 46800,
            per_epoch: 234,
            loss: 1.23456,
            terms: &t,
            lr: 2.5e-4,
            images_per_s: Some(812.4),
            wait_frac: Some(0.034),
            eta_s: Some(2.0 * 3600.0 + 13.0 * 60.0 + 20.0),
        };
        // Step 1199 is in epoch 1199 / 234 + 1 = 6 of ceil(46800 / 234) = 200.
        assert_eq!(
            format_line(&l),
            "step 1200/46800  epoch 6/200  loss 1.2346 (nce 4.1235, mae 0.5123, denoise 1.23e-3)  \
             lr 2.50e-4  812 img/s  data wait 3%  ETA 2h13m"
        );
    }

    #[test]
    fn a_line_before_timings_are_known() {
        let l = Line {
            step: 0,
            total: 10,
            per_epoch: 3,
            loss: f64::NAN,
            terms: &[],
            lr: 1e-3,
            images_per_s: None,
            wait_frac: None,
            eta_s: None,
        };
        assert_eq!(
            format_line(&l),
            "step 1/10  epoch 1/4  loss NaN  lr 1.00e-3"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(0.4), "0s");
        assert_eq!(format_duration(59.6), "1m00s");
        assert_eq!(format_duration(185.0), "3m05s");
        assert_eq!(format_duration(3600.0 * 27.0 + 120.0), "27h02m");
        assert_eq!(format_duration(-3.0), "0s");
    }

    #[test]
    fn short_values() {
        assert_eq!(short(0.0), "0.0000");
        assert_eq!(short(12.5), "12.5000");
        assert_eq!(short(0.01), "0.0100");
        assert_eq!(short(0.009), "9.00e-3");
        assert_eq!(short(-25000.0), "-2.50e4");
    }

    #[test]
    fn line_spacing_targets_ten_seconds() {
        assert_eq!(lines_every(20.0), 1);
        assert_eq!(lines_every(10.0), 1);
        assert_eq!(lines_every(4.0), 2);
        assert_eq!(lines_every(1.0), 10);
        assert_eq!(lines_every(0.3), 20); // 33 steps fit: 20
        assert_eq!(lines_every(0.15), 50); // 66 fit: 50
        assert_eq!(lines_every(0.001), 10_000);
        assert_eq!(lines_every(0.0), 500_000_000_000);
    }

    #[test]
    fn first_last_and_every_nth_step_print() {
        let printed: Vec<u64> = (5..33).filter(|&s| prints(s, 5, 33, 10)).collect();
        assert_eq!(printed, vec![5, 9, 19, 29, 32]);
        assert!(prints(0, 0, 1, 10));
        assert!(
            prints(3, 0, 100, 0) && prints(4, 0, 100, 0),
            "every 0 means every step"
        );
    }

    #[test]
    fn smoothing_drops_the_warm_up_step() {
        let mut s = Smoothed::default();
        assert_eq!(s.step_s(), None);
        s.add(5.0, 1.0);
        assert_eq!(s.step_s(), Some(5.0));
        s.add(1.0, 0.5);
        assert_eq!(s.step_s(), Some(1.0));
        s.add(2.0, 0.0);
        assert!((s.step_s - 1.1).abs() < 1e-12);
        assert!((s.wait_s - 0.45).abs() < 1e-12);
    }

    #[test]
    fn the_bar_template_parses() {
        assert!(ProgressStyle::with_template(BAR_TEMPLATE).is_ok());
    }

    #[test]
    fn both_modes_accept_steps() {
        // Plain mode prints to stderr; the bar mode draws to stderr (hidden when not a TTY).
        for terminal in [false, true] {
            let mut p = Progress::with_terminal(4, 1, 2, 8, terminal);
            for step in 1..4 {
                p.on_step(step, 1.0, &terms(), 1e-3, 0.01, 0.1);
            }
            p.println("checkpoint saved");
            p.finish();
            if let Some(bar) = &p.bar {
                assert_eq!(bar.position(), 4);
                assert!(bar.message().starts_with("epoch 2/2  loss 1.0000"));
                assert!(bar.message().contains("80 img/s"), "{}", bar.message());
            }
        }
    }
}
