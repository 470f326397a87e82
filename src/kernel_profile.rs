//! Reads CubeCL's per-kernel profile (`canc bench --kernel-profile FILE`): at each wait for the
//! device CubeCL writes a table of the kernels run since the previous one (name, device time,
//! count). `canc bench` waits at the end of every phase, so the tables follow the phases in
//! order: data (no table when it ran no kernel), forward, backward, optimizer, for every step.

use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

/// One kernel's line of a table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KernelTime {
    /// The kernel's name as CubeCL prints it.
    pub name: String,
    /// Device time of its launches, in milliseconds.
    pub device_ms: f64,
    /// Launches.
    pub count: u64,
}

/// Milliseconds of a Rust `Duration` as `{:?}` prints it (`12.5µs`, `3ms`, `1.2s`).
fn duration_ms(text: &str) -> Option<f64> {
    let t = text.trim();
    let (num, scale) = [
        ("ns", 1e-6),
        ("µs", 1e-3),
        ("us", 1e-3),
        ("ms", 1.0),
        ("s", 1e3),
    ]
    .iter()
    .find_map(|(unit, scale)| t.strip_suffix(unit).map(|n| (n, *scale)))?;
    num.parse::<f64>().ok().map(|v| v * scale)
}

/// The tables of a profile, in order, each without its `Total` row.
pub fn tables(text: &str) -> Vec<Vec<KernelTime>> {
    let mut out = Vec::new();
    let mut cur: Option<Vec<KernelTime>> = None;
    for line in text.lines() {
        if line.starts_with("|⎺") {
            cur = Some(Vec::new());
            continue;
        }
        let Some(rows) = cur.as_mut() else { continue };
        let Some(inner) = line
            .trim()
            .strip_prefix('|')
            .and_then(|l| l.strip_suffix('|'))
        else {
            continue;
        };
        // name | duration | count | ratio; a name may hold '|', so cut from the right.
        let mut cells = inner.rsplitn(4, '|').map(str::trim);
        let (Some(_ratio), Some(count), Some(dur), Some(name)) =
            (cells.next(), cells.next(), cells.next(), cells.next())
        else {
            continue;
        };
        if name == "Total" {
            out.push(cur.take().unwrap_or_default());
            continue;
        }
        if let (Some(device_ms), Ok(count)) = (duration_ms(dur), count.parse::<u64>()) {
            rows.push(KernelTime {
                name: name.to_string(),
                device_ms,
                count,
            });
        }
    }
    out
}

/// What the profile says per step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Each table's kernel launches and device milliseconds, in order.
    pub tables: Vec<(u64, f64)>,
    /// The steps the tables cover.
    pub steps: u64,
    /// Kernel launches per step.
    pub kernels_per_step: f64,
    /// Device time per step, in milliseconds.
    pub device_ms_per_step: f64,
    /// Different kernels seen.
    pub distinct_kernels: usize,
    /// The kernels with the most device time, per step (time and launches divided by `steps`).
    pub top: Vec<KernelPerStep>,
}

/// One kernel's device time and launches per step (averages: a kernel launched only in some
/// steps has a fraction of a launch).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KernelPerStep {
    /// The kernel's name as CubeCL prints it.
    pub name: String,
    /// Device milliseconds per step.
    pub device_ms: f64,
    /// Launches per step.
    pub launches: f64,
}

/// Sums `tables` over `steps` steps, keeping the `top` kernels by device time.
pub fn summarise(tables: &[Vec<KernelTime>], steps: u64, top: usize) -> Summary {
    let steps = steps.max(1);
    let mut by_name: Vec<KernelTime> = Vec::new();
    for row in tables.iter().flatten() {
        match by_name.iter_mut().find(|k| k.name == row.name) {
            Some(k) => {
                k.device_ms += row.device_ms;
                k.count += row.count;
            }
            None => by_name.push(row.clone()),
        }
    }
    let launches: u64 = by_name.iter().map(|k| k.count).sum();
    let device: f64 = by_name.iter().map(|k| k.device_ms).sum();
    by_name.sort_by(|a, b| b.device_ms.total_cmp(&a.device_ms));
    let distinct = by_name.len();
    by_name.truncate(top);
    Summary {
        tables: tables
            .iter()
            .map(|t| {
                (
                    t.iter().map(|k| k.count).sum(),
                    t.iter().map(|k| k.device_ms).sum(),
                )
            })
            .collect(),
        steps,
        kernels_per_step: launches as f64 / steps as f64,
        device_ms_per_step: device / steps as f64,
        distinct_kernels: distinct,
        top: by_name
            .into_iter()
            .map(|k| KernelPerStep {
                device_ms: k.device_ms / steps as f64,
                launches: k.count as f64 / steps as f64,
                name: k.name,
            })
            .collect(),
    }
}

/// The profile's text once CubeCL's logger (a background task) has stopped writing: the file
/// unchanged for 300 ms, or 5 s passed.
pub fn read_settled(file: &Path) -> std::io::Result<String> {
    let start = Instant::now();
    let mut last = std::fs::metadata(file)?.len();
    let mut still = Instant::now();
    while start.elapsed() < Duration::from_secs(5) && still.elapsed() < Duration::from_millis(300) {
        std::thread::sleep(Duration::from_millis(50));
        let len = std::fs::metadata(file)?.len();
        if len != last {
            last = len;
            still = Instant::now();
        }
    }
    std::fs::read_to_string(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two tables as CubeCL 0.10 writes them (`Profiled`'s `Display`), with a per-kernel line
    /// between them and a name holding '|'.
    const PROFILE: &str = "\
|⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺| 
| Name            | Duration | Num Computed | Ratio |
|⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼| 
| matmul<f32>     | 1.5ms    | 3            | 74 %  |
| gelu | erf      | 500µs    | 2            | 25 %  |
| fill            | 20.5µs   | 1            | 1 %   |
|⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼| 
| Total           | 2.0205ms | 6            | 100 % |
|⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯| 
| 12µs       | fill
|⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺| 
| Name          | Duration | Num Computed | Ratio |
|⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼| 
| matmul<f32>   | 1.1s     | 1            | 99 %  |
| fill          | 800ns    | 4            | 0 %   |
|⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼⎼| 
| Total         | 1.1000008s | 5          | 100 % |
|⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯| 
";

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(duration_ms("1.5ms"), Some(1.5));
        assert_eq!(duration_ms("500µs"), Some(0.5));
        assert!((duration_ms("800ns").unwrap() - 0.0008).abs() < 1e-15);
        assert_eq!(duration_ms(" 1.1s "), Some(1100.0));
        assert_eq!(duration_ms("fast"), None);
    }

    #[test]
    fn reads_each_table_without_its_total() {
        let t = tables(PROFILE);
        assert_eq!(t.len(), 2);
        let names: Vec<&str> = t[0].iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["matmul<f32>", "gelu | erf", "fill"]);
        assert_eq!(t[0][1].count, 2);
        assert!((t[0][2].device_ms - 0.0205).abs() < 1e-12);
        assert_eq!(t[1].len(), 2);
    }

    #[test]
    fn sums_per_step_and_ranks_by_device_time() {
        let s = summarise(&tables(PROFILE), 2, 3);
        assert_eq!(s.tables.len(), 2);
        assert_eq!(s.tables[0].0, 6);
        assert_eq!(s.tables[1].0, 5);
        assert_eq!(s.kernels_per_step, 5.5);
        let device = 1.5 + 0.5 + 0.0205 + 1100.0 + 0.0008;
        assert!((s.device_ms_per_step - device / 2.0).abs() < 1e-9);
        assert_eq!(s.distinct_kernels, 3);
        assert_eq!(s.top.len(), 3);
        assert_eq!(s.top[0].name, "matmul<f32>");
        assert!((s.top[0].device_ms - 1101.5 / 2.0).abs() < 1e-9);
        assert_eq!(s.top[0].launches, 2.0);
        assert_eq!(s.top[1].name, "gelu | erf");
        // `fill` ran 5 times in 2 steps: 2.5 per step, not 2.
        assert_eq!(s.top[2].name, "fill");
        assert_eq!(s.top[2].launches, 2.5);
    }

    #[test]
    fn a_settled_file_is_read_whole() {
        let f = std::env::temp_dir().join(format!("canc-kp-{}.txt", std::process::id()));
        std::fs::write(&f, PROFILE).unwrap();
        assert_eq!(read_settled(&f).unwrap(), PROFILE);
        std::fs::remove_file(&f).unwrap();
        assert!(read_settled(&f).is_err());
    }
}
