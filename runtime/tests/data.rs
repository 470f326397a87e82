//! Data sources, augmentations and batches (runtime/src/data).
//!
//! Expected values are computed independently: raw files are decoded here with plain loops,
//! resampling and blurring are checked against naive f64 reference implementations.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use canc_compiler::RValue;
use canc_compiler::plan::{DataPlan, ViewPlan};
use canc_runtime::data::{
    self, Batch, DEFAULT_FASHION_MNIST, DataError, Dataset, Image, Pipeline, augment_view,
    epoch_order, make_batch,
};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use rand::SeedableRng;
use rand::rngs::StdRng;

mod common;
use common::uniform;

// ---------------------------------------------------------------------------------------------
// helpers

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("canc-data-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn data_plan(source: &str, config: Vec<(&str, RValue)>, size: u32, channels: u32) -> DataPlan {
    DataPlan {
        source: source.into(),
        config: config
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        image_size: size,
        channels,
        mean: vec![0.5; channels as usize],
        std: vec![0.25; channels as usize],
        images: None,
    }
}

fn fashion(split: &str, limit: Option<i64>) -> DataPlan {
    data_plan(
        "fashion_mnist",
        vec![
            ("path", RValue::Str(DEFAULT_FASHION_MNIST.into())),
            ("split", RValue::Ident(split.into())),
            ("limit", limit.map_or(RValue::None, RValue::Int)),
            ("labels", RValue::Bool(true)),
        ],
        28,
        1,
    )
}

type Augs<'a> = Vec<(&'a str, Vec<(&'a str, RValue)>)>;

fn view(name: &str, augs: Augs) -> ViewPlan {
    ViewPlan {
        name: name.into(),
        augment: augs
            .into_iter()
            .map(|(a, kv)| {
                (
                    a.to_string(),
                    kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                )
            })
            .collect(),
    }
}

fn int(i: i64) -> RValue {
    RValue::Int(i)
}

fn num(x: f64) -> RValue {
    RValue::Float(x)
}

fn range(a: f64, b: f64) -> RValue {
    RValue::Range(a, b)
}

fn floats(v: &[f64]) -> RValue {
    RValue::List(v.iter().map(|&x| RValue::Float(x)).collect())
}

/// A `c × size × size` image whose value encodes the position: `(y·size + x) / size²` (+ ch).
fn positions(c: usize, size: usize) -> Vec<f32> {
    (0..c * size * size)
        .map(|k| {
            let (ch, rest) = (k / (size * size), k % (size * size));
            rest as f32 / (size * size) as f32 + ch as f32
        })
        .collect()
}

fn apply(v: &ViewPlan, src: &[f32], c: usize, size: usize, seed: u64) -> (Vec<f32>, usize) {
    augment_view(v, src, c, size, &mut StdRng::seed_from_u64(seed)).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - y).abs())
        .fold(0.0, f64::max)
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    GzDecoder::new(fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn be(x: u32) -> [u8; 4] {
    x.to_be_bytes()
}

// ---------------------------------------------------------------------------------------------
// Fashion-MNIST (the real files)

#[test]
fn fashion_mnist_train_matches_the_raw_files() {
    let ds = data::load(&fashion("train", None), None).unwrap();
    assert_eq!((ds.n, ds.channels, ds.size, ds.classes), (60000, 1, 28, 10));
    assert_eq!(ds.images.len(), 60000 * 28 * 28);
    assert_eq!(ds.labels.len(), 60000);
    let mut per_class = [0usize; 10];
    for &l in &ds.labels {
        per_class[l as usize] += 1;
    }
    assert_eq!(per_class, [6000; 10]);
    assert_eq!(ds.labels[0], 9);
    assert_eq!(ds.class_names[9], "Ankle boot");

    // Independent read: IDX header 0x00000803, 60000, 28, 28 then the pixels.
    let dir = Path::new(DEFAULT_FASHION_MNIST);
    let raw = gunzip(&dir.join("train-images-idx3-ubyte.gz"));
    assert_eq!(raw[..4], [0, 0, 8, 3]);
    assert_eq!(raw[4..8], be(60000));
    assert_eq!(raw[8..12], be(28));
    assert_eq!(raw[12..16], be(28));
    assert_eq!(raw.len(), 16 + 60000 * 784);
    assert!(ds.images == raw[16..], "pixels differ from the raw file");
    // Background corners are black and the first image (a boot) is not blank.
    assert_eq!(ds.image(0).unwrap()[0], 0);
    assert!(ds.image(0).unwrap().iter().any(|&p| p > 200));
    let raw_labels = gunzip(&dir.join("train-labels-idx1-ubyte.gz"));
    assert_eq!(raw_labels[..8], [0, 0, 8, 1, 0, 0, 0xea, 0x60]); // 0xea60 = 60000
    assert!(
        ds.labels
            .iter()
            .zip(&raw_labels[8..])
            .all(|(&a, &b)| a == u32::from(b))
    );
}

#[test]
fn fashion_mnist_test_split_and_limit() {
    let ds = data::load(&fashion("train", Some(50)), Some("test")).unwrap();
    assert_eq!((ds.n, ds.labels.len(), ds.images.len()), (50, 50, 50 * 784));
    assert_eq!(ds.labels[0], 9);
    let raw = gunzip(&Path::new(DEFAULT_FASHION_MNIST).join("t10k-images-idx3-ubyte.gz"));
    assert_eq!(raw[4..8], be(10000));
    assert!(ds.images == raw[16..16 + 50 * 784]);

    let full = data::load(&fashion("test", None), None).unwrap();
    assert_eq!(full.n, 10000);
    let mut per_class = [0usize; 10];
    for &l in &full.labels {
        per_class[l as usize] += 1;
    }
    assert_eq!(per_class, [1000; 10]);
    assert_eq!(full.images[..50 * 784], ds.images[..]);
}

#[test]
fn fashion_mnist_missing_messages() {
    let msg = DataError::FashionMnistMissing(PathBuf::from(DEFAULT_FASHION_MNIST)).to_string();
    assert_eq!(
        msg,
        "Fashion-MNIST not found at /usr/share/datasets/fashion-mnist: install it with \
         `apt-get install dataset-fashion-mnist` or pass --data PATH"
    );
    let mut plan = fashion("train", None);
    plan.config
        .insert("path".into(), RValue::Str("/nonexistent/fmnist".into()));
    let e = data::load(&plan, None).unwrap_err().to_string();
    assert!(
        e.contains("Fashion-MNIST not found at /nonexistent/fmnist"),
        "{e}"
    );
    assert!(e.contains("--data PATH"), "{e}");
}

/// Writes a small Fashion-MNIST pair (`n` images of 28×28, labels `l`) into `dir`.
fn write_idx(dir: &Path, prefix: &str, images: &[u8], labels: &[u8]) {
    let n = labels.len() as u32;
    let mut img = [0, 0, 8, 3].to_vec();
    for d in [n, 28, 28] {
        img.extend_from_slice(&be(d));
    }
    img.extend_from_slice(images);
    fs::write(
        dir.join(format!("{prefix}-images-idx3-ubyte.gz")),
        gzip(&img),
    )
    .unwrap();
    let mut lab = [0, 0, 8, 1].to_vec();
    lab.extend_from_slice(&be(n));
    lab.extend_from_slice(labels);
    fs::write(
        dir.join(format!("{prefix}-labels-idx1-ubyte.gz")),
        gzip(&lab),
    )
    .unwrap();
}

fn fmnist_at(dir: &Path) -> DataPlan {
    let mut p = fashion("train", None);
    p.config
        .insert("path".into(), RValue::Str(dir.to_string_lossy().into()));
    p
}

#[test]
fn fashion_mnist_small_fixture_and_corruptions() {
    let t = TempDir::new("idx");
    let images: Vec<u8> = (0..3 * 784).map(|i| (i * 7 % 256) as u8).collect();
    write_idx(&t.0, "train", &images, &[3, 0, 9]);
    let ds = data::load(&fmnist_at(&t.0), None).unwrap();
    assert_eq!(ds.n, 3);
    assert_eq!(ds.labels, [3, 0, 9]);
    assert_eq!(ds.images, images);

    // Uncompressed files are read too.
    let u = TempDir::new("idx-raw");
    let mut img = [0, 0, 8, 3].to_vec();
    for d in [3u32, 28, 28] {
        img.extend_from_slice(&be(d));
    }
    img.extend_from_slice(&images);
    fs::write(u.0.join("train-images-idx3-ubyte"), &img).unwrap();
    let mut plan = fmnist_at(&u.0);
    plan.config.insert("labels".into(), RValue::Bool(false));
    let ds = data::load(&plan, None).unwrap();
    assert_eq!((ds.n, ds.labels.len(), ds.classes), (3, 0, 0));
    assert_eq!(ds.images, images);

    let img_file = t.0.join("train-images-idx3-ubyte.gz");
    let lab_file = t.0.join("train-labels-idx1-ubyte.gz");
    let check = |what: &str, file: &Path| {
        let e = data::load(&fmnist_at(&t.0), None).unwrap_err().to_string();
        assert!(e.contains(&file.display().to_string()), "{what}: {e}");
        e
    };

    // Truncated gzip stream.
    let good = fs::read(&img_file).unwrap();
    fs::write(&img_file, &good[..good.len() / 2]).unwrap();
    let e = check("truncated gz", &img_file);
    assert!(e.contains("truncated") || e.contains("corrupt"), "{e}");

    // Bad magic.
    let mut bad = img.clone();
    bad[3] = 2;
    fs::write(&img_file, gzip(&bad)).unwrap();
    let e = check("bad magic", &img_file);
    assert!(e.contains("bad magic number 0x00000802"), "{e}");

    // Fewer pixels than the header announces.
    fs::write(&img_file, gzip(&img[..img.len() - 10])).unwrap();
    let e = check("short", &img_file);
    assert!(e.contains("truncated"), "{e}");

    // More bytes than the header announces.
    let mut long = img.clone();
    long.extend_from_slice(&[1, 2, 3]);
    fs::write(&img_file, gzip(&long)).unwrap();
    let e = check("long", &img_file);
    assert!(e.contains("wrong size"), "{e}");

    // Label out of range, and a label count that disagrees with the images.
    fs::write(&img_file, gzip(&img)).unwrap();
    let mut lab = [0, 0, 8, 1].to_vec();
    lab.extend_from_slice(&be(3));
    lab.extend_from_slice(&[1, 12, 2]);
    fs::write(&lab_file, gzip(&lab)).unwrap();
    let e = check("label", &lab_file);
    assert!(e.contains("label 12 of image 1"), "{e}");
    let mut lab = [0, 0, 8, 1].to_vec();
    lab.extend_from_slice(&be(2));
    lab.extend_from_slice(&[1, 2]);
    fs::write(&lab_file, gzip(&lab)).unwrap();
    let e = check("label count", &lab_file);
    assert!(e.contains("holds 2 labels"), "{e}");

    // Missing label file.
    fs::remove_file(&lab_file).unwrap();
    let e = data::load(&fmnist_at(&t.0), None).unwrap_err().to_string();
    assert!(e.contains("train-labels-idx1-ubyte"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// CIFAR

/// A CIFAR record: `labels` bytes then 3072 pixels derived from `seed`.
fn cifar_record(labels: &[u8], seed: u8) -> (Vec<u8>, Vec<u8>) {
    let px: Vec<u8> = (0..3072u32)
        .map(|i| (i.wrapping_mul(31) as u8) ^ seed)
        .collect();
    let mut rec = labels.to_vec();
    rec.extend_from_slice(&px);
    (rec, px)
}

fn cifar_plan(source: &str, dir: &Path, limit: Option<i64>) -> DataPlan {
    data_plan(
        source,
        vec![
            ("path", RValue::Str(dir.to_string_lossy().into())),
            ("split", RValue::Ident("train".into())),
            ("limit", limit.map_or(RValue::None, RValue::Int)),
            ("labels", RValue::Bool(true)),
        ],
        32,
        3,
    )
}

#[test]
fn cifar10_fixture_roundtrip_and_errors() {
    let t = TempDir::new("cifar10");
    let mut want_px = Vec::new();
    let mut want_labels = Vec::new();
    for b in 1..=5u8 {
        let mut file = Vec::new();
        for r in 0..(if b == 2 { 2 } else { 1 }) {
            let label = (b * 2 + r) % 10;
            let (rec, px) = cifar_record(&[label], b * 10 + r);
            file.extend_from_slice(&rec);
            want_px.extend_from_slice(&px);
            want_labels.push(u32::from(label));
        }
        fs::write(t.0.join(format!("data_batch_{b}.bin")), file).unwrap();
    }
    let (test_rec, test_px) = cifar_record(&[7], 99);
    fs::write(t.0.join("test_batch.bin"), &test_rec).unwrap();

    let ds = data::load(&cifar_plan("cifar10", &t.0, None), None).unwrap();
    assert_eq!((ds.n, ds.channels, ds.size, ds.classes), (6, 3, 32, 10));
    assert_eq!(ds.labels, want_labels);
    assert_eq!(ds.images, want_px);
    // Channel-major: image 1's green plane starts 1024 bytes into it.
    assert_eq!(ds.image(1).unwrap()[1024], want_px[3072 + 1024]);

    let limited = data::load(&cifar_plan("cifar10", &t.0, Some(2)), None).unwrap();
    assert_eq!(limited.labels, want_labels[..2]);

    let test = data::load(&cifar_plan("cifar10", &t.0, None), Some("test")).unwrap();
    assert_eq!((test.n, test.labels[0]), (1, 7));
    assert_eq!(test.images, test_px);

    // A truncated batch names the file.
    let f3 = t.0.join("data_batch_3.bin");
    let good = fs::read(&f3).unwrap();
    fs::write(&f3, &good[..3000]).unwrap();
    let e = data::load(&cifar_plan("cifar10", &t.0, None), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("data_batch_3.bin") && e.contains("wrong size"),
        "{e}"
    );
    // A bad label names the file and the record.
    let (bad, _) = cifar_record(&[10], 0);
    fs::write(&f3, bad).unwrap();
    let e = data::load(&cifar_plan("cifar10", &t.0, None), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("data_batch_3.bin") && e.contains("label 10"),
        "{e}"
    );
    // A missing batch is named.
    fs::remove_file(&f3).unwrap();
    let e = data::load(&cifar_plan("cifar10", &t.0, None), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("data_batch_3.bin"), "{e}");
    // A missing directory is named.
    let e = data::load(&cifar_plan("cifar10", &t.0.join("nope"), None), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("CIFAR-10 not found") && e.contains("nope"),
        "{e}"
    );
}

#[test]
fn cifar100_uses_fine_labels() {
    let t = TempDir::new("cifar100");
    let sub = t.0.join("cifar-100-binary");
    fs::create_dir_all(&sub).unwrap();
    let (r0, p0) = cifar_record(&[3, 57], 1);
    let (r1, p1) = cifar_record(&[19, 99], 2);
    fs::write(sub.join("train.bin"), [r0, r1].concat()).unwrap();
    let ds = data::load(&cifar_plan("cifar100", &t.0, None), None).unwrap();
    assert_eq!((ds.n, ds.classes), (2, 100));
    assert_eq!(ds.labels, [57, 99]);
    assert_eq!(ds.images, [p0, p1].concat());

    let (bad, _) = cifar_record(&[20, 5], 3);
    fs::write(sub.join("train.bin"), bad).unwrap();
    let e = data::load(&cifar_plan("cifar100", &t.0, None), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("train.bin") && e.contains("coarse label 20"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// ImageFolder

fn folder_plan(dir: &Path, size: u32, channels: u32) -> DataPlan {
    data_plan(
        "image_folder",
        vec![
            ("path", RValue::Str(dir.to_string_lossy().into())),
            ("image_size", RValue::Int(size.into())),
            ("channels", RValue::Int(channels.into())),
            ("limit", RValue::None),
            ("labels", RValue::Bool(true)),
        ],
        size,
        channels,
    )
}

#[test]
fn image_folder_reads_pngs_by_sorted_class() {
    let t = TempDir::new("folder");
    let rgb = |seed: u8| -> Vec<u8> {
        (0..4 * 4 * 3u8)
            .map(|i| i.wrapping_mul(17) ^ seed)
            .collect()
    };
    // Written "dog" first: classes must still be sorted (cat = 0, dog = 1).
    for (class, files) in [
        ("dog", vec![("b.png", 1u8)]),
        ("cat", vec![("a.png", 2), ("c.png", 3)]),
    ] {
        fs::create_dir_all(t.0.join(class)).unwrap();
        for (f, seed) in files {
            image::RgbImage::from_raw(4, 4, rgb(seed))
                .unwrap()
                .save(t.0.join(class).join(f))
                .unwrap();
        }
    }
    fs::write(t.0.join("cat").join("notes.txt"), "not an image").unwrap();

    let ds = data::load(&folder_plan(&t.0, 4, 3), None).unwrap();
    assert_eq!((ds.n, ds.classes, ds.channels, ds.size), (3, 2, 3, 4));
    assert_eq!(ds.class_names, ["cat", "dog"]);
    assert_eq!(ds.labels, [0, 0, 1]);
    // HWC → CHW by hand, for cat/a.png (seed 2), cat/c.png (3), dog/b.png (1).
    for (i, seed) in [2u8, 3, 1].into_iter().enumerate() {
        let hwc = rgb(seed);
        let img = ds.image(i).unwrap();
        for ch in 0..3 {
            for p in 0..16 {
                assert_eq!(
                    img[ch * 16 + p],
                    hwc[p * 3 + ch],
                    "image {i} ch {ch} px {p}"
                );
            }
        }
    }

    // Grey: PIL's L = (19595 R + 38470 G + 7471 B + 2^15) >> 16.
    let grey = data::load(&folder_plan(&t.0, 4, 1), None).unwrap();
    assert_eq!(grey.channels, 1);
    let hwc = rgb(2);
    for p in 0..16 {
        let (r, g, b) = (
            u32::from(hwc[p * 3]),
            u32::from(hwc[p * 3 + 1]),
            u32::from(hwc[p * 3 + 2]),
        );
        let l = ((r * 19595 + g * 38470 + b * 7471 + 32768) >> 16) as u8;
        assert_eq!(grey.image(0).unwrap()[p], l);
    }

    // A constant 9×6 image resized to 4×4 stays constant; a JPEG decodes to the right shape.
    image::RgbImage::from_pixel(9, 6, image::Rgb([10, 200, 77]))
        .save(t.0.join("dog").join("d.png"))
        .unwrap();
    image::RgbImage::from_pixel(8, 8, image::Rgb([128, 128, 128]))
        .save(t.0.join("dog").join("e.jpg"))
        .unwrap();
    let ds = data::load(&folder_plan(&t.0, 4, 3), None).unwrap();
    assert_eq!(ds.n, 5);
    let d = ds.image(3).unwrap();
    assert!(d[..16].iter().all(|&p| p == 10));
    assert!(d[16..32].iter().all(|&p| p == 200));
    assert!(d[32..].iter().all(|&p| p == 77));
    assert!(ds.image(4).unwrap().iter().all(|&p| p.abs_diff(128) <= 2));

    // A corrupt PNG names the file; a missing directory is named.
    let bad = t.0.join("dog").join("z.png");
    fs::write(&bad, b"\x89PNG not really").unwrap();
    let e = data::load(&folder_plan(&t.0, 4, 3), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains(&bad.display().to_string()), "{e}");
    let e = data::load(&folder_plan(&t.0.join("missing"), 4, 3), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing") && e.contains("not found"), "{e}");
    // No test split there.
    let e = data::load(&folder_plan(&t.0, 4, 3), Some("test"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("test"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// synthetic

#[test]
fn synthetic_is_seeded_and_shaped() {
    let plan = data_plan(
        "synthetic",
        vec![
            ("images", int(20)),
            ("image_size", int(8)),
            ("channels", int(3)),
            ("classes", int(4)),
            ("limit", RValue::None),
            ("labels", RValue::Bool(true)),
        ],
        8,
        3,
    );
    let a = data::load(&plan, None).unwrap();
    let b = data::load(&plan, None).unwrap();
    assert_eq!(a, b);
    assert_eq!((a.n, a.channels, a.size, a.classes), (20, 3, 8, 4));
    assert_eq!(a.images.len(), 20 * 3 * 64);
    assert!(a.labels.iter().all(|&l| l < 4));
    assert!(a.images.iter().any(|&p| p != a.images[0]));
    let test = data::load(&plan, Some("test")).unwrap();
    assert_ne!(test.images, a.images);
    let mut limited = plan.clone();
    limited.config.insert("limit".into(), int(5));
    let l = data::load(&limited, None).unwrap();
    assert_eq!(l.n, 5);
    assert_eq!(l.images, a.images[..5 * 192]);
}

// ---------------------------------------------------------------------------------------------
// augmentations

/// The naive antialiased bilinear resampling (PIL's triangle filter, widened by the downscaling
/// factor) of region `(top, left, h, w)` to `out × out`, with every crop pixel weighted.
fn reference_resize(
    src: &[f32],
    c: usize,
    size: usize,
    (top, left, h, w): (usize, usize, usize, usize),
    out: usize,
) -> Vec<f64> {
    let weights = |len: usize| -> Vec<Vec<f64>> {
        let scale = len as f64 / out as f64;
        let fs = scale.max(1.0);
        (0..out)
            .map(|o| {
                let center = (o as f64 + 0.5) * scale;
                let w: Vec<f64> = (0..len)
                    .map(|x| (1.0 - ((x as f64 + 0.5 - center) / fs).abs()).max(0.0))
                    .collect();
                let t: f64 = w.iter().sum();
                w.iter().map(|v| v / t).collect()
            })
            .collect()
    };
    let (wy, wx) = (weights(h), weights(w));
    let mut res = vec![0.0; c * out * out];
    for ch in 0..c {
        for oy in 0..out {
            for ox in 0..out {
                let mut acc = 0.0;
                for y in 0..h {
                    for x in 0..w {
                        acc += wy[oy][y]
                            * wx[ox][x]
                            * f64::from(src[ch * size * size + (top + y) * size + left + x]);
                    }
                }
                res[(ch * out + oy) * out + ox] = acc;
            }
        }
    }
    res
}

#[test]
fn resize_matches_the_reference_filter() {
    let src = uniform(2 * 28 * 28, 1);
    for out in [10, 14, 28, 40] {
        let v = view("v", vec![("resize", vec![("size", int(out as i64))])]);
        let (got, s) = apply(&v, &src, 2, 28, 0);
        assert_eq!(s, out);
        let want = reference_resize(&src, 2, 28, (0, 0, 28, 28), out);
        assert!(max_abs_diff(&got, &want) < 1e-5, "out {out}");
    }
    // Same size: the identity.
    let v = view("v", vec![("resize", vec![("size", int(28))])]);
    assert_eq!(apply(&v, &src, 2, 28, 0).0, src);
}

#[test]
fn random_resized_crop_shape_range_and_fallback() {
    let src = uniform(3 * 28 * 28, 2);
    let v = view(
        "v",
        vec![(
            "random_resized_crop",
            vec![
                ("size", int(20)),
                ("scale", range(0.08, 1.0)),
                ("ratio", range(0.75, 4.0 / 3.0)),
            ],
        )],
    );
    let mut outputs = Vec::new();
    for seed in 0..30 {
        let (out, s) = apply(&v, &src, 3, 28, seed);
        assert_eq!((s, out.len()), (20, 3 * 400));
        assert!(out.iter().all(|&x| (0.0..=1.0).contains(&x)));
        outputs.push(out);
    }
    outputs.dedup();
    assert!(outputs.len() > 25, "crops should differ between seeds");

    // Scale and ratio exactly 1: the whole image at the same size, i.e. the identity.
    let full = view(
        "v",
        vec![(
            "random_resized_crop",
            vec![
                ("size", int(28)),
                ("scale", range(1.0, 1.0)),
                ("ratio", range(1.0, 1.0)),
            ],
        )],
    );
    let (out, _) = apply(&full, &src, 3, 28, 5);
    let want: Vec<f64> = src.iter().map(|&x| f64::from(x)).collect();
    assert!(max_abs_diff(&out, &want) < 1e-6);

    // Ratio 2..3 with the whole area never fits 10 tries: torchvision's fallback keeps the full
    // width and h = round(28 / 2) = 14 rows from top (28 - 14) / 2 = 7.
    let fb = view(
        "v",
        vec![(
            "random_resized_crop",
            vec![
                ("size", int(12)),
                ("scale", range(1.0, 1.0)),
                ("ratio", range(2.0, 3.0)),
            ],
        )],
    );
    let (out, _) = apply(&fb, &src, 3, 28, 6);
    let want = reference_resize(&src, 3, 28, (7, 0, 14, 28), 12);
    assert!(max_abs_diff(&out, &want) < 1e-5);
}

#[test]
fn flips_crops_and_normalize() {
    let c = 2;
    let src = uniform(c * 9 * 9, 3);
    let flip = view("f", vec![("hflip", vec![("p", num(1.0))])]);
    let (once, _) = apply(&flip, &src, c, 9, 0);
    for ch in 0..c {
        for y in 0..9 {
            for x in 0..9 {
                assert_eq!(once[(ch * 9 + y) * 9 + x], src[(ch * 9 + y) * 9 + 8 - x]);
            }
        }
    }
    let twice = view(
        "f",
        vec![
            ("hflip", vec![("p", num(1.0))]),
            ("hflip", vec![("p", num(1.0))]),
        ],
    );
    assert_eq!(apply(&twice, &src, c, 9, 0).0, src);
    let never = view("f", vec![("hflip", vec![("p", num(0.0))])]);
    assert_eq!(apply(&never, &src, c, 9, 0).0, src);

    // normalize then its inverse x·std + mean gives the input back.
    let (mean, std) = ([0.3, 0.6], [0.2, 0.5]);
    let norm = view(
        "n",
        vec![(
            "normalize",
            vec![("mean", floats(&mean)), ("std", floats(&std))],
        )],
    );
    let (out, _) = apply(&norm, &src, c, 9, 0);
    for (k, (&o, &x)) in out.iter().zip(&src).enumerate() {
        let ch = k / 81;
        assert!((f64::from(o) - (f64::from(x) - mean[ch]) / std[ch]).abs() < 1e-5);
        assert!((f64::from(o) * std[ch] + mean[ch] - f64::from(x)).abs() < 1e-6);
    }

    // center_crop: torchvision's offset round((in - out) / 2), half to even:
    // 31 → 28: round(1.5) = 2; 29 → 28: round(0.5) = 0; 28 → 30 pads one zero each side.
    for (size, out, off) in [
        (31usize, 28usize, 2isize),
        (29, 28, 0),
        (32, 28, 2),
        (28, 30, -1),
    ] {
        let p = positions(1, size);
        let v = view("c", vec![("center_crop", vec![("size", int(out as i64))])]);
        let (got, s) = apply(&v, &p, 1, size, 0);
        assert_eq!(s, out);
        for y in 0..out {
            for x in 0..out {
                let (sy, sx) = (y as isize + off, x as isize + off);
                let want = if (0..size as isize).contains(&sy) && (0..size as isize).contains(&sx) {
                    p[sy as usize * size + sx as usize]
                } else {
                    0.0
                };
                assert_eq!(got[y * out + x], want, "{size}→{out} at {y},{x}");
            }
        }
    }
}

#[test]
fn shift_crop_offsets_stay_in_bounds() {
    let size = 32;
    let p = positions(2, size);
    let v = view(
        "t",
        vec![("shift_crop", vec![("size", int(28)), ("max_shift", int(4))])],
    );
    let mut seen = [[false; 5]; 5];
    for seed in 0..200 {
        let (out, s) = apply(&v, &p, 2, size, seed);
        assert_eq!(s, 28);
        // The top-left value encodes the offset.
        let k = (out[0] * (size * size) as f32).round() as usize;
        let (dy, dx) = (k / size, k % size);
        assert!(dy <= 4 && dx <= 4, "offset ({dy}, {dx})");
        seen[dy][dx] = true;
        for ch in 0..2 {
            for y in 0..28 {
                for x in 0..28 {
                    assert_eq!(
                        out[(ch * 28 + y) * 28 + x],
                        p[(ch * size + y + dy) * size + x + dx]
                    );
                }
            }
        }
    }
    assert!(
        seen.iter().flatten().all(|&s| s),
        "every offset 0..=4 is drawn"
    );
    // max_shift 0 is the top-left crop.
    let z = view(
        "o",
        vec![("shift_crop", vec![("size", int(28)), ("max_shift", int(0))])],
    );
    let (out, _) = apply(&z, &p, 2, size, 9);
    assert_eq!(out[0], 0.0);
    assert_eq!(out[28 * 28 + 27 * 28 + 27], p[size * size + 27 * size + 27]);
    // An input too small for size + max_shift is an error naming the view.
    let e = augment_view(&v, &positions(1, 30), 1, 30, &mut StdRng::seed_from_u64(0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("view `t`") && e.contains("at least 32"), "{e}");
}

#[test]
fn colour_operations() {
    let n = 6 * 6;
    // Brightness only: every unclamped pixel is scaled by the same factor in [0.6, 1.4].
    let src: Vec<f32> = uniform(n, 4).iter().map(|x| 0.1 + 0.6 * x).collect();
    let b = view(
        "b",
        vec![(
            "color_jitter",
            vec![
                ("brightness", num(0.4)),
                ("contrast", num(0.0)),
                ("saturation", num(0.0)),
                ("hue", num(0.0)),
                ("p", num(1.0)),
            ],
        )],
    );
    let mut factors = Vec::new();
    for seed in 0..10 {
        let (out, _) = apply(&b, &src, 1, 6, seed);
        let f = out[0] / src[0];
        assert!((0.6 - 1e-6..=1.4 + 1e-6).contains(&f));
        for (&o, &x) in out.iter().zip(&src) {
            assert!((o - (f * x).min(1.0)).abs() < 1e-5);
        }
        factors.push(f);
    }
    assert!(factors.iter().any(|&f| (f - factors[0]).abs() > 1e-3));

    // Contrast only on grey: out = f·x + (1 - f)·mean(x), so the mean is kept when unclamped.
    let src: Vec<f32> = uniform(n, 5).iter().map(|x| 0.35 + 0.3 * x).collect();
    let mean = src.iter().map(|&x| f64::from(x)).sum::<f64>() / n as f64;
    let c = view(
        "c",
        vec![(
            "color_jitter",
            vec![
                ("brightness", num(0.0)),
                ("contrast", num(0.5)),
                ("saturation", num(0.9)),
                ("hue", num(0.3)),
                ("p", num(1.0)),
            ],
        )],
    );
    let (out, _) = apply(&c, &src, 1, 6, 1);
    let f = (f64::from(out[0]) - mean) / (f64::from(src[0]) - mean);
    for (&o, &x) in out.iter().zip(&src) {
        assert!((f64::from(o) - (f * f64::from(x) + (1.0 - f) * mean)).abs() < 1e-5);
    }

    // Saturation only on RGB keeps each pixel's luma (0.2989 R + 0.587 G + 0.114 B).
    let rgb: Vec<f32> = uniform(3 * n, 6).iter().map(|x| 0.4 + 0.2 * x).collect();
    let luma = |img: &[f32], p: usize| -> f64 {
        0.2989 * f64::from(img[p])
            + 0.587 * f64::from(img[n + p])
            + 0.114 * f64::from(img[2 * n + p])
    };
    let s = view(
        "s",
        vec![(
            "color_jitter",
            vec![
                ("brightness", num(0.0)),
                ("contrast", num(0.0)),
                ("saturation", num(0.5)),
                ("hue", num(0.0)),
                ("p", num(1.0)),
            ],
        )],
    );
    let (out, _) = apply(&s, &rgb, 3, 6, 2);
    assert_ne!(out, rgb);
    for p in 0..n {
        assert!((luma(&out, p) - luma(&rgb, p)).abs() < 1e-4);
    }

    // Hue only keeps each pixel's max and min channel (a rotation of the colour wheel).
    let h = view(
        "h",
        vec![(
            "color_jitter",
            vec![
                ("brightness", num(0.0)),
                ("contrast", num(0.0)),
                ("saturation", num(0.0)),
                ("hue", num(0.5)),
                ("p", num(1.0)),
            ],
        )],
    );
    let rgb = uniform(3 * n, 7);
    let (out, _) = apply(&h, &rgb, 3, 6, 3);
    assert_ne!(out, rgb);
    for p in 0..n {
        let px = |img: &[f32]| [img[p], img[n + p], img[2 * n + p]];
        let (a, b) = (px(&rgb), px(&out));
        let mx = |v: [f32; 3]| v[0].max(v[1]).max(v[2]);
        let mn = |v: [f32; 3]| v[0].min(v[1]).min(v[2]);
        assert!((mx(a) - mx(b)).abs() < 1e-5 && (mn(a) - mn(b)).abs() < 1e-5);
    }
    // ... and shifts every pixel's hue by the same amount (standard HSV hue, computed here).
    let hue = |p: [f32; 3]| -> f64 {
        let [r, g, b] = p.map(f64::from);
        let (mx, mn) = (r.max(g).max(b), r.min(g).min(b));
        let d = mx - mn;
        let h = if mx == r {
            ((g - b) / d).rem_euclid(6.0)
        } else if mx == g {
            (b - r) / d + 2.0
        } else {
            (r - g) / d + 4.0
        };
        h / 6.0
    };
    let px = |img: &[f32], p: usize| [img[p], img[n + p], img[2 * n + p]];
    let shifts: Vec<f64> = (0..n)
        .filter(|&p| {
            let v = px(&rgb, p);
            v[0].max(v[1]).max(v[2]) - v[0].min(v[1]).min(v[2]) > 0.1
        })
        .map(|p| (hue(px(&out, p)) - hue(px(&rgb, p))).rem_euclid(1.0))
        .collect();
    assert!(shifts.len() > n / 2);
    for &d in &shifts {
        let gap = (d - shifts[0]).abs();
        assert!(gap.min(1.0 - gap) < 1e-4, "hue shifts {d} vs {}", shifts[0]);
    }
    assert!(shifts[0].min(1.0 - shifts[0]) <= 0.5 && shifts[0] > 1e-3);
    // A grey pixel has no hue: unchanged by any shift.
    let grey = vec![0.5f32; 3 * n];
    assert_eq!(apply(&h, &grey, 3, 6, 4).0, grey);

    // grayscale keeps 3 channels, each the luma; on 1 channel it is the identity.
    let g = view("g", vec![("grayscale", vec![("p", num(1.0))])]);
    let rgb = uniform(3 * n, 8);
    let (out, _) = apply(&g, &rgb, 3, 6, 0);
    assert_eq!(out.len(), 3 * n);
    for p in 0..n {
        let l = luma(&rgb, p);
        for ch in 0..3 {
            assert!((f64::from(out[ch * n + p]) - l).abs() < 1e-5);
        }
    }
    let one = uniform(n, 9);
    assert_eq!(apply(&g, &one, 1, 6, 0).0, one);

    // solarize: x >= 0.5 becomes 1 - x.
    let sol = view(
        "s",
        vec![("solarize", vec![("threshold", num(0.5)), ("p", num(1.0))])],
    );
    let src = [0.0f32, 0.2, 0.5, 0.7, 1.0, 0.49, 0.51, 0.9, 0.3];
    let (out, _) = apply(&sol, &src, 1, 3, 0);
    assert_eq!(
        out,
        [0.0, 0.2, 0.5, 0.3, 0.0, 0.49, 1.0 - 0.51, 1.0 - 0.9, 0.3]
    );
}

/// Naive 2-D Gaussian blur with torch's reflect padding, radius ceil(3σ).
fn reference_blur(src: &[f32], size: usize, sigma: f64) -> Vec<f64> {
    let r = (3.0 * sigma).ceil() as isize;
    let g: Vec<f64> = (-r..=r)
        .map(|x| (-(x * x) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f64 = g.iter().sum();
    let reflect = |mut i: isize| -> usize {
        let n = size as isize;
        while i < 0 || i >= n {
            i = if i < 0 { -i } else { 2 * (n - 1) - i };
        }
        i as usize
    };
    let mut out = vec![0.0; size * size];
    for y in 0..size {
        for x in 0..size {
            let mut acc = 0.0;
            for (a, ga) in g.iter().enumerate() {
                for (b, gb) in g.iter().enumerate() {
                    let sy = reflect(y as isize + a as isize - r);
                    let sx = reflect(x as isize + b as isize - r);
                    acc += ga * gb / (total * total) * f64::from(src[sy * size + sx]);
                }
            }
            out[y * size + x] = acc;
        }
    }
    out
}

#[test]
fn gaussian_blur_matches_the_reference() {
    let src = uniform(10 * 10, 10);
    for sigma in [0.5, 0.8, 2.0, 4.0] {
        let v = view(
            "b",
            vec![(
                "gaussian_blur",
                vec![("sigma", range(sigma, sigma)), ("p", num(1.0))],
            )],
        );
        let (out, s) = apply(&v, &src, 1, 10, 0);
        assert_eq!(s, 10);
        assert!(
            max_abs_diff(&out, &reference_blur(&src, 10, sigma)) < 1e-5,
            "σ {sigma}"
        );
    }
    // A constant image stays constant; p = 0 is the identity.
    let flat = vec![0.25f32; 64];
    let v = view(
        "b",
        vec![(
            "gaussian_blur",
            vec![("sigma", range(0.1, 2.0)), ("p", num(1.0))],
        )],
    );
    assert!(
        apply(&v, &flat, 1, 8, 1)
            .0
            .iter()
            .all(|&x| (x - 0.25).abs() < 1e-6)
    );
    let off = view(
        "b",
        vec![(
            "gaussian_blur",
            vec![("sigma", range(0.1, 2.0)), ("p", num(0.0))],
        )],
    );
    assert_eq!(apply(&off, &src, 1, 10, 1).0, src);
}

#[test]
fn bad_pipelines_are_errors() {
    let src = uniform(16, 0);
    let unknown = view("weird", vec![("hflip", vec![]), ("sharpen", vec![])]);
    let e = augment_view(&unknown, &src, 1, 4, &mut StdRng::seed_from_u64(0))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("view `weird`") && e.contains("unknown augmentation `sharpen`"),
        "{e}"
    );
    let wrong_len = view(
        "n",
        vec![(
            "normalize",
            vec![("mean", floats(&[0.1, 0.2])), ("std", floats(&[0.3, 0.3]))],
        )],
    );
    let e = augment_view(
        &wrong_len,
        &uniform(48, 0),
        3,
        4,
        &mut StdRng::seed_from_u64(0),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("normalize has 2 mean values for 3-channel images"),
        "{e}"
    );
    let zero_std = view(
        "n",
        vec![(
            "normalize",
            vec![("mean", floats(&[0.1])), ("std", floats(&[0.0]))],
        )],
    );
    assert!(Pipeline::new(&zero_std).is_err());
    let bad_p = view("p", vec![("hflip", vec![("p", num(1.5))])]);
    assert!(Pipeline::new(&bad_p).is_err());
    assert!(augment_view(&bad_p, &src, 1, 5, &mut StdRng::seed_from_u64(0)).is_err());
}

// ---------------------------------------------------------------------------------------------
// batches

fn small_dataset(n: usize, c: usize, size: usize) -> Dataset {
    let images: Vec<u8> = uniform(n * c * size * size, 42)
        .iter()
        .map(|&x| (x * 255.0) as u8)
        .collect();
    Dataset {
        images,
        labels: (0..n as u32).map(|i| i % 10).collect(),
        n,
        channels: c,
        size,
        classes: 10,
        class_names: (0..10).map(|i| i.to_string()).collect(),
    }
}

fn cmae() -> canc_compiler::Plan {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/cmae.canspec");
    let res = canc_compiler::resolve_path(&path, &[]);
    assert!(!res.has_errors());
    res.plans.into_iter().next().unwrap()
}

fn steps(list: &[(&str, &str, Option<&str>)]) -> Vec<(String, String, Option<String>)> {
    list.iter()
        .map(|(s, v, f)| (s.to_string(), v.to_string(), f.map(str::to_string)))
        .collect()
}

#[test]
fn cmae_views_share_the_base_crop() {
    let plan = cmae();
    let ds = small_dataset(12, 1, 28);
    let vs = steps(&[
        ("b", "base", None),
        ("x", "online", Some("b")),
        ("t", "target", Some("b")),
    ]);
    let idx = [3, 0, 11, 7];
    let batch = make_batch(&ds, &idx, &plan.views, &vs, 0, 1, 5).unwrap();
    assert_eq!(batch.labels, [3, 0, 1, 7]);
    let shapes: Vec<(&str, usize, usize, usize)> = batch
        .views
        .iter()
        .map(|(n, v, c, s)| (n.as_str(), v.len(), *c, *s))
        .collect();
    assert_eq!(
        shapes,
        [
            ("b", 4 * 32 * 32, 1, 32),
            ("x", 4 * 28 * 28, 1, 28),
            ("t", 4 * 28 * 28, 1, 28)
        ]
    );
    // The online view is the normalised top-left 28×28 of the base crop.
    let (b, x) = (&batch.views[0].1, &batch.views[1].1);
    let (mean, std) = (0.286f64, 0.353f64);
    for i in 0..4 {
        for y in 0..28 {
            for xx in 0..28 {
                let base = f64::from(b[i * 1024 + y * 32 + xx]);
                let got = f64::from(x[i * 784 + y * 28 + xx]);
                assert!((got - (base - mean) / std).abs() < 1e-5);
            }
        }
    }
    // The base crop is un-normalised pixels.
    assert!(b.iter().all(|&p| (0.0..=1.0).contains(&p)));
}

#[test]
fn from_reads_pixels_before_the_trailing_normalize() {
    let ds = small_dataset(3, 1, 6);
    let views = vec![
        view(
            "a",
            vec![(
                "normalize",
                vec![("mean", floats(&[0.5])), ("std", floats(&[0.5]))],
            )],
        ),
        view("id", vec![]),
    ];
    let vs = steps(&[("a", "a", None), ("c", "id", Some("a"))]);
    let batch = make_batch(&ds, &[0, 1, 2], &views, &vs, 7, 0, 0).unwrap();
    for (k, &p) in ds.images.iter().enumerate() {
        let raw = f64::from(p) / 255.0;
        assert!((f64::from(batch.views[0].1[k]) - (raw - 0.5) / 0.5).abs() < 1e-6);
        assert!((f64::from(batch.views[1].1[k]) - raw).abs() < 1e-6);
    }
}

fn simclr_like() -> Vec<ViewPlan> {
    vec![view(
        "aug",
        vec![
            (
                "random_resized_crop",
                vec![
                    ("size", int(28)),
                    ("scale", range(0.2, 1.0)),
                    ("ratio", range(0.75, 1.333)),
                ],
            ),
            ("hflip", vec![("p", num(0.5))]),
            (
                "color_jitter",
                vec![
                    ("brightness", num(0.4)),
                    ("contrast", num(0.4)),
                    ("saturation", num(0.4)),
                    ("hue", num(0.1)),
                    ("p", num(0.8)),
                ],
            ),
            ("grayscale", vec![("p", num(0.2))]),
            (
                "gaussian_blur",
                vec![("sigma", range(0.1, 2.0)), ("p", num(0.5))],
            ),
            ("solarize", vec![("threshold", num(0.5)), ("p", num(0.2))]),
            (
                "normalize",
                vec![
                    ("mean", floats(&[0.5, 0.4, 0.3])),
                    ("std", floats(&[0.2, 0.25, 0.3])),
                ],
            ),
        ],
    )]
}

#[test]
fn batches_are_deterministic_and_thread_count_independent() {
    let ds = small_dataset(40, 3, 32);
    let views = simclr_like();
    let vs = steps(&[("x1", "aug", None), ("x2", "aug", None)]);
    let idx: Vec<usize> = (0..40).rev().collect();
    let build = |threads: usize, seed: u64| -> Batch {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| make_batch(&ds, &idx, &views, &vs, seed, 2, 9).unwrap())
    };
    let one = build(1, 3);
    let two = build(2, 3);
    assert_eq!(one, two);
    assert_eq!(one, build(2, 3));
    assert_ne!(one.views[0].1, build(2, 4).views[0].1, "the seed matters");
    // The two views of an image differ (each step draws its own randomness).
    assert_ne!(one.views[0].1, one.views[1].1);
    assert_eq!((one.views[0].2, one.views[0].3), (3, 28));
    assert_eq!(one.views[0].1.len(), 40 * 3 * 28 * 28);
    // An image's views do not depend on the rest of the batch.
    let alone = make_batch(&ds, &[idx[5]], &views, &vs, 3, 2, 9).unwrap();
    assert_eq!(alone.views[0].1, one.views[0].1[5 * 2352..6 * 2352]);
    assert_eq!(alone.labels, [ds.labels[idx[5]]]);
}

#[test]
fn batch_errors() {
    let ds = small_dataset(4, 1, 8);
    let views = vec![view("v", vec![])];
    let e = make_batch(&ds, &[0], &views, &steps(&[("x", "nope", None)]), 0, 0, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("view `nope`"), "{e}");
    let e = make_batch(&ds, &[0], &views, &steps(&[("x", "v", Some("y"))]), 0, 0, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("from = y"), "{e}");
    let e = make_batch(&ds, &[4], &views, &steps(&[("x", "v", None)]), 0, 0, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("index 4"), "{e}");
}

#[test]
fn epoch_order_is_a_seeded_permutation() {
    let a = epoch_order(1000, 1, 0);
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
    assert_eq!(a, epoch_order(1000, 1, 0));
    assert_ne!(a, epoch_order(1000, 1, 1));
    assert_ne!(a, epoch_order(1000, 2, 0));
    assert_ne!(a, sorted);
    assert!(epoch_order(0, 1, 0).is_empty());
}

#[test]
fn normalized_eval_images() {
    let ds = small_dataset(3, 3, 4);
    let out = ds
        .normalized(&[2, 0], &[0.5, 0.4, 0.3], &[0.2, 0.25, 0.5])
        .unwrap();
    assert_eq!(out.len(), 2 * 48);
    let img = ds.image(2).unwrap();
    for k in 0..48 {
        let ch = k / 16;
        let want = (f64::from(img[k]) / 255.0 - [0.5, 0.4, 0.3][ch]) / [0.2, 0.25, 0.5][ch];
        assert!((f64::from(out[k]) - want).abs() < 1e-5);
    }
    assert!(ds.normalized(&[3], &[0.5], &[0.5]).is_err());
    let img = Image::from_u8(1, 2, &[0, 255, 51, 102]);
    assert_eq!(img.data, [0.0, 1.0, 0.2, 0.4]);
}
