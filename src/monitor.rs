//! What `canc run` shows and records while it trains: the progress display, checkpoint notices,
//! and the epoch-end work: the loss plot (`loss.png`) and the online kNN monitor of the spec's
//! `eval { knn { every = … } }`.

use crate::plot;
use crate::progress::Progress;
use burn::tensor::backend::AutodiffBackend;
use canc_compiler::Plan;
use canc_runtime::data::Dataset;
use canc_runtime::eval::{self, EvalSpec, Interval};
use canc_runtime::exec::Program;
use canc_runtime::train::{Observer, StepLog};
use std::path::{Path, PathBuf};

/// Images of each split the online kNN monitor uses (the full protocol is `canc eval`).
const MONITOR_TRAIN: usize = 10_000;
/// Queries of the online kNN monitor.
const MONITOR_TEST: usize = 2_000;

/// The training loop's observer for `canc run`.
pub struct Monitor {
    dir: PathBuf,
    plan: Plan,
    per_epoch: u64,
    progress: Progress,
    eval: Option<EvalSpec>,
    /// The monitor's splits, loaded at its first use.
    splits: Option<(Dataset, Dataset)>,
    /// The monitor failed once (missing test split, no labels): not retried.
    monitor_off: bool,
}

impl Monitor {
    /// A monitor for steps `start..total` of `plan`, `per_epoch` steps of `batch` images per
    /// epoch, writing into `dir`.
    pub fn new(
        plan: &Plan,
        dir: &Path,
        start: u64,
        total: u64,
        per_epoch: u64,
        batch: usize,
    ) -> Self {
        Monitor {
            dir: dir.to_path_buf(),
            plan: plan.clone(),
            per_epoch: per_epoch.max(1),
            progress: Progress::new(total, start, per_epoch, batch),
            eval: EvalSpec::from_plan(plan).ok(),
            splits: None,
            monitor_off: false,
        }
    }

    /// Ends the display and draws the final loss plot.
    pub fn finish(&mut self) {
        self.plot();
        self.progress.finish();
    }

    fn plot(&self) {
        let png = self.dir.join("loss.png");
        if let Err(e) = plot::write_plots(&self.dir.join("metrics.jsonl"), &png) {
            self.progress.println(&format!("warning: loss plot: {e}"));
        }
    }

    /// Whether the kNN monitor runs after epoch `epoch` (0-based).
    fn knn_due(&self, epoch: u64) -> bool {
        let Some(every) = self.eval.as_ref().and_then(|e| e.knn_every) else {
            return false;
        };
        let done = (epoch + 1) * self.per_epoch;
        let period = match every {
            Interval::Epochs(e) => ((e * self.per_epoch as f64).round() as u64).max(1),
            Interval::Steps(s) => s.max(1),
        };
        // The epoch's end passes a multiple of the period.
        done / period > (done - self.per_epoch) / period
    }

    fn knn<B: AutodiffBackend>(&mut self, program: &Program<B>) -> Option<f64> {
        let spec = self.eval.clone()?;
        if self.monitor_off {
            return None;
        }
        if self.splits.is_none() {
            match eval::load_splits(&self.plan, &spec, Some(MONITOR_TRAIN)) {
                Ok(s) => self.splits = Some(s),
                Err(e) => {
                    self.progress
                        .println(&format!("warning: kNN monitor off: {e}"));
                    self.monitor_off = true;
                    return None;
                }
            }
        }
        let (train, test) = self.splits.as_ref()?;
        match eval::knn_monitor(program, train, test, MONITOR_TRAIN, MONITOR_TEST, &spec.knn) {
            Ok(acc) => Some(acc),
            Err(e) => {
                self.progress
                    .println(&format!("warning: kNN monitor off: {e}"));
                self.monitor_off = true;
                None
            }
        }
    }
}

impl<B: AutodiffBackend> Observer<B> for Monitor {
    fn on_step(&mut self, log: &StepLog) {
        self.progress.on_step(
            log.step,
            log.loss,
            &log.terms,
            log.lr,
            log.phases.data,
            log.seconds,
        );
        if (log.step + 1).is_multiple_of(self.per_epoch) {
            self.plot();
        }
    }

    fn on_checkpoint(&mut self, step: u64, dir: &Path) {
        let shown = dir.strip_prefix(&self.dir).unwrap_or(dir);
        self.progress
            .println(&format!("    checkpoint {} (step {step})", shown.display()));
    }

    fn on_epoch_end(&mut self, epoch: u64, program: &Program<B>) -> Vec<(String, f64)> {
        if !self.knn_due(epoch) {
            return Vec::new();
        }
        let t = std::time::Instant::now();
        match self.knn(program) {
            Some(acc) => {
                self.progress.println(&format!(
                    "    epoch {}: kNN top-1 {:.2}% ({MONITOR_TRAIN} train / {MONITOR_TEST} test images, {:.1} s)",
                    epoch + 1,
                    100.0 * acc,
                    t.elapsed().as_secs_f64()
                ));
                vec![("knn".to_string(), acc)]
            }
            None => Vec::new(),
        }
    }
}
