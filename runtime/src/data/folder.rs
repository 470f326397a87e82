//! An ImageFolder tree: `root/CLASS/**/IMAGE.{png,jpg,jpeg}`, classes in sorted name order.
//!
//! Images are decoded with `image`, converted to RGB (alpha dropped) or to grey with PIL's `L`
//! weights, and resized to `size × size` (bilinear, antialiased, aspect ratio not kept) when
//! they have another shape.

use std::path::{Path, PathBuf};

use image::ImageReader;
use rayon::prelude::*;

use super::augment::resample;
use super::{DataError, Dataset};

/// Loads the tree under `root` (`root/SPLIT` when that directory exists; with no split or
/// `train`, `root` itself otherwise), keeping the first `limit` images in (class, path) order.
pub fn load_image_folder(
    root: &Path,
    split: Option<&str>,
    size: usize,
    channels: usize,
    limit: Option<usize>,
    labels: bool,
) -> Result<Dataset, DataError> {
    if !root.is_dir() {
        return Err(DataError::Missing {
            what: "image folder".into(),
            path: root.to_path_buf(),
            hint: ": no such directory".into(),
        });
    }
    if size == 0 || !(channels == 1 || channels == 3) {
        return Err(DataError::Config(format!(
            "image_folder needs image_size >= 1 and 1 or 3 channels (got {size} and {channels})"
        )));
    }
    let split = split.unwrap_or("train");
    let dir = if root.join(split).is_dir() {
        root.join(split)
    } else if split == "train" {
        root.to_path_buf()
    } else {
        return Err(DataError::Missing {
            what: format!("split `{split}` of the image folder"),
            path: root.join(split),
            hint: format!(": put the {split} images in class subdirectories there"),
        });
    };
    let classes = sorted_entries(&dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect::<Vec<_>>();
    if classes.is_empty() {
        return Err(DataError::Missing {
            what: "class subdirectories".into(),
            path: dir,
            hint: ": an image_folder holds one subdirectory of images per class".into(),
        });
    }
    let mut files: Vec<(PathBuf, u32)> = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let before = files.len();
        collect_images(class, label as u32, &mut files)?;
        if files.len() == before {
            return Err(DataError::Missing {
                what: "PNG or JPEG images".into(),
                path: class.clone(),
                hint: ": every class subdirectory needs at least one".into(),
            });
        }
    }
    if let Some(l) = limit {
        files.truncate(l);
    }
    let len = channels * size * size;
    let mut images = vec![0u8; files.len() * len];
    images
        .par_chunks_mut(len)
        .zip(files.par_iter())
        .try_for_each(|(dst, (path, _))| decode(path, size, channels, dst))?;
    let class_names: Vec<String> = classes
        .iter()
        .map(|c| {
            c.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    Ok(Dataset {
        images,
        labels: if labels {
            files.iter().map(|(_, l)| *l).collect()
        } else {
            Vec::new()
        },
        n: files.len(),
        channels,
        size,
        classes: if labels { class_names.len() } else { 0 },
        class_names: if labels { class_names } else { Vec::new() },
    })
}

/// The entries of `dir`, sorted by name, hidden ones (`.name`) left out.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let e = e.map_err(|e| DataError::io(dir, e))?;
        if !e.file_name().to_string_lossy().starts_with('.') {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Appends the PNG/JPEG files under `dir` (recursively, sorted) with `label`.
fn collect_images(dir: &Path, label: u32, out: &mut Vec<(PathBuf, u32)>) -> Result<(), DataError> {
    for p in sorted_entries(dir)? {
        if p.is_dir() {
            collect_images(&p, label, out)?;
        } else if p.extension().is_some_and(|e| {
            let e = e.to_string_lossy().to_ascii_lowercase();
            e == "png" || e == "jpg" || e == "jpeg"
        }) {
            out.push((p, label));
        }
    }
    Ok(())
}

/// Decodes `path` into `dst` (`channels × size × size` bytes).
fn decode(path: &Path, size: usize, channels: usize, dst: &mut [u8]) -> Result<(), DataError> {
    let img = ImageReader::open(path)
        .and_then(ImageReader::with_guessed_format)
        .map_err(|e| DataError::io(path, e))?
        .decode()
        .map_err(|e| DataError::corrupt(path, format!("cannot decode the image: {e}")))?
        .to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let rgb = img.into_raw();
    let plane = w * h;
    let mut chw = vec![0u8; channels * plane];
    for (k, px) in rgb.chunks_exact(3).enumerate() {
        if channels == 1 {
            // PIL's `convert("L")`: (R·19595 + G·38470 + B·7471 + 2¹⁵) >> 16.
            let l = u32::from(px[0]) * 19595 + u32::from(px[1]) * 38470 + u32::from(px[2]) * 7471;
            chw[k] = ((l + 0x8000) >> 16) as u8;
        } else {
            for ch in 0..3 {
                chw[ch * plane + k] = px[ch];
            }
        }
    }
    if w == size && h == size {
        dst.copy_from_slice(&chw);
    } else {
        let src: Vec<f32> = chw.iter().map(|&p| f32::from(p)).collect();
        let out = resample(&src, channels, (h, w), (0, 0, h, w), (size, size), None);
        for (d, v) in dst.iter_mut().zip(out) {
            *d = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    Ok(())
}
