//! An opt-in wall-clock profile of the plan's forward steps (`CANC_PROFILE=1`): how long each
//! step (`h1 = Call`, `mae = Mse`, …) took, summed over the process. Meaningful on the CPU
//! backend, whose ops run synchronously; on a GPU it measures launch time, not kernel time.
//! `canc bench` prints it after its figures.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Per label: (total time, count).
static TOTALS: Mutex<Option<HashMap<String, (Duration, u64)>>> = Mutex::new(None);

/// Whether `CANC_PROFILE=1` is set (read once).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("CANC_PROFILE").is_ok_and(|v| v == "1"))
}

/// Adds `took` to `label`'s total.
pub fn record(label: &str, took: Duration) {
    let mut guard = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    let e = guard
        .get_or_insert_with(HashMap::new)
        .entry(label.to_string())
        .or_default();
    e.0 += took;
    e.1 += 1;
}

/// The totals so far, largest first, and clears them: `(label, total, count)`.
pub fn take() -> Vec<(String, Duration, u64)> {
    let mut guard = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    let mut v: Vec<_> = guard
        .take()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, (d, n))| (k, d, n))
        .collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_accumulate_and_sort_largest_first() {
        record("a", Duration::from_millis(2));
        record("b", Duration::from_millis(5));
        record("a", Duration::from_millis(1));
        let t = take();
        assert_eq!(t[0], ("b".into(), Duration::from_millis(5), 1));
        assert_eq!(t[1], ("a".into(), Duration::from_millis(3), 2));
        assert!(take().is_empty());
    }
}
