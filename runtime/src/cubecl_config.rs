//! canc's settings for CubeCL, the compiler behind Burn's CUDA backend: where it keeps compiled
//! kernels and autotune results between runs, and an optional per-kernel profile.
//!
//! CubeCL's defaults keep no compiled kernels at all (every process JIT-compiles every kernel
//! again: minutes with `--features cuda-fusion`, BENCHMARKS.md) and put autotune results in the
//! `target/` folder of whatever Cargo project the working directory is in. canc gives both one
//! folder that outlives the process: `$CANC_KERNEL_CACHE`, else `$XDG_CACHE_HOME/canc/cubecl`,
//! else `~/.cache/canc/cubecl`. A CubeCL config file of the user's (`cubecl.toml`, or a
//! `[cubecl]` table in `burn.toml`, in the working directory or above) wins: canc then leaves
//! CubeCL's configuration alone. CubeCL names each cached entry by a hash of the kernel and its
//! own version, so a cache never hands a kernel to a build it was not compiled for.
//!
//! The kernel profile ([`profile_kernels_to`], `canc bench --kernel-profile FILE`) has CubeCL
//! time every kernel on the device and write, at each wait for the device, a table of the
//! kernels run since the last one (name, device time, count). Each launch then waits for its
//! kernel, so the step's own times mean nothing in that run; the counts and device times are
//! what it is for.

use std::path::{Path, PathBuf};

/// The folder canc asks CubeCL to keep its caches in (see the module docs); `None` when no
/// `HOME` or cache folder is known.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("CANC_KERNEL_CACHE") {
        return Some(dir);
    }
    let base = var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|h| h.join(".cache")))?;
    Some(base.join("canc").join("cubecl"))
}

/// The CubeCL config file CubeCL itself would read from `dir` (the working directory), if any:
/// `cubecl.toml` or `CubeCL.toml`, or a `burn.toml`/`Burn.toml` with a `[cubecl…]` table, in
/// `dir` or a folder above it.
pub fn user_config_file(dir: &Path) -> Option<PathBuf> {
    dir.ancestors().find_map(|d| {
        let own = ["cubecl.toml", "CubeCL.toml"]
            .iter()
            .map(|n| d.join(n))
            .find(|p| p.is_file());
        own.or_else(|| {
            ["burn.toml", "Burn.toml"]
                .iter()
                .map(|n| d.join(n))
                .find(|p| {
                    std::fs::read_to_string(p).is_ok_and(|text| {
                        text.lines().any(|l| l.trim_start().starts_with("[cubecl"))
                    })
                })
        })
    })
}

/// The file [`profile_kernels_to`] asked for.
static PROFILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Asks for the per-kernel profile (see the module docs) in `file`. Must be called before the
/// first CUDA operation. Refused, with the reason, when the user has a CubeCL config file in the
/// working directory or above ([`configure`] then leaves CubeCL alone) or a profile file was
/// already chosen.
pub fn profile_kernels_to(file: PathBuf) -> Result<(), String> {
    let cwd = std::env::current_dir().map_err(|e| format!("no working directory: {e}"))?;
    if let Some(user) = user_config_file(&cwd) {
        return Err(format!(
            "`{}` configures CubeCL here, and canc leaves it alone; set its [profiling.logger] \
             (level = \"basic\", file = ...) instead",
            user.display()
        ));
    }
    PROFILE
        .set(file)
        .map_err(|_| "a kernel profile file was already chosen".to_string())
}

/// Points CubeCL's kernel and autotune caches at [`cache_dir`] and turns on the kernel profile
/// if one was asked for, unless the user has a CubeCL config file (then CubeCL reads it as
/// usual). Must run before the first CUDA operation of the process; later calls return the first
/// call's answer. Returns the cache folder in use, if canc chose it.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
pub fn configure() -> Option<PathBuf> {
    use burn::cubecl::config::{
        CubeClRuntimeConfig, RuntimeConfig, cache::CacheConfig, profiling::ProfilingLogLevel,
    };
    static CHOSEN: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    CHOSEN
        .get_or_init(|| {
            let cwd = std::env::current_dir().ok()?;
            if user_config_file(&cwd).is_some() {
                return None;
            }
            // CubeCL's own environment overrides (`CUBECL_DEBUG_LOG`, `CUBECL_AUTOTUNE_LEVEL`,
            // …) still apply.
            let mut config = CubeClRuntimeConfig::default().override_from_env();
            if let Some(file) = PROFILE.get() {
                config.profiling.logger.level = ProfilingLogLevel::Basic;
                config.profiling.logger.file = Some(file.clone());
                config.profiling.logger.append = false;
            }
            let dir = cache_dir();
            if let Some(dir) = &dir {
                config.compilation.cache = Some(CacheConfig::File(dir.clone()));
                config.autotune.cache = CacheConfig::File(dir.clone());
            }
            CubeClRuntimeConfig::set(config);
            dir
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cubecl_file_or_a_burn_file_with_a_cubecl_table_is_the_users_config() {
        let root = std::env::temp_dir().join(format!("canc-cubecl-config-{}", std::process::id()));
        let deep = root.join("a").join("b");
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(user_config_file(&deep), None);
        // A burn.toml without a cubecl table is not CubeCL's config.
        std::fs::write(root.join("a").join("burn.toml"), "[other]\nx = 1\n").unwrap();
        assert_eq!(user_config_file(&deep), None);
        std::fs::write(
            root.join("a").join("burn.toml"),
            "[other]\n  [cubecl.autotune]\nlevel = \"minimal\"\n",
        )
        .unwrap();
        assert_eq!(
            user_config_file(&deep),
            Some(root.join("a").join("burn.toml"))
        );
        // The nearest file wins, as CubeCL searches.
        std::fs::write(deep.join("cubecl.toml"), "").unwrap();
        assert_eq!(user_config_file(&deep), Some(deep.join("cubecl.toml")));
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// With no config file of the user's, CubeCL's configuration (read by the CUDA backend on
    /// its first op) has both caches in canc's folder. Needs no GPU.
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    #[test]
    fn configure_points_both_cubecl_caches_at_the_folder() {
        use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig, cache::CacheConfig};
        let Some(dir) = configure() else {
            // A cubecl.toml above the test's directory, or no HOME: nothing to check.
            assert!(
                user_config_file(&std::env::current_dir().unwrap()).is_some()
                    || cache_dir().is_none()
            );
            return;
        };
        assert_eq!(Some(dir.clone()), cache_dir());
        let config = CubeClRuntimeConfig::get();
        assert!(matches!(&config.compilation.cache, Some(CacheConfig::File(d)) if *d == dir));
        assert!(matches!(&config.autotune.cache, CacheConfig::File(d) if *d == dir));
        // No profile was asked for in this process.
        assert!(config.profiling.logger.file.is_none());
        // A second call keeps the first answer (CubeCL's config can be set only once).
        assert_eq!(configure(), Some(dir));
    }
}
