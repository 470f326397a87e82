//! Fashion-MNIST in the IDX format: `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`.
//!
//! An IDX file is a big-endian header, magic `0x0000_08DD` (`08` = unsigned bytes, `DD` = number
//! of dimensions) then one `u32` per dimension, followed by the bytes in row-major order.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use super::{DEFAULT_FASHION_MNIST, DataError, Dataset};

/// Fashion-MNIST's class names, by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Loads the training (`train = true`) or test split of Fashion-MNIST from `dir`, keeping the
/// first `limit` images; the label file is read only when `labels` is set.
pub fn load_fashion_mnist(
    dir: &Path,
    train: bool,
    limit: Option<usize>,
    labels: bool,
) -> Result<Dataset, DataError> {
    let prefix = if train { "train" } else { "t10k" };
    let missing = || {
        if dir == Path::new(DEFAULT_FASHION_MNIST) {
            DataError::FashionMnistMissing(dir.to_path_buf())
        } else {
            DataError::Missing {
                what: "Fashion-MNIST".into(),
                path: dir.to_path_buf(),
                hint: format!(
                    ": expected {prefix}-images-idx3-ubyte.gz (or uncompressed) there; pass \
                     --data PATH with the directory holding the IDX files"
                ),
            }
        }
    };
    let img_path = find(dir, &format!("{prefix}-images-idx3-ubyte")).ok_or_else(missing)?;
    let (dims, images) = read_idx(&img_path, 3, limit)?;
    let (n_all, rows, cols) = (dims[0], dims[1], dims[2]);
    if rows != cols || rows == 0 {
        return Err(DataError::corrupt(
            &img_path,
            format!("images are {rows}×{cols}; only square, non-empty images are supported"),
        ));
    }
    let n = limit.map_or(n_all, |l| l.min(n_all));
    let labels = if labels {
        let name = format!("{prefix}-labels-idx1-ubyte");
        let lab_path = find(dir, &name).ok_or_else(|| DataError::Missing {
            what: format!("Fashion-MNIST labels {name}.gz"),
            path: dir.to_path_buf(),
            hint: String::new(),
        })?;
        let (ldims, lab) = read_idx(&lab_path, 1, limit)?;
        if ldims[0] != n_all {
            return Err(DataError::corrupt(
                &lab_path,
                format!(
                    "holds {} labels but {} holds {n_all} images",
                    ldims[0],
                    img_path.display()
                ),
            ));
        }
        if let Some((i, &l)) = lab.iter().enumerate().find(|(_, l)| **l >= 10) {
            return Err(DataError::corrupt(
                &lab_path,
                format!("label {l} of image {i} is outside 0..10"),
            ));
        }
        lab.into_iter().map(u32::from).collect()
    } else {
        Vec::new()
    };
    let has_labels = !labels.is_empty() || n == 0;
    Ok(Dataset {
        images,
        labels,
        n,
        channels: 1,
        size: rows,
        classes: if has_labels { 10 } else { 0 },
        class_names: if has_labels {
            FASHION_MNIST_CLASSES
                .iter()
                .map(|s| s.to_string())
                .collect()
        } else {
            Vec::new()
        },
    })
}

/// `dir/name.gz`, else `dir/name`, whichever exists.
fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    [format!("{name}.gz"), name.to_string()]
        .into_iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

/// Reads an unsigned-byte IDX file with `ndim` dimensions (gzip-compressed when the name ends in
/// `.gz`): its dimensions and the data of its first `limit` items (all without a limit). Without
/// a limit, bytes after the data are an error.
pub fn read_idx(
    path: &Path,
    ndim: u8,
    limit: Option<usize>,
) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut r: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(GzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let read_err = |e: std::io::Error, what: &str| {
        if e.kind() == ErrorKind::UnexpectedEof {
            DataError::corrupt(path, format!("truncated: the file ends inside the {what}"))
        } else {
            DataError::corrupt(path, format!("corrupt ({e}) while reading the {what}"))
        }
    };
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic)
        .map_err(|e| read_err(e, "header"))?;
    let want = [0, 0, 0x08, ndim];
    if magic != want {
        return Err(DataError::corrupt(
            path,
            format!(
                "bad magic number 0x{:08x} (expected 0x{:08x}: an IDX file of unsigned bytes \
                 with {ndim} dimension{})",
                u32::from_be_bytes(magic),
                u32::from_be_bytes(want),
                if ndim == 1 { "" } else { "s" }
            ),
        ));
    }
    let mut dims = Vec::with_capacity(ndim as usize);
    for _ in 0..ndim {
        let mut d = [0u8; 4];
        r.read_exact(&mut d).map_err(|e| read_err(e, "header"))?;
        dims.push(u32::from_be_bytes(d) as usize);
    }
    let item: usize = dims[1..].iter().product();
    let n = limit.map_or(dims[0], |l| l.min(dims[0]));
    let len = n
        .checked_mul(item)
        .filter(|&l| l <= 1 << 34)
        .ok_or_else(|| DataError::corrupt(path, format!("implausible dimensions {dims:?}")))?;
    let mut data = Vec::new();
    let got = r
        .by_ref()
        .take(len as u64)
        .read_to_end(&mut data)
        .map_err(|e| read_err(e, "data"))?;
    if got < len {
        return Err(DataError::corrupt(
            path,
            format!(
                "truncated: the header announces {} items of {item} bytes ({} bytes) but only \
                 {got} bytes follow",
                dims[0],
                dims[0] * item
            ),
        ));
    }
    if n == dims[0] {
        let mut extra = [0u8; 1];
        let more = r.read(&mut extra).map_err(|e| read_err(e, "data"))?;
        if more > 0 {
            return Err(DataError::corrupt(
                path,
                format!(
                    "wrong size: more than the {len} bytes of data the header announces \
                     ({dims:?})"
                ),
            ));
        }
    }
    Ok((dims, data))
}
