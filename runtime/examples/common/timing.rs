//! Timing shared by the micro-benchmark examples.

use std::time::Instant;

/// Seconds per call of `run`: 3 warm-up calls, then the best of 7 rounds of `calls` calls each.
/// This container is shared, so the fastest round is the one least disturbed.
pub fn best_time(calls: u32, mut run: impl FnMut()) -> f64 {
    for _ in 0..3 {
        run();
    }
    (0..7)
        .map(|_| {
            let t0 = Instant::now();
            for _ in 0..calls {
                run();
            }
            t0.elapsed().as_secs_f64() / f64::from(calls)
        })
        .fold(f64::INFINITY, f64::min)
}
