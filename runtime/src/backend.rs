//! Backends and device selection: the CPU backend (Burn's `flex`) always; CUDA behind the `cuda`
//! feature, chosen at run time with `--device cuda[:N]`.

use std::fmt;

/// The CPU backend.
pub type Cpu = burn::backend::Flex;
/// The CPU backend with autodiff, for training.
pub type CpuTrain = burn::backend::Autodiff<Cpu>;

/// The CUDA backend (feature `cuda`).
#[cfg(feature = "cuda")]
pub type Gpu = burn::backend::Cuda;
/// The CUDA backend with autodiff (feature `cuda`).
#[cfg(feature = "cuda")]
pub type GpuTrain = burn::backend::Autodiff<Gpu>;

/// Work to run on whichever training backend a [`DeviceSpec`] selects.
pub trait OnBackend {
    /// What the work returns.
    type Output;
    /// Runs the work on backend `B` and `device`.
    fn run<B: burn::tensor::backend::AutodiffBackend>(self, device: &B::Device) -> Self::Output;
}

/// Runs `work` on the device `spec` names: the CPU backend, or CUDA device N when built with
/// the `cuda` feature and an NVIDIA driver is present (checked here, before Burn would panic).
pub fn dispatch<W: OnBackend>(spec: DeviceSpec, work: W) -> Result<W::Output, DeviceError> {
    match spec {
        DeviceSpec::Cpu => Ok(work.run::<CpuTrain>(&Default::default())),
        DeviceSpec::Cuda(index) => cuda(index, work),
    }
}

#[cfg(feature = "cuda")]
fn cuda<W: OnBackend>(index: usize, work: W) -> Result<W::Output, DeviceError> {
    if !cuda_driver_present() {
        return Err(DeviceError::NoDriver);
    }
    // Before the first CUDA op: compiled kernels and autotune results persist between runs.
    crate::cubecl_config::configure();
    Ok(work.run::<GpuTrain>(&burn::backend::cuda::CudaDevice::new(index)))
}

#[cfg(not(feature = "cuda"))]
fn cuda<W: OnBackend>(_index: usize, _work: W) -> Result<W::Output, DeviceError> {
    Err(DeviceError::NoCudaFeature)
}

/// A device named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The CPU.
    Cpu,
    /// CUDA device `N`.
    Cuda(usize),
}

/// A `--device` value that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    /// Not `cpu`, `cuda` or `cuda:N`.
    #[error("unknown device `{0}`: expected `cpu`, `cuda` or `cuda:N`")]
    Unknown(String),
    /// CUDA requested on a machine without an NVIDIA driver.
    #[error(
        "no NVIDIA driver found (no /proc/driver/nvidia/version, no libcuda.so.1): is this a GPU machine?"
    )]
    NoDriver,
    /// CUDA requested from a build without the `cuda` feature.
    #[error(
        "this canc was built without CUDA support; rebuild with `cargo build --release --features cuda`"
    )]
    NoCudaFeature,
}

impl DeviceSpec {
    /// Parses `cpu`, `cuda`, `cuda:N`.
    pub fn parse(s: &str) -> Result<Self, DeviceError> {
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| DeviceError::Unknown(s.to_string())),
        }
    }

    /// Checks that this build can use the device (CUDA needs the `cuda` feature).
    pub fn available(self) -> Result<Self, DeviceError> {
        match self {
            DeviceSpec::Cuda(_) if !cfg!(feature = "cuda") => Err(DeviceError::NoCudaFeature),
            d => Ok(d),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// A GPU-only speed setting of training backend `B`: `var=1` / `=0` in the environment decides;
/// without it, on for every backend but the CPU's (for changes that cut GPU kernel launches and
/// measured slower on the CPU).
pub fn gpu_default<B: 'static>(var: &str) -> bool {
    match std::env::var(var).as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => std::any::TypeId::of::<B>() != std::any::TypeId::of::<CpuTrain>(),
    }
}

/// Whether an NVIDIA driver is visible (`/proc/driver/nvidia/version` or `libcuda`), checked
/// before Burn would panic on a missing GPU.
pub fn cuda_driver_present() -> bool {
    std::path::Path::new("/proc/driver/nvidia/version").exists()
        || [
            "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
            "/usr/lib64/libcuda.so.1",
        ]
        .iter()
        .any(|p| std::path::Path::new(p).exists())
}

/// A warning for `plan`'s `train.precision` on `device`, if it needs one: bf16 on the CPU
/// rounds the matrix products' inputs like a GPU would, but Burn's CPU backend has no bf16
/// kernels (it converts to f32), so it is slower, not faster.
pub fn precision_warning(plan: &canc_compiler::Plan, device: DeviceSpec) -> Option<String> {
    let bf16 = matches!(
        crate::exec::matmul_dtype(plan),
        Ok(Some(burn::tensor::FloatDType::BF16))
    );
    (bf16 && device == DeviceSpec::Cpu).then(|| {
        "train.precision = bf16 on the CPU: the matrix products' inputs are rounded to bf16, \
         but the CPU backend computes in f32 (no bf16 kernels), so this is slower than f32"
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!(DeviceSpec::parse("cpu"), Ok(DeviceSpec::Cpu));
        assert_eq!(DeviceSpec::parse("cuda"), Ok(DeviceSpec::Cuda(0)));
        assert_eq!(DeviceSpec::parse("cuda:3"), Ok(DeviceSpec::Cuda(3)));
        assert!(matches!(
            DeviceSpec::parse("cuda:x"),
            Err(DeviceError::Unknown(_))
        ));
        assert!(matches!(
            DeviceSpec::parse("tpu"),
            Err(DeviceError::Unknown(_))
        ));
        if !cfg!(feature = "cuda") {
            assert_eq!(
                DeviceSpec::Cuda(0).available(),
                Err(DeviceError::NoCudaFeature)
            );
        }
    }
}
