//! Batches built on a background thread, a bounded number of steps ahead of training.
//!
//! ```text
//!  producer thread: step s ─epoch_order─▶ indices ─make_batch × accum─▶ StepBatches ─┐
//!                                                                   sync_channel(depth)
//!  trainer:                                 next_timed() ◀── (batches, seconds waited) ┘
//! ```
//!
//! [`prefetch`] runs the producer inside [`std::thread::scope`], so it borrows the [`Dataset`]
//! instead of copying it, and the scope guarantees the thread has ended when `prefetch` returns.
//! The channel holds at most `depth` finished steps: the producer stays that far ahead and the
//! trainer only blocks when augmentation is slower than the step itself. The batches are exactly
//! those of the inline path ([`BatchPlan::step`]): every image's RNG is seeded from
//! (seed, epoch, step, index, view step), never from the thread that builds it.
//!
//! When the consumer stops early (returns from its closure, or panics), the receiver is dropped,
//! the producer's next `send` fails and it returns; at most the batch it is building is wasted.
//! A data error is sent in order, as that step's item, and ends the stream.

use std::ops::Range;
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::Instant;

use canc_compiler::RValue;
use canc_compiler::plan::{Plan, ViewPlan};

use super::{Batch, DataError, Dataset, epoch_order, make_batch};

/// Everything needed to build any step's batches, independent of the model.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchPlan {
    /// The run's seed (`train.seed`).
    pub seed: u64,
    /// Images per optimizer step.
    pub batch: usize,
    /// Micro-batches per step (gradient accumulation); divides `batch`.
    pub accum: usize,
    /// Steps per epoch: each epoch reshuffles the data set and uses its first
    /// `per_epoch · batch` images.
    pub per_epoch: u64,
    /// The plan's views (augmentation pipelines).
    pub views: Vec<ViewPlan>,
    /// The plan's view steps: (step name, view, `from` step), in execution order.
    pub view_steps: Vec<(String, String, Option<String>)>,
}

/// The batches of one optimizer step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepBatches {
    /// The step index.
    pub step: u64,
    /// Its epoch (`step / per_epoch`).
    pub epoch: u64,
    /// `accum` micro-batches of `batch / accum` images each, in order.
    pub micro: Vec<Batch>,
}

/// The current epoch's image order, recomputed only when the epoch changes.
#[derive(Default)]
struct EpochCache {
    epoch: Option<u64>,
    order: Vec<usize>,
}

impl BatchPlan {
    /// The batch plan of `plan` at `batch` images per step in `accum` micro-batches, with
    /// `per_epoch` steps per epoch; the seed is `train.seed` (0 when absent), as in training.
    pub fn from_plan(plan: &Plan, batch: usize, accum: usize, per_epoch: u64) -> Self {
        BatchPlan {
            seed: plan.train.get("seed").and_then(RValue::as_i64).unwrap_or(0) as u64,
            batch,
            accum,
            per_epoch,
            views: plan.views.clone(),
            view_steps: crate::train::view_steps(plan),
        }
    }

    /// Checks that the plan's steps can be cut from `ds`: `accum ≥ 1` divides `batch ≥ 1`,
    /// `per_epoch ≥ 1`, and an epoch's `per_epoch · batch` images exist.
    pub fn check(&self, ds: &Dataset) -> Result<(), DataError> {
        if self.batch == 0 || self.accum == 0 || !self.batch.is_multiple_of(self.accum) {
            return Err(DataError::Batch(format!(
                "batch {} cannot be split into {} equal micro-batches",
                self.batch, self.accum
            )));
        }
        let need = (self.per_epoch as u128) * (self.batch as u128);
        if self.per_epoch == 0 || need > ds.n as u128 {
            return Err(DataError::Batch(format!(
                "{} steps per epoch of {} images need {need} images; the data set has {}",
                self.per_epoch, self.batch, ds.n
            )));
        }
        Ok(())
    }

    /// Builds the batches of `step` inline (on this thread; each batch's images in parallel).
    pub fn step(&self, ds: &Dataset, step: u64) -> Result<StepBatches, DataError> {
        self.check(ds)?;
        self.step_cached(ds, step, &mut EpochCache::default())
    }

    /// [`BatchPlan::step`] reusing `cache` for the epoch's order; assumes [`BatchPlan::check`]
    /// passed.
    fn step_cached(
        &self,
        ds: &Dataset,
        step: u64,
        cache: &mut EpochCache,
    ) -> Result<StepBatches, DataError> {
        let epoch = step / self.per_epoch;
        let within = (step % self.per_epoch) as usize;
        if cache.epoch != Some(epoch) {
            cache.order = epoch_order(ds.n, self.seed, epoch);
            cache.epoch = Some(epoch);
        }
        let idx = &cache.order[within * self.batch..(within + 1) * self.batch];
        let micro = idx
            .chunks(self.batch / self.accum)
            .map(|chunk| {
                make_batch(
                    ds,
                    chunk,
                    &self.views,
                    &self.view_steps,
                    self.seed,
                    epoch,
                    step,
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(StepBatches { step, epoch, micro })
    }
}

/// Where the batches come from: built on demand, or received from the producer thread.
enum Source<'a> {
    Inline {
        ds: &'a Dataset,
        plan: &'a BatchPlan,
        steps: Range<u64>,
        cache: EpochCache,
    },
    Background(Receiver<Result<StepBatches, DataError>>),
    /// The plan is unusable: this error, then nothing.
    Failed(Option<DataError>),
    Done,
}

/// The consumer's end of [`prefetch`]: the steps' batches in order, each with the time the
/// consumer waited for it. Ends after the last step or after the first error.
pub struct Prefetched<'a> {
    source: Source<'a>,
    waited: f64,
}

impl Prefetched<'_> {
    /// The next step's batches and the seconds this call blocked for them (inline: the time to
    /// build them; background: the time the queue was empty). `None` after the last step or
    /// after an error was returned.
    pub fn next_timed(&mut self) -> Option<(Result<StepBatches, DataError>, f64)> {
        let t = Instant::now();
        let item = match &mut self.source {
            Source::Inline {
                ds,
                plan,
                steps,
                cache,
            } => {
                let step = steps.next()?;
                plan.step_cached(ds, step, cache)
            }
            Source::Background(rx) => rx.recv().ok()?,
            Source::Failed(e) => Err(e.take()?),
            Source::Done => return None,
        };
        if item.is_err() {
            self.source = Source::Done;
        }
        let wait = t.elapsed().as_secs_f64();
        self.waited += wait;
        Some((item, wait))
    }

    /// Total seconds spent waiting in [`Prefetched::next_timed`] so far.
    pub fn total_wait(&self) -> f64 {
        self.waited
    }

    /// Whether a background thread builds the batches (`depth > 0`).
    pub fn is_background(&self) -> bool {
        matches!(self.source, Source::Background(_))
    }
}

impl Iterator for Prefetched<'_> {
    type Item = Result<StepBatches, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_timed().map(|(item, _)| item)
    }
}

/// Runs `f` with the batches of `steps`, built by a background thread up to `depth` steps
/// ahead (`depth = 0`: built inline when asked, no thread). Returns what `f` returns, after the
/// producer has stopped.
///
/// Memory: up to `depth + 1` steps of batches exist at once besides the one being trained on
/// (for 256 two-view 28×28 grey images a step is 1.6 MB; for 224×224 RGB, 308 MB).
///
/// An invalid plan (see [`BatchPlan::check`]) is delivered as the first item.
///
/// The producer augments on rayon's global pool: call this from a thread that is not one of
/// that pool's workers (e.g. the main thread), or a consumer blocked on an empty queue could hold
/// the worker the producer needs.
pub fn prefetch<R>(
    ds: &Dataset,
    plan: &BatchPlan,
    steps: Range<u64>,
    depth: usize,
    f: impl FnOnce(&mut Prefetched<'_>) -> R,
) -> R {
    if let Err(e) = plan.check(ds) {
        return f(&mut Prefetched {
            source: Source::Failed(Some(e)),
            waited: 0.0,
        });
    }
    if depth == 0 {
        return f(&mut Prefetched {
            source: Source::Inline {
                ds,
                plan,
                steps,
                cache: EpochCache::default(),
            },
            waited: 0.0,
        });
    }
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel(depth);
        let producer_steps = steps.clone();
        let spawned = std::thread::Builder::new()
            .name("canc-prefetch".into())
            .spawn_scoped(scope, move || {
                let mut cache = EpochCache::default();
                for step in producer_steps {
                    let item = plan.step_cached(ds, step, &mut cache);
                    let failed = item.is_err();
                    // A send error means the consumer is gone: stop.
                    if tx.send(item).is_err() || failed {
                        return;
                    }
                }
            });
        let source = match spawned {
            Ok(_) => Source::Background(rx),
            // No thread available: build inline instead.
            Err(_) => Source::Inline {
                ds,
                plan,
                steps,
                cache: EpochCache::default(),
            },
        };
        let mut p = Prefetched {
            source,
            waited: 0.0,
        };
        let out = f(&mut p);
        // Drop the receiver before the scope joins the producer, so a producer blocked on a
        // full queue wakes up and ends (on a panic in `f`, unwinding drops it too).
        drop(p);
        out
    })
}
