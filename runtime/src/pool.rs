//! Where a training step's CPU work runs: on a worker thread of rayon's global pool.
//!
//! Every fused op, Burn CPU op and matrix product of a step is a rayon parallel loop. Called
//! from a thread outside the pool, each one injects a job, puts the caller to sleep and wakes
//! it when the job is done: two context switches per op, several hundred ops per step, and on
//! a machine with as many pool threads as cores the woken caller has to wait for a core. Run
//! on a worker, the step's loops start inline on that worker and the other workers steal from
//! it, as rayon intends.
//!
//! One step at a time: a worker waiting in a join steals whatever is queued, and a whole step
//! stolen that way runs on top of the stack of another step, which may hold one of Burn
//! autodiff's graph locks that the stolen step then waits for, forever. So whole steps enter
//! the pool one by one, behind [`STEP_LOCK`]; their callers wait outside the pool.

use std::sync::Mutex;

/// Held while a whole step runs on the pool, so that no worker can steal a second one.
static STEP_LOCK: Mutex<()> = Mutex::new(());

/// Runs `f` on a worker of rayon's global pool and returns its result; a panic in `f` resumes
/// on the caller. Runs `f` inline when the caller is already a worker, or when the pool has a
/// single thread (nothing to gain, and a lone worker blocked on a graph lock could not run the
/// jobs of the thread holding it).
pub fn on_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() || rayon::current_num_threads() < 2 {
        return f();
    }
    // A panic in an earlier step poisons the lock but leaves nothing to repair.
    let _one_at_a_time = STEP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // `scope` from outside the pool runs its closure on a worker and blocks until it returns.
    rayon::scope(|_| f())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_on_a_worker_and_returns_the_result() {
        if rayon::current_num_threads() >= 2 {
            assert!(rayon::current_thread_index().is_none());
            let (on, v) = on_worker(|| (rayon::current_thread_index().is_some(), 6 * 7));
            assert!(on);
            assert_eq!(v, 42);
        }
        // Nested calls run inline.
        assert_eq!(on_worker(|| on_worker(|| 7)), 7);
    }

    #[test]
    fn concurrent_steps_are_serialised_and_all_finish() {
        use rayon::prelude::*;
        use std::sync::atomic::{AtomicUsize, Ordering};
        static INSIDE: AtomicUsize = AtomicUsize::new(0);
        let results = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        on_worker(|| {
                            let now = INSIDE.fetch_add(1, Ordering::SeqCst) + 1;
                            // Parallel work inside the step, as a real one has.
                            let sum: u64 = (0..10_000u64).into_par_iter().map(|i| i % 7).sum();
                            std::thread::sleep(std::time::Duration::from_millis(5));
                            INSIDE.fetch_sub(1, Ordering::SeqCst);
                            (now, sum)
                        })
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        });
        assert!(results.iter().all(|&(_, sum)| sum == results[0].1));
        if rayon::current_num_threads() >= 2 {
            assert!(
                results.iter().all(|&(now, _)| now == 1),
                "steps overlapped: {results:?}"
            );
        }
    }
}
