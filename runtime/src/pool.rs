//! Where a training step's CPU work runs: on a worker thread of rayon's global pool.
//!
//! Every fused op, Burn CPU op and matrix product of a step is a rayon parallel loop. Called
//! from a thread outside the pool, each one injects a job, puts the caller to sleep and wakes
//! it when the job is done: two context switches per op, several hundred ops per step, and on
//! a machine with as many pool threads as cores the woken caller has to wait for a core. Run
//! on a worker, the step's loops start inline on that worker and the other workers steal from
//! it, as rayon intends.

/// Runs `f` on a worker of rayon's global pool (inline when already on one) and returns its
/// result; a panic in `f` resumes on the caller.
pub fn on_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    // `scope` from outside the pool runs its closure on a worker and blocks until it returns.
    rayon::scope(|_| f())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_on_a_worker_and_returns_the_result() {
        assert!(rayon::current_thread_index().is_none());
        let (on, v) = on_worker(|| (rayon::current_thread_index().is_some(), 6 * 7));
        assert!(on);
        assert_eq!(v, 42);
        // Nested calls run inline.
        assert!(on_worker(|| on_worker(rayon::current_thread_index)).is_some());
    }
}
