//! The per-kernel profile reaches CubeCL's configuration (its own process: CubeCL's
//! configuration can be set once). Needs the `cuda` or `wgpu` feature, no GPU.
#![cfg(any(feature = "cuda", feature = "wgpu"))]

use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig, profiling::ProfilingLogLevel};
use canc_runtime::cubecl_config::{configure, profile_kernels_to, user_config_file};

#[test]
fn a_requested_profile_turns_on_cubecl_kernel_timing_into_the_file() {
    let file = std::env::temp_dir().join(format!("canc-kernels-{}.txt", std::process::id()));
    if user_config_file(&std::env::current_dir().unwrap()).is_some() {
        // The user's CubeCL file wins: the request is refused, naming it.
        assert!(
            profile_kernels_to(file)
                .unwrap_err()
                .contains("configures CubeCL")
        );
        return;
    }
    assert!(profile_kernels_to(file.clone()).is_ok());
    assert!(
        profile_kernels_to(file.clone()).is_err(),
        "a second file is refused"
    );
    configure();
    let config = CubeClRuntimeConfig::get();
    assert!(matches!(
        config.profiling.logger.level,
        ProfilingLogLevel::Basic
    ));
    assert_eq!(config.profiling.logger.file.as_ref(), Some(&file));
    assert!(!config.profiling.logger.append);
}
