//! Backends and device selection: the CPU backend (Burn's `flex`) always; CUDA behind the `cuda`
//! feature, chosen at run time with `--device cuda[:N]`; any Vulkan, Metal or DirectX 12 GPU
//! through Burn's `wgpu` backend behind the `wgpu` feature (`--device wgpu[:N]`).

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

/// The wgpu backend (feature `wgpu`): CubeCL's kernels on Vulkan, Metal or DirectX 12.
#[cfg(feature = "wgpu")]
pub type Wgpu = burn::backend::Wgpu;
/// The wgpu backend with autodiff (feature `wgpu`).
#[cfg(feature = "wgpu")]
pub type WgpuTrain = burn::backend::Autodiff<Wgpu>;

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
        DeviceSpec::Wgpu(index) => wgpu(index, work),
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

#[cfg(feature = "wgpu")]
fn wgpu<W: OnBackend>(index: usize, work: W) -> Result<W::Output, DeviceError> {
    let adapters = wgpu_adapters();
    let Some(adapter) = adapters.get(index) else {
        return Err(DeviceError::NoWgpuAdapter {
            index,
            found: adapters.len(),
        });
    };
    // Before the first kernel: compiled kernels and autotune results persist between runs.
    crate::cubecl_config::configure();
    Ok(work.run::<WgpuTrain>(&adapter.device()))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu<W: OnBackend>(_index: usize, _work: W) -> Result<W::Output, DeviceError> {
    Err(DeviceError::NoWgpuFeature)
}

/// An adapter wgpu can reach: a GPU, or a software rasteriser such as Mesa's lavapipe.
#[cfg(feature = "wgpu")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgpuAdapter {
    /// The driver's name for it, e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`.
    pub name: String,
    /// Its kind: discrete, integrated, virtual, CPU or other.
    pub kind: ::wgpu::DeviceType,
    /// Its rank among the adapters of its kind, in wgpu's order (Burn selects by kind and rank).
    rank: usize,
}

#[cfg(feature = "wgpu")]
impl WgpuAdapter {
    /// Burn's device for this adapter.
    pub fn device(&self) -> burn::backend::wgpu::WgpuDevice {
        use ::wgpu::DeviceType;
        use burn::backend::wgpu::WgpuDevice;
        match self.kind {
            DeviceType::DiscreteGpu => WgpuDevice::DiscreteGpu(self.rank),
            DeviceType::IntegratedGpu => WgpuDevice::IntegratedGpu(self.rank),
            DeviceType::VirtualGpu => WgpuDevice::VirtualGpu(self.rank),
            DeviceType::Cpu => WgpuDevice::Cpu,
            DeviceType::Other => WgpuDevice::DefaultDevice,
        }
    }
}

/// The adapters of the graphics API Burn uses here (Vulkan on Linux, Metal on macOS, DirectX 12
/// on Windows), best first (discrete, integrated, virtual, CPU, other): `--device wgpu:N` is the
/// N-th. Probed without creating a device, so a machine without one gets an empty list, not
/// Burn's panic.
#[cfg(feature = "wgpu")]
pub fn wgpu_adapters() -> Vec<WgpuAdapter> {
    use ::wgpu::DeviceType;
    use burn::backend::wgpu::graphics::{AutoGraphicsApi, GraphicsApi};
    let instance = ::wgpu::Instance::default();
    let found = burn::cubecl::future::block_on(
        instance.enumerate_adapters(AutoGraphicsApi::backend().into()),
    );
    let mut adapters: Vec<WgpuAdapter> = Vec::new();
    for a in found {
        let info = a.get_info();
        let rank = adapters
            .iter()
            .filter(|x| x.kind == info.device_type)
            .count();
        adapters.push(WgpuAdapter {
            name: info.name,
            kind: info.device_type,
            rank,
        });
    }
    let order = |k: DeviceType| match k {
        DeviceType::DiscreteGpu => 0,
        DeviceType::IntegratedGpu => 1,
        DeviceType::VirtualGpu => 2,
        DeviceType::Cpu => 3,
        DeviceType::Other => 4,
    };
    adapters.sort_by_key(|a| order(a.kind));
    adapters
}

/// A device named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The CPU.
    Cpu,
    /// CUDA device `N`.
    Cuda(usize),
    /// wgpu adapter `N` of `wgpu_adapters()` (Vulkan, Metal, DirectX 12); 0 is the best one.
    Wgpu(usize),
}

/// A `--device` value that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    /// Not `cpu`, `cuda`, `cuda:N`, `wgpu` or `wgpu:N`.
    #[error("unknown device `{0}`: expected `cpu`, `cuda`, `cuda:N`, `wgpu` or `wgpu:N`")]
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
    /// wgpu requested from a build without the `wgpu` feature.
    #[error(
        "this canc was built without wgpu support; rebuild with `cargo build --release --features wgpu`"
    )]
    NoWgpuFeature,
    /// `wgpu:N` with fewer than N + 1 adapters.
    #[error(
        "wgpu adapter {index} not found: {found} adapter(s) visible (Vulkan driver installed? on Linux \
         without a GPU, Mesa's lavapipe: `apt-get install mesa-vulkan-drivers`)"
    )]
    NoWgpuAdapter {
        /// The adapter asked for.
        index: usize,
        /// How many there are.
        found: usize,
    },
}

impl DeviceSpec {
    /// Parses `cpu`, `cuda`, `cuda:N`, `wgpu`, `wgpu:N`.
    pub fn parse(s: &str) -> Result<Self, DeviceError> {
        let index = |prefix: &str| s.strip_prefix(prefix).and_then(|n| n.parse().ok());
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            "wgpu" => Ok(DeviceSpec::Wgpu(0)),
            _ => index("cuda:")
                .map(DeviceSpec::Cuda)
                .or_else(|| index("wgpu:").map(DeviceSpec::Wgpu))
                .ok_or_else(|| DeviceError::Unknown(s.to_string())),
        }
    }

    /// Checks that this build can use the device (CUDA needs the `cuda` feature, wgpu `wgpu`).
    pub fn available(self) -> Result<Self, DeviceError> {
        match self {
            DeviceSpec::Cuda(_) if !cfg!(feature = "cuda") => Err(DeviceError::NoCudaFeature),
            DeviceSpec::Wgpu(_) if !cfg!(feature = "wgpu") => Err(DeviceError::NoWgpuFeature),
            d => Ok(d),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceSpec::Wgpu(n) => write!(f, "wgpu:{n}"),
        }
    }
}

/// An on/off switch from the environment: `var=1` is `Some(true)`, `var=0` `Some(false)`,
/// anything else (or unset) `None`, for the caller's default.
pub fn env_switch(var: &str) -> Option<bool> {
    match std::env::var(var).as_deref() {
        Ok("1") => Some(true),
        Ok("0") => Some(false),
        _ => None,
    }
}

/// Whether training backend `B` is not the CPU's (CUDA's, wgpu's, with or without fusion).
pub fn is_gpu<B: 'static>() -> bool {
    std::any::TypeId::of::<B>() != std::any::TypeId::of::<CpuTrain>()
}

/// A GPU-only speed setting of training backend `B`: `var=1` / `=0` in the environment decides;
/// without it, on for every backend but the CPU's (for changes that cut GPU kernel launches and
/// measured slower on the CPU).
pub fn gpu_default<B: 'static>(var: &str) -> bool {
    env_switch(var).unwrap_or_else(is_gpu::<B>)
}

/// Whether backend `B` runs on Burn's kernel fusion (`burn-fusion`, on with `--features
/// cuda-fusion`), which merges chains of element-wise ops into single kernels.
pub fn kernel_fusion<B: 'static>() -> bool {
    std::any::type_name::<B>().contains("burn_fusion::")
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
        assert!(!kernel_fusion::<CpuTrain>());
        assert_eq!(DeviceSpec::parse("wgpu"), Ok(DeviceSpec::Wgpu(0)));
        assert_eq!(DeviceSpec::parse("wgpu:2"), Ok(DeviceSpec::Wgpu(2)));
        assert_eq!(DeviceSpec::Wgpu(2).to_string(), "wgpu:2");
        assert!(matches!(
            DeviceSpec::parse("wgpu:"),
            Err(DeviceError::Unknown(_))
        ));
        if !cfg!(feature = "wgpu") {
            assert_eq!(
                DeviceSpec::Wgpu(0).available(),
                Err(DeviceError::NoWgpuFeature)
            );
        }
    }
}
