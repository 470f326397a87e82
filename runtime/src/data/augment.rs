//! The augmentations of a `view` block, as torchvision implements them on float tensors.
//!
//! Images are square, `c × size × size` f32 (channel-major). Pixels start in [0, 1]; every
//! augmentation but `normalize` keeps them there (the colour operations clamp, as torchvision's
//! do). A [`Pipeline`] is parsed once from a [`ViewPlan`] and applied per image with that image's
//! RNG; unknown augmentation names and unusable settings are errors.

use canc_compiler::RValue;
use canc_compiler::plan::ViewPlan;
use rand::Rng;
use rand::RngExt;
use rand::seq::SliceRandom;

use super::DataError;

/// One image: `c × size × size` f32, channel-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Channels.
    pub c: usize,
    /// Side in pixels.
    pub size: usize,
    /// Pixels, `c · size · size`.
    pub data: Vec<f32>,
}

impl Image {
    /// An image from 8-bit pixels (`c · size · size`), scaled to [0, 1].
    pub fn from_u8(c: usize, size: usize, px: &[u8]) -> Self {
        Image {
            c,
            size,
            data: px.iter().map(|&p| f32::from(p) / 255.0).collect(),
        }
    }
}

/// One parsed augmentation.
#[derive(Debug, Clone, PartialEq)]
enum Aug {
    RandomResizedCrop {
        size: Option<usize>,
        scale: (f64, f64),
        ratio: (f64, f64),
    },
    Resize {
        size: Option<usize>,
    },
    CenterCrop {
        size: Option<usize>,
    },
    ShiftCrop {
        size: Option<usize>,
        max_shift: usize,
    },
    HFlip {
        p: f64,
    },
    ColorJitter {
        brightness: f64,
        contrast: f64,
        saturation: f64,
        hue: f64,
        p: f64,
    },
    Grayscale {
        p: f64,
    },
    GaussianBlur {
        sigma: (f64, f64),
        p: f64,
    },
    Solarize {
        threshold: f32,
        p: f64,
    },
    Normalize {
        mean: Vec<f32>,
        std: Vec<f32>,
    },
}

/// A view's augmentations, parsed and checked.
///
/// A run of `normalize` at the end of the pipeline is kept apart: [`Pipeline::pixels`] applies
/// everything before it and [`Pipeline::finish`] applies it, so a view taken `from` this one
/// starts from pixels in [0, 1] (CMAE's `online`/`target` views crop the *un-normalised* base crop
/// `b`, whatever `b`'s own pipeline ends with).
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    view: String,
    augs: Vec<Aug>,
    /// Index of the first augmentation of the trailing run of `normalize`.
    tail: usize,
    /// Index of the first `normalize` (the length without one).
    first_norm: usize,
}

/// Augments one image with `view`'s pipeline: `src` is `c × size × size` in [0, 1]; returns the
/// pixels (`c × out × out`) and `out`.
pub fn augment_view<R: Rng + ?Sized>(
    view: &ViewPlan,
    src: &[f32],
    c: usize,
    size: usize,
    rng: &mut R,
) -> Result<(Vec<f32>, usize), DataError> {
    if src.len() != c * size * size {
        return Err(DataError::View {
            view: view.name.clone(),
            msg: format!(
                "input has {} values, not {c}×{size}×{size} = {}",
                src.len(),
                c * size * size
            ),
        });
    }
    let img = Image {
        c,
        size,
        data: src.to_vec(),
    };
    let out = Pipeline::new(view)?.apply(img, rng)?;
    Ok((out.data, out.size))
}

impl Pipeline {
    /// Parses `view`'s augmentations; settings absent from the plan take the reference's defaults
    /// (`size` defaults to the input side; `normalize` needs its `mean` and `std`).
    pub fn new(view: &ViewPlan) -> Result<Self, DataError> {
        let err = |msg: String| DataError::View {
            view: view.name.clone(),
            msg,
        };
        let mut augs = Vec::with_capacity(view.augment.len());
        for (name, settings) in &view.augment {
            let s = Settings {
                view: &view.name,
                aug: name,
                map: settings.iter().map(|(k, v)| (k.as_str(), v)).collect(),
            };
            let aug = match name.as_str() {
                "random_resized_crop" => {
                    let scale = s.range("scale", (0.08, 1.0))?;
                    let ratio = s.range("ratio", (0.75, 4.0 / 3.0))?;
                    if scale.1 <= 0.0 {
                        return Err(err(format!(
                            "random_resized_crop.scale {}..{} has no positive area",
                            scale.0, scale.1
                        )));
                    }
                    if ratio.0 <= 0.0 {
                        return Err(err(format!(
                            "random_resized_crop.ratio {}..{} must be positive",
                            ratio.0, ratio.1
                        )));
                    }
                    Aug::RandomResizedCrop {
                        size: s.size()?,
                        scale,
                        ratio,
                    }
                }
                "resize" => Aug::Resize { size: s.size()? },
                "center_crop" => Aug::CenterCrop { size: s.size()? },
                "shift_crop" => Aug::ShiftCrop {
                    size: s.size()?,
                    max_shift: s.uint("max_shift", 0)?,
                },
                "hflip" => Aug::HFlip { p: s.prob(0.5)? },
                "color_jitter" => {
                    let brightness = s.nonneg("brightness", 0.4)?;
                    let contrast = s.nonneg("contrast", 0.4)?;
                    let saturation = s.nonneg("saturation", 0.4)?;
                    let hue = s.nonneg("hue", 0.1)?;
                    if hue > 0.5 {
                        return Err(err(format!("color_jitter.hue {hue} is above 0.5")));
                    }
                    Aug::ColorJitter {
                        brightness,
                        contrast,
                        saturation,
                        hue,
                        p: s.prob(0.8)?,
                    }
                }
                "grayscale" => Aug::Grayscale { p: s.prob(0.2)? },
                "gaussian_blur" => Aug::GaussianBlur {
                    sigma: s.range("sigma", (0.1, 2.0))?,
                    p: s.prob(0.5)?,
                },
                "solarize" => Aug::Solarize {
                    threshold: s.num("threshold", 0.5)? as f32,
                    p: s.prob(0.2)?,
                },
                "normalize" => {
                    let mean = s.floats("mean")?;
                    let std = s.floats("std")?;
                    if mean.is_empty() || mean.len() != std.len() {
                        return Err(err(format!(
                            "normalize needs as many means as stds (got {} and {})",
                            mean.len(),
                            std.len()
                        )));
                    }
                    if std.iter().any(|&x| x <= 0.0) {
                        return Err(err(format!("normalize.std {std:?} must be > 0")));
                    }
                    Aug::Normalize { mean, std }
                }
                other => return Err(err(format!("unknown augmentation `{other}`"))),
            };
            augs.push(aug);
        }
        let tail = augs
            .iter()
            .rposition(|a| !matches!(a, Aug::Normalize { .. }))
            .map_or(0, |i| i + 1);
        let first_norm = augs
            .iter()
            .position(|a| matches!(a, Aug::Normalize { .. }))
            .unwrap_or(augs.len());
        Ok(Pipeline {
            view: view.name.clone(),
            augs,
            tail,
            first_norm,
        })
    }

    /// The view's name.
    pub fn view(&self) -> &str {
        &self.view
    }

    /// The output side for an input of side `size`.
    pub fn out_size(&self, size: usize) -> usize {
        self.augs.iter().fold(size, |s, a| match a {
            Aug::RandomResizedCrop { size: o, .. }
            | Aug::Resize { size: o }
            | Aug::CenterCrop { size: o }
            | Aug::ShiftCrop { size: o, .. } => o.unwrap_or(s),
            _ => s,
        })
    }

    /// The whole pipeline: [`Pipeline::pixels`] then [`Pipeline::finish`].
    pub fn apply<R: Rng + ?Sized>(&self, img: Image, rng: &mut R) -> Result<Image, DataError> {
        let px = self.pixels(img, rng)?;
        self.finish(px)
    }

    /// Every augmentation before the trailing `normalize`s (all the random ones).
    pub fn pixels<R: Rng + ?Sized>(&self, img: Image, rng: &mut R) -> Result<Image, DataError> {
        self.augs[..self.tail]
            .iter()
            .enumerate()
            .try_fold(img, |img, (i, a)| {
                // Pixels are in [0, 1] until the first `normalize`.
                let unit = (i < self.first_norm).then_some((0.0, 1.0));
                self.step(a, img, unit, rng)
            })
    }

    /// The trailing `normalize`s (deterministic).
    pub fn finish(&self, img: Image) -> Result<Image, DataError> {
        self.augs[self.tail..]
            .iter()
            .try_fold(img, |img, a| match a {
                Aug::Normalize { mean, std } => self.normalize(img, mean, std),
                _ => Ok(img),
            })
    }

    fn err(&self, msg: String) -> DataError {
        DataError::View {
            view: self.view.clone(),
            msg,
        }
    }

    fn step<R: Rng + ?Sized>(
        &self,
        aug: &Aug,
        mut img: Image,
        unit: Option<(f32, f32)>,
        rng: &mut R,
    ) -> Result<Image, DataError> {
        if img.data.len() != img.c * img.size * img.size || img.size == 0 {
            return Err(self.err(format!(
                "input has {} values, not {c}×{s}×{s}",
                img.data.len(),
                c = img.c,
                s = img.size
            )));
        }
        Ok(match aug {
            Aug::RandomResizedCrop { size, scale, ratio } => {
                let out = size.unwrap_or(img.size);
                let (y, x, h, w) = rrc_params(img.size, *scale, *ratio, rng);
                resized_crop(&img, (y, x, h, w), out, unit)
            }
            Aug::Resize { size } => {
                let out = size.unwrap_or(img.size);
                if out == img.size {
                    img
                } else {
                    resized_crop(&img, (0, 0, img.size, img.size), out, unit)
                }
            }
            Aug::CenterCrop { size } => {
                let out = size.unwrap_or(img.size);
                let off = center_offset(img.size, out);
                crop(&img, off, off, out)
            }
            Aug::ShiftCrop { size, max_shift } => {
                let out = size.unwrap_or(img.size);
                if out + max_shift > img.size {
                    return Err(self.err(format!(
                        "shift_crop {{ size = {out}, max_shift = {max_shift} }} needs an input \
                         of at least {} pixels, got {}",
                        out + max_shift,
                        img.size
                    )));
                }
                let dy = rng.random_range(0..=*max_shift) as isize;
                let dx = rng.random_range(0..=*max_shift) as isize;
                crop(&img, dy, dx, out)
            }
            Aug::HFlip { p } => {
                if chance(rng, *p) {
                    hflip(&mut img);
                }
                img
            }
            Aug::ColorJitter {
                brightness,
                contrast,
                saturation,
                hue,
                p,
            } => {
                if chance(rng, *p) {
                    color_jitter(&mut img, [*brightness, *contrast, *saturation, *hue], rng);
                }
                img
            }
            Aug::Grayscale { p } => {
                if chance(rng, *p) {
                    grayscale(&mut img);
                }
                img
            }
            Aug::GaussianBlur { sigma, p } => {
                if chance(rng, *p) {
                    let s = uniform(rng, sigma.0, sigma.1);
                    gaussian_blur(&mut img, s);
                }
                img
            }
            Aug::Solarize { threshold, p } => {
                if chance(rng, *p) {
                    solarize(&mut img, *threshold);
                }
                img
            }
            Aug::Normalize { mean, std } => self.normalize(img, mean, std)?,
        })
    }

    /// `normalize` with one value per channel, or one for all.
    fn normalize(&self, mut img: Image, mean: &[f32], std: &[f32]) -> Result<Image, DataError> {
        let pick = |v: &[f32], what: &str| -> Result<Vec<f32>, DataError> {
            match v.len() {
                1 => Ok(vec![v[0]; img.c]),
                l if l == img.c => Ok(v.to_vec()),
                l => Err(self.err(format!(
                    "normalize has {l} {what} values for {}-channel images",
                    img.c
                ))),
            }
        };
        let (mean, std) = (pick(mean, "mean")?, pick(std, "std")?);
        normalize(&mut img, &mean, &std);
        Ok(img)
    }
}

/// Typed access to one augmentation's settings.
struct Settings<'a> {
    view: &'a str,
    aug: &'a str,
    map: Vec<(&'a str, &'a RValue)>,
}

impl Settings<'_> {
    fn get(&self, key: &str) -> Option<&RValue> {
        self.map
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .filter(|v| !matches!(v, RValue::None))
    }

    fn err(&self, key: &str, what: &str, v: &RValue) -> DataError {
        DataError::View {
            view: self.view.to_string(),
            msg: format!("{}.{key} must be {what}, got {v:?}", self.aug),
        }
    }

    fn num(&self, key: &str, default: f64) -> Result<f64, DataError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| self.err(key, "a number", v)),
        }
    }

    fn nonneg(&self, key: &str, default: f64) -> Result<f64, DataError> {
        let x = self.num(key, default)?;
        if x >= 0.0 {
            Ok(x)
        } else {
            Err(self.err(key, "a number >= 0", &RValue::Float(x)))
        }
    }

    fn prob(&self, default: f64) -> Result<f64, DataError> {
        let p = self.num("p", default)?;
        if (0.0..=1.0).contains(&p) {
            Ok(p)
        } else {
            Err(self.err("p", "a probability in [0, 1]", &RValue::Float(p)))
        }
    }

    fn uint(&self, key: &str, default: usize) -> Result<usize, DataError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_i64()
                .and_then(|i| usize::try_from(i).ok())
                .ok_or_else(|| self.err(key, "an integer >= 0", v)),
        }
    }

    fn size(&self) -> Result<Option<usize>, DataError> {
        match self.get("size") {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .and_then(|i| usize::try_from(i).ok())
                .filter(|&i| i >= 1)
                .map(Some)
                .ok_or_else(|| self.err("size", "an integer >= 1", v)),
        }
    }

    fn range(&self, key: &str, default: (f64, f64)) -> Result<(f64, f64), DataError> {
        let r = match self.get(key) {
            None => default,
            Some(RValue::Range(a, b)) => (*a, *b),
            Some(v @ RValue::List(l)) if l.len() == 2 => match (l[0].as_f64(), l[1].as_f64()) {
                (Some(a), Some(b)) => (a, b),
                _ => return Err(self.err(key, "a range a..b", v)),
            },
            Some(v) => match v.as_f64() {
                Some(x) => (x, x),
                None => return Err(self.err(key, "a range a..b", v)),
            },
        };
        if r.0.is_finite() && r.1.is_finite() && r.0 >= 0.0 && r.0 <= r.1 {
            Ok(r)
        } else {
            Err(self.err(
                key,
                "a range a..b with 0 <= a <= b",
                &RValue::Range(r.0, r.1),
            ))
        }
    }

    fn floats(&self, key: &str) -> Result<Vec<f32>, DataError> {
        let v = self.get(key).ok_or_else(|| DataError::View {
            view: self.view.to_string(),
            msg: format!("{}.{key} is not set", self.aug),
        })?;
        let list = match v {
            RValue::List(l) => l.as_slice(),
            single => std::slice::from_ref(single),
        };
        list.iter()
            .map(|x| x.as_f64().filter(|f| f.is_finite()).map(|f| f as f32))
            .collect::<Option<Vec<f32>>>()
            .ok_or_else(|| self.err(key, "a list of numbers", v))
    }
}

/// True with probability `p` (`p = 1` always, `p = 0` never).
fn chance<R: Rng + ?Sized>(rng: &mut R, p: f64) -> bool {
    p > 0.0 && rng.random::<f64>() < p
}

/// Uniform in [lo, hi] (exactly `lo` when the range is empty).
fn uniform<R: Rng + ?Sized>(rng: &mut R, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// Python's `round` (half to even), as torchvision's crop arithmetic uses.
fn round_half_even(x: f64) -> i64 {
    x.round_ties_even() as i64
}

/// torchvision's `RandomResizedCrop.get_params` on a `size × size` image: `(top, left, h, w)`.
///
/// Ten tries of an area fraction uniform in `scale` and a log-uniform aspect ratio `w/h` in
/// `ratio`; then the central crop with the ratio clamped to `ratio`.
fn rrc_params<R: Rng + ?Sized>(
    size: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut R,
) -> (usize, usize, usize, usize) {
    let (height, width) = (size as f64, size as f64);
    let area = height * width;
    let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * uniform(rng, scale.0, scale.1);
        let aspect = uniform(rng, lr0, lr1).exp();
        let w = round_half_even((target * aspect).sqrt());
        let h = round_half_even((target / aspect).sqrt());
        if 0 < w && w as usize <= size && 0 < h && h as usize <= size {
            let (h, w) = (h as usize, w as usize);
            let i = rng.random_range(0..=size - h);
            let j = rng.random_range(0..=size - w);
            return (i, j, h, w);
        }
    }
    // Fallback: the whole image, cropped centrally to the nearest allowed ratio (in_ratio is 1).
    let (h, w) = if 1.0 < ratio.0 {
        (round_half_even(width / ratio.0) as usize, size)
    } else if 1.0 > ratio.1 {
        (size, round_half_even(height * ratio.1) as usize)
    } else {
        (size, size)
    };
    let (h, w) = (h.clamp(1, size), w.clamp(1, size));
    ((size - h) / 2, (size - w) / 2, h, w)
}

/// Crops `(top, left, h, w)` of `img` and resizes it to `out × out` (bilinear, antialiased).
fn resized_crop(
    img: &Image,
    region: (usize, usize, usize, usize),
    out: usize,
    clamp: Option<(f32, f32)>,
) -> Image {
    Image {
        c: img.c,
        size: out,
        data: resample(
            &img.data,
            img.c,
            (img.size, img.size),
            region,
            (out, out),
            clamp,
        ),
    }
}

/// Per-output-position taps of a 1-D bilinear resampling of `len` inputs starting at `start` to
/// `out` outputs, as PIL computes them (triangle filter widened by the downscaling factor, so
/// shrinking averages instead of aliasing; taps stay inside the crop).
struct Taps {
    first: Vec<usize>,
    count: Vec<usize>,
    /// `ksize` weights per output, normalised to sum 1 (zero past `count`).
    weights: Vec<f32>,
    ksize: usize,
    /// Tap-major copies for the gather pass: tap `k` of output `o` at `k · out + o`, reading
    /// input `index` (clamped into range where the weight is zero).
    index_k: Vec<usize>,
    weights_k: Vec<f32>,
}

fn taps(start: usize, len: usize, out: usize) -> Taps {
    let scale = len as f64 / out as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut first = Vec::with_capacity(out);
    let mut count = Vec::with_capacity(out);
    let mut weights = vec![0.0f32; out * ksize];
    let mut w = vec![0.0f64; ksize];
    for xx in 0..out {
        let center = (xx as f64 + 0.5) * scale;
        // `as` truncates toward zero like PIL's C casts (and needs no libm call).
        let xmin = ((center - support + 0.5) as i64).clamp(0, len as i64) as usize;
        let xmax = ((center + support + 0.5) as i64).clamp(0, len as i64) as usize;
        let n = xmax.saturating_sub(xmin).min(ksize);
        let mut total = 0.0;
        for (x, wx) in w.iter_mut().enumerate().take(n) {
            let t = ((x + xmin) as f64 - center + 0.5) / filterscale;
            *wx = (1.0 - t.abs()).max(0.0);
            total += *wx;
        }
        let dst = &mut weights[xx * ksize..xx * ksize + n];
        for (d, &wx) in dst.iter_mut().zip(&w[..n]) {
            *d = if total > 0.0 {
                (wx / total) as f32
            } else {
                0.0
            };
        }
        first.push(start + xmin);
        count.push(n);
    }
    let last = start + len.max(1) - 1;
    // Only as many passes as the widest output needs (2 or 3 when enlarging, not `ksize`).
    let kmax = count.iter().copied().max().unwrap_or(0);
    let mut index_k = vec![0; out * kmax];
    let mut weights_k = vec![0.0f32; out * kmax];
    for k in 0..kmax {
        for o in 0..out {
            index_k[k * out + o] = (first[o] + k).min(last);
            weights_k[k * out + o] = weights[o * ksize + k];
        }
    }
    Taps {
        first,
        count,
        weights,
        ksize,
        index_k,
        weights_k,
    }
}

/// Resamples region `(top, left, h, w)` of a `c × height × width` image to `c × oh × ow`
/// (separable, rows first). The weights are convex, so outputs stay within the input's range up
/// to rounding; `clamp` removes that rounding where the range is known.
pub(crate) fn resample(
    src: &[f32],
    c: usize,
    (height, width): (usize, usize),
    (top, left, h, w): (usize, usize, usize, usize),
    (oh, ow): (usize, usize),
    clamp: Option<(f32, f32)>,
) -> Vec<f32> {
    let tx = taps(left, w, ow);
    let ty = taps(top, h, oh);
    let plane = height * width;
    let mut tmp = vec![0.0f32; c * h * ow];
    for ch in 0..c {
        for y in 0..h {
            let row = &src[ch * plane + (top + y) * width..][..width];
            let dst = &mut tmp[(ch * h + y) * ow..][..ow];
            // Tap by tap, so that the outputs accumulate independently.
            for (idx, wk) in tx
                .index_k
                .chunks_exact(ow)
                .zip(tx.weights_k.chunks_exact(ow))
            {
                for ((d, &i), &wi) in dst.iter_mut().zip(idx).zip(wk) {
                    *d += wi * row[i];
                }
            }
        }
    }
    let mut out = vec![0.0f32; c * oh * ow];
    for ch in 0..c {
        for yy in 0..oh {
            let wts = &ty.weights[yy * ty.ksize..][..ty.count[yy]];
            let y0 = ty.first[yy] - top;
            let dst = &mut out[(ch * oh + yy) * ow..][..ow];
            for (k, &wk) in wts.iter().enumerate() {
                let row = &tmp[(ch * h + y0 + k) * ow..][..ow];
                for (d, &r) in dst.iter_mut().zip(row) {
                    *d += wk * r;
                }
            }
            if let Some((lo, hi)) = clamp {
                for d in dst.iter_mut() {
                    *d = d.clamp(lo, hi);
                }
            }
        }
    }
    out
}

/// torchvision's `center_crop` offset: `round((in - out) / 2)`, negative (zero padding) when the
/// crop is larger than the image.
fn center_offset(size: usize, out: usize) -> isize {
    if size >= out {
        round_half_even((size - out) as f64 / 2.0) as isize
    } else {
        -(((out - size) / 2) as isize)
    }
}

/// The `out × out` window of `img` at `(top, left)`; pixels outside the image are 0.
fn crop(img: &Image, top: isize, left: isize, out: usize) -> Image {
    let s = img.size as isize;
    let mut data = vec![0.0f32; img.c * out * out];
    for ch in 0..img.c {
        for y in 0..out {
            let sy = top + y as isize;
            if !(0..s).contains(&sy) {
                continue;
            }
            let row = &img.data[(ch * img.size + sy as usize) * img.size..][..img.size];
            let dst = &mut data[(ch * out + y) * out..][..out];
            for (x, d) in dst.iter_mut().enumerate() {
                let sx = left + x as isize;
                if (0..s).contains(&sx) {
                    *d = row[sx as usize];
                }
            }
        }
    }
    Image {
        c: img.c,
        size: out,
        data,
    }
}

/// Mirrors every row.
fn hflip(img: &mut Image) {
    let s = img.size;
    for row in img.data.chunks_exact_mut(s) {
        row.reverse();
    }
}

/// ITU-R 601 luma, torchvision's `rgb_to_grayscale` weights.
const LUMA: [f32; 3] = [0.2989, 0.587, 0.114];

/// Per-pixel luma of a 3-channel image (the image itself for 1 channel).
fn luma(img: &Image) -> Vec<f32> {
    let plane = img.size * img.size;
    if img.c != 3 {
        return img.data[..plane].to_vec();
    }
    let (r, rest) = img.data.split_at(plane);
    let (g, b) = rest.split_at(plane);
    r.iter()
        .zip(g)
        .zip(b)
        .map(|((&r, &g), &b)| LUMA[0] * r + LUMA[1] * g + LUMA[2] * b)
        .collect()
}

/// `RandomGrayscale` with the channel count kept: every channel becomes the luma.
fn grayscale(img: &mut Image) {
    if img.c != 3 {
        return;
    }
    let l = luma(img);
    for ch in img.data.chunks_exact_mut(l.len()) {
        ch.copy_from_slice(&l);
    }
}

/// `ColorJitter`: a random order of brightness, contrast, saturation and hue, then each enabled
/// one's factor (`[max(0, 1-x), 1+x]`, hue shift in `[-h, h]`), drawn in that fixed order as
/// torchvision does. Saturation and hue leave 1-channel images unchanged.
fn color_jitter<R: Rng + ?Sized>(img: &mut Image, amounts: [f64; 4], rng: &mut R) {
    let mut order = [0usize, 1, 2, 3];
    order.shuffle(rng);
    let mut factors = [None; 4];
    for (k, &a) in amounts.iter().enumerate() {
        if a > 0.0 {
            factors[k] = Some(if k == 3 {
                uniform(rng, -a, a)
            } else {
                uniform(rng, (1.0 - a).max(0.0), 1.0 + a)
            });
        }
    }
    for k in order {
        let Some(f) = factors[k] else { continue };
        let f = f as f32;
        match k {
            0 => blend_const(img, f, 0.0),
            1 => {
                let l = luma(img);
                let mean = l.iter().map(|&x| f64::from(x)).sum::<f64>() / l.len() as f64;
                blend_const(img, f, mean as f32);
            }
            2 if img.c == 3 => {
                let l = luma(img);
                for ch in img.data.chunks_exact_mut(l.len()) {
                    for (x, &g) in ch.iter_mut().zip(&l) {
                        *x = (f * *x + (1.0 - f) * g).clamp(0.0, 1.0);
                    }
                }
            }
            3 if img.c == 3 => adjust_hue(img, f),
            _ => {}
        }
    }
}

/// `clamp(f·x + (1-f)·other, 0, 1)` for every pixel.
fn blend_const(img: &mut Image, f: f32, other: f32) {
    let o = (1.0 - f) * other;
    for x in &mut img.data {
        *x = (f * *x + o).clamp(0.0, 1.0);
    }
}

/// Shifts the hue of an RGB image by `shift` turns (torchvision's `_rgb2hsv`/`_hsv2rgb`).
fn adjust_hue(img: &mut Image, shift: f32) {
    let plane = img.size * img.size;
    let (r, rest) = img.data.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
        let (h, s, v) = rgb_to_hsv(*r, *g, *b);
        let h = (h + shift).rem_euclid(1.0);
        (*r, *g, *b) = hsv_to_rgb(h, s, v);
    }
}

/// RGB in [0, 1] to HSV with hue in [0, 1).
pub(crate) fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let eqc = maxc == minc;
    let cr = maxc - minc;
    let s = cr / if eqc { 1.0 } else { maxc };
    let div = if eqc { 1.0 } else { cr };
    let (rc, gc, bc) = ((maxc - r) / div, (maxc - g) / div, (maxc - b) / div);
    let h = if maxc == r {
        bc - gc
    } else if maxc == g {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    ((h / 6.0 + 1.0).rem_euclid(1.0), s, maxc)
}

/// HSV (hue in [0, 1)) to RGB.
pub(crate) fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let i = (i as i32).rem_euclid(6);
    let p = (v * (1.0 - s)).clamp(0.0, 1.0);
    let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
    let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
    match i {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

/// Index `i` reflected into `0..n` (torch's `reflect` padding: the edge is not repeated).
fn reflect(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    (if m >= n as isize { period - m } else { m }) as usize
}

/// The normalised 1-D Gaussian of `sigma` on `-r..=r`, `r = ceil(3σ)` (kernel size `2r + 1`).
pub(crate) fn gaussian_kernel(sigma: f64) -> Vec<f32> {
    let r = (3.0 * sigma).ceil().max(0.0) as isize;
    let k: Vec<f64> = (-r..=r)
        .map(|x| (-0.5 * (x as f64 / sigma).powi(2)).exp())
        .collect();
    let total: f64 = k.iter().sum();
    k.iter().map(|&w| (w / total) as f32).collect()
}

/// Separable Gaussian blur with reflect padding; `sigma <= 0` leaves the image unchanged.
fn gaussian_blur(img: &mut Image, sigma: f64) {
    if sigma.is_nan() || sigma <= 0.0 {
        return;
    }
    let k = gaussian_kernel(sigma);
    let r = k.len() / 2;
    let s = img.size;
    // Source index of each padded position `0..s + 2r`.
    let src: Vec<usize> = (0..s + 2 * r)
        .map(|j| reflect(j as isize - r as isize, s))
        .collect();
    let mut pad = vec![0.0f32; s + 2 * r];
    let mut tmp = vec![0.0f32; s * s];
    for plane in img.data.chunks_exact_mut(s * s) {
        // Rows: convolve the reflect-padded row.
        for (row, out) in plane.chunks_exact(s).zip(tmp.chunks_exact_mut(s)) {
            for (p, &j) in pad.iter_mut().zip(&src) {
                *p = row[j];
            }
            out.fill(0.0);
            for (j, &w) in k.iter().enumerate() {
                for (o, &v) in out.iter_mut().zip(&pad[j..j + s]) {
                    *o += w * v;
                }
            }
        }
        // Columns: each output row is a weighted sum of (reflected) rows.
        for (y, out) in plane.chunks_exact_mut(s).enumerate() {
            out.fill(0.0);
            for (&w, &j) in k.iter().zip(&src[y..]) {
                for (o, &v) in out.iter_mut().zip(&tmp[j * s..(j + 1) * s]) {
                    *o += w * v;
                }
            }
        }
    }
}

/// Pixels at or above `threshold` become `1 - x`.
fn solarize(img: &mut Image, threshold: f32) {
    for x in &mut img.data {
        if *x >= threshold {
            *x = 1.0 - *x;
        }
    }
}

/// `(x - mean[c]) / std[c]` per channel.
fn normalize(img: &mut Image, mean: &[f32], std: &[f32]) {
    let plane = img.size * img.size;
    for (ch, p) in img.data.chunks_exact_mut(plane).enumerate() {
        for x in p {
            *x = (*x - mean[ch]) / std[ch];
        }
    }
}
