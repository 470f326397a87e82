//! glibc malloc settings for training: Burn's CPU backend allocates and frees large tensors
//! every step, and glibc's defaults return that memory to the kernel (and fault it back in)
//! each time. Keeping it mapped measured 13–18 % faster CPU steps (BENCHMARKS.md); GPUs and
//! other C libraries are unaffected.

/// Allocations of at least this many bytes get their own mapping (glibc's default adapts
/// from 128 KiB).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 32 << 20;
/// Free heap top kept before trimming it back to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: i32 = i32::MAX;
/// Extra heap requested on each growth.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TOP_PAD: i32 = 64 << 20;
/// One malloc arena for all threads. With glibc's default (up to 8 per core) each rayon
/// worker allocates from its own arena, a tensor freed by another thread goes back to the
/// arena that made it, and each arena grows its own fresh (page-faulted, kernel-zeroed)
/// memory: the CAN step at batch 256 faulted in about 150k pages per step and its forward
/// pass took 2.0–2.2 s; with one arena 1.4–1.5 s (BENCHMARKS.md). Tensors are allocated a
/// few at a time per op, so one arena's lock is not contended.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENA_MAX: i32 = 1;

/// Applies the settings above, unless the user chose their own (`GLIBC_TUNABLES` set) or
/// opted out (`CANC_MALLOC_DEFAULTS=1`). Returns whether they were applied.
pub fn tune() -> bool {
    if std::env::var_os("GLIBC_TUNABLES").is_some()
        || std::env::var_os("CANC_MALLOC_DEFAULTS").is_some_and(|v| v == "1")
    {
        return false;
    }
    apply()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn apply() -> bool {
    // SAFETY: mallopt only changes allocator parameters; it is called at start-up, before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
            && libc::mallopt(libc::M_TOP_PAD, TOP_PAD) == 1
            && libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
    false
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_accepts_the_settings() {
        assert!(super::apply());
    }
}
