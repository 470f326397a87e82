//! What `canc bench` divides by: a device's nominal peak FLOP/s (for MFU) and the memory a run
//! holds at its peak. CPUs: threads × clock × FLOP/cycle from `/proc/cpuinfo`; NVIDIA GPUs: the
//! datasheet figure for the model `nvidia-smi` names, and the memory it reports for this
//! process. Every figure says where it came from; unknown devices give none rather than a guess.

use std::process::Command;

/// A nominal peak rate and how it was obtained.
#[derive(Debug, Clone, PartialEq)]
pub struct Peak {
    /// FLOP/s.
    pub flops: f64,
    /// How the figure was obtained (`2 threads × 2.45 GHz × 32 f32 FLOP/cycle (AVX2 FMA)`).
    pub source: String,
}

/// The nominal f32 peak of `threads` cores of this machine's CPU, from `/proc/cpuinfo`: two
/// FMA units per core are assumed (AVX-512: 64 f32 FLOP/cycle, AVX2+FMA: 32, else 8).
pub fn cpu_peak(threads: usize) -> Option<Peak> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    cpu_peak_from(&info, threads)
}

/// [`cpu_peak`] of the text of a `/proc/cpuinfo`.
pub fn cpu_peak_from(cpuinfo: &str, threads: usize) -> Option<Peak> {
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    let mhz: f64 = field("cpu MHz")?.parse().ok()?;
    let flags = field("flags").unwrap_or_default();
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    let (per_cycle, isa) = if has("avx512f") {
        (64.0, "AVX-512 FMA")
    } else if has("avx2") && has("fma") {
        (32.0, "AVX2 FMA")
    } else {
        (8.0, "SSE")
    };
    if mhz <= 0.0 || threads == 0 {
        return None;
    }
    Some(Peak {
        flops: threads as f64 * mhz * 1e6 * per_cycle,
        source: format!(
            "{threads} threads × {:.2} GHz × {per_cycle} f32 FLOP/cycle ({isa}, 2 units assumed)",
            mhz / 1e3
        ),
    })
}

/// Dense datasheet peaks, TFLOP/s: (name fragment, f32 on CUDA cores, bf16 on tensor cores).
/// More specific fragments first.
const GPUS: &[(&str, f64, f64)] = &[
    ("H100 PCIe", 51.2, 756.0),
    ("H100 NVL", 60.0, 835.0),
    ("H100", 66.9, 989.4),
    ("H200", 66.9, 989.4),
    ("GH200", 66.9, 989.4),
    ("A100", 19.5, 312.0),
    ("L40S", 91.6, 362.0),
];

/// The datasheet peak of a GPU model named `name` for `precision` (`f32` or `bf16`).
pub fn gpu_peak_for(name: &str, precision: &str) -> Option<Peak> {
    let &(frag, f32_tf, bf16_tf) = GPUS.iter().find(|(frag, _, _)| name.contains(frag))?;
    let (tf, what) = match precision {
        "bf16" | "f16" => (bf16_tf, "dense bf16 tensor-core"),
        _ => (f32_tf, "f32 CUDA-core"),
    };
    Some(Peak {
        flops: tf * 1e12,
        source: format!("{name}: {tf} TFLOP/s {what} datasheet peak ({frag})"),
    })
}

/// The model name of GPU `index`, from `nvidia-smi`.
pub fn gpu_name(index: usize) -> Option<String> {
    let out = Command::new("nvidia-smi")
        .args([
            "--query-gpu=name",
            "--format=csv,noheader",
            &format!("--id={index}"),
        ])
        .output()
        .ok()?;
    let name = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !name.is_empty()).then_some(name)
}

/// GPU memory held by this process (MiB), from `nvidia-smi`: Burn's pools keep what they
/// reserved, so after the timed steps this is the run's peak reservation.
pub fn gpu_memory_mib() -> Option<f64> {
    let out = Command::new("nvidia-smi")
        .args([
            "--query-compute-apps=pid,used_memory",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .ok()?;
    let me = std::process::id().to_string();
    String::from_utf8(out.stdout).ok()?.lines().find_map(|l| {
        let (pid, mib) = l.split_once(',')?;
        (pid.trim() == me).then(|| mib.trim().parse().ok())?
    })
}

/// The peak resident memory of this process (MiB), `VmHWM` of `/proc/self/status`: weights,
/// optimizer state, activations, and the dataset in memory.
pub fn host_peak_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_peak_from_cpuinfo() {
        let info = "processor\t: 0\nmodel name\t: AMD EPYC\ncpu MHz\t\t: 2500.000\n\
                    flags\t\t: fpu sse avx2 fma\n";
        let p = cpu_peak_from(info, 2).unwrap();
        // 2 × 2.5e9 × 32
        assert_eq!(p.flops, 160e9);
        assert!(p.source.contains("AVX2"), "{}", p.source);
        let info512 = info.replace("fma", "fma avx512f");
        assert_eq!(cpu_peak_from(&info512, 1).unwrap().flops, 160e9);
        assert!(
            cpu_peak_from("flags: avx2", 2).is_none(),
            "no clock: no figure"
        );
        assert!(cpu_peak_from(info, 0).is_none());
    }

    #[test]
    fn gpu_peaks_by_name() {
        let tf = |name: &str, p: &str| gpu_peak_for(name, p).map(|x| x.flops / 1e12);
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9);
        assert!(close(tf("NVIDIA H100 80GB HBM3", "f32"), 66.9));
        assert!(close(tf("NVIDIA H100 PCIe", "bf16"), 756.0));
        assert!(close(tf("NVIDIA H200", "bf16"), 989.4));
        assert!(gpu_peak_for("NVIDIA GeForce GTX 1080", "f32").is_none());
    }

    #[test]
    fn host_peak_is_read() {
        let mib = host_peak_mib().unwrap();
        assert!(mib > 1.0, "{mib}");
    }
}
