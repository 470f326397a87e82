//! CIFAR-10 and CIFAR-100 in the "binary version" format.
//!
//! CIFAR-10: `data_batch_1.bin` … `data_batch_5.bin` (train) and `test_batch.bin`, records of one
//! label byte then 3072 pixel bytes (1024 red, 1024 green, 1024 blue, rows of 32). CIFAR-100:
//! `train.bin` and `test.bin`, records of a coarse label byte, a fine label byte, then the pixels;
//! the fine label (0..100) is used.

use std::path::{Path, PathBuf};

use super::{DataError, Dataset};

/// CIFAR-10's class names, by label.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

const PIXELS: usize = 3 * 32 * 32;

/// Loads CIFAR-10 (`fine = false`) or CIFAR-100 from `dir` (or its `cifar-10-batches-bin` /
/// `cifar-100-binary` subdirectory, as the archives unpack), keeping the first `limit` images.
pub fn load_cifar(
    dir: &Path,
    fine: bool,
    train: bool,
    limit: Option<usize>,
    labels: bool,
) -> Result<Dataset, DataError> {
    let (name, sub, classes, label_bytes) = if fine {
        ("CIFAR-100", "cifar-100-binary", 100usize, 2usize)
    } else {
        ("CIFAR-10", "cifar-10-batches-bin", 10, 1)
    };
    let files: Vec<String> = match (fine, train) {
        (false, true) => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        (false, false) => vec!["test_batch.bin".into()],
        (true, true) => vec!["train.bin".into()],
        (true, false) => vec!["test.bin".into()],
    };
    if !dir.is_dir() {
        return Err(DataError::Missing {
            what: name.into(),
            path: dir.to_path_buf(),
            hint: format!(": no such directory (expected the {name} binary batches there)"),
        });
    }
    let dir: PathBuf = if !dir.join(&files[0]).exists() && dir.join(sub).join(&files[0]).exists() {
        dir.join(sub)
    } else {
        dir.to_path_buf()
    };
    let record = label_bytes + PIXELS;
    let mut images = Vec::new();
    let mut labs = Vec::new();
    for f in &files {
        if limit.is_some_and(|l| labs.len() >= l) {
            break;
        }
        let path = dir.join(f);
        if !path.is_file() {
            return Err(DataError::Missing {
                what: format!("{name} batch {f}"),
                path: dir.clone(),
                hint: String::new(),
            });
        }
        let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
        if bytes.is_empty() || bytes.len() % record != 0 {
            return Err(DataError::corrupt(
                &path,
                format!(
                    "wrong size: {} bytes is not a whole number of {record}-byte {name} records \
                     (truncated or not a {name} binary batch)",
                    bytes.len()
                ),
            ));
        }
        for (i, rec) in bytes.chunks_exact(record).enumerate() {
            if limit.is_some_and(|l| labs.len() >= l) {
                break;
            }
            let label = rec[label_bytes - 1];
            if usize::from(label) >= classes {
                return Err(DataError::corrupt(
                    &path,
                    format!("record {i} has label {label}, outside 0..{classes}"),
                ));
            }
            if fine && rec[0] >= 20 {
                return Err(DataError::corrupt(
                    &path,
                    format!("record {i} has coarse label {}, outside 0..20", rec[0]),
                ));
            }
            labs.push(u32::from(label));
            images.extend_from_slice(&rec[label_bytes..]);
        }
    }
    let n = labs.len();
    let class_names = if !labels {
        Vec::new()
    } else if fine {
        fine_names(&dir).unwrap_or_else(|| (0..classes).map(|c| c.to_string()).collect())
    } else {
        CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect()
    };
    Ok(Dataset {
        images,
        labels: if labels { labs } else { Vec::new() },
        n,
        channels: 3,
        size: 32,
        classes: if labels { classes } else { 0 },
        class_names,
    })
}

/// CIFAR-100's `fine_label_names.txt`, if present with 100 names.
fn fine_names(dir: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(dir.join("fine_label_names.txt")).ok()?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    (names.len() == 100).then_some(names)
}
