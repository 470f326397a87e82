//! Batches of augmented views, built in parallel and reproducibly.
//!
//! Every (image, view step) pair gets its own RNG, seeded from the run's seed, the epoch, the
//! training step, the image's index in the data set and the step's name ([`seed_for`]), so a batch
//! is the same whatever the number of threads and whatever order the images are processed in.

use canc_compiler::plan::ViewPlan;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;

use super::augment::{Image, Pipeline};
use super::{DataError, Dataset, out_of_range};

/// The views of one batch, for the plan interpreter.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Per view step, in the order asked: step name, pixels (`B·C·S·S`, image-major), `C`, `S`.
    pub views: Vec<(String, Vec<f32>, usize, usize)>,
    /// The images' labels (`B`), empty when the data set has none.
    pub labels: Vec<u32>,
}

/// SplitMix64's finaliser: a bijective 64-bit mix.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Folds `parts` into one well-mixed 64-bit seed (order matters).
pub(crate) fn mix(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0x243F_6A88_85A3_08D3, |h, &p| splitmix64(h ^ splitmix64(p)))
}

/// FNV-1a of a name: a stable 64-bit id for a view step.
fn name_id(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The RNG seed of view step `step_name` for data-set image `index` at training `step` of
/// `epoch` in a run seeded `seed`.
pub fn seed_for(seed: u64, epoch: u64, step: u64, index: usize, step_name: &str) -> u64 {
    mix(&[seed, epoch, step, index as u64, name_id(step_name)])
}

/// A seeded permutation of `0..n`: the image order of `epoch`.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = StdRng::seed_from_u64(mix(&[0x0_5EED_0FDE, seed, epoch]));
    order.shuffle(&mut rng);
    order
}

/// One view step, resolved.
struct StepSpec {
    name: String,
    pipeline: Pipeline,
    /// The earlier step whose pixels it augments, if any.
    from: Option<usize>,
    /// Later steps read its pixels.
    keep_pixels: bool,
    channels: usize,
    size: usize,
}

/// Builds the views of images `indices` of `ds`.
///
/// `view_steps` lists the plan's view steps in execution order as (step name, view, `from`
/// step). A step with `from = s` augments the pixels of step `s` *before* `s`'s trailing
/// `normalize` (so CMAE's online and target views crop the same un-normalised base crop); the
/// view it outputs is normalised by its own pipeline. Images are processed in parallel (rayon);
/// each (image, step) pair draws from its own RNG ([`seed_for`]).
pub fn make_batch(
    ds: &Dataset,
    indices: &[usize],
    views: &[ViewPlan],
    view_steps: &[(String, String, Option<String>)],
    seed: u64,
    epoch: u64,
    step: u64,
) -> Result<Batch, DataError> {
    let mut steps: Vec<StepSpec> = Vec::with_capacity(view_steps.len());
    for (name, view, from) in view_steps {
        let plan = views.iter().find(|v| &v.name == view).ok_or_else(|| {
            DataError::Batch(format!(
                "step `{name}` uses view `{view}`, which the plan does not define"
            ))
        })?;
        let pipeline = Pipeline::new(plan)?;
        let (from, in_size) = match from {
            None => (None, ds.size),
            Some(f) => {
                let j = steps.iter().position(|s| &s.name == f).ok_or_else(|| {
                    DataError::Batch(format!(
                        "step `{name}` takes `from = {f}`, which is not an earlier view step"
                    ))
                })?;
                steps[j].keep_pixels = true;
                (Some(j), steps[j].size)
            }
        };
        steps.push(StepSpec {
            name: name.clone(),
            size: pipeline.out_size(in_size),
            pipeline,
            from,
            keep_pixels: false,
            channels: ds.channels,
        });
    }
    if let Some(&i) = indices.iter().find(|&&i| i >= ds.n) {
        return Err(out_of_range(i, ds.n));
    }

    let per_image: Vec<Vec<Image>> = indices
        .par_iter()
        .map(|&i| {
            let raw = ds.image(i).ok_or_else(|| out_of_range(i, ds.n))?;
            let raw = Image::from_u8(ds.channels, ds.size, raw);
            let mut pixels: Vec<Option<Image>> = vec![None; steps.len()];
            let mut outs = Vec::with_capacity(steps.len());
            for (k, s) in steps.iter().enumerate() {
                let input = match s.from {
                    None => raw.clone(),
                    Some(j) => pixels[j].clone().ok_or_else(|| {
                        DataError::Batch(format!("step `{}` has no pixels", steps[j].name))
                    })?,
                };
                let mut rng = StdRng::seed_from_u64(seed_for(seed, epoch, step, i, &s.name));
                let px = s.pipeline.pixels(input, &mut rng)?;
                if s.keep_pixels {
                    pixels[k] = Some(px.clone());
                }
                outs.push(s.pipeline.finish(px)?);
            }
            Ok(outs)
        })
        .collect::<Result<_, DataError>>()?;

    let b = indices.len();
    let views = steps
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let len = s.channels * s.size * s.size;
            let mut buf = Vec::with_capacity(b * len);
            for img in &per_image {
                let im = &img[k];
                if im.data.len() != len {
                    return Err(DataError::Batch(format!(
                        "step `{}` produced a {}×{}×{} image, expected {}×{}×{}",
                        s.name, im.c, im.size, im.size, s.channels, s.size, s.size
                    )));
                }
                buf.extend_from_slice(&im.data);
            }
            Ok((s.name.clone(), buf, s.channels, s.size))
        })
        .collect::<Result<Vec<_>, DataError>>()?;
    let labels = if ds.labels.is_empty() {
        Vec::new()
    } else {
        indices
            .iter()
            .map(|&i| {
                ds.labels
                    .get(i)
                    .copied()
                    .ok_or_else(|| out_of_range(i, ds.labels.len()))
            })
            .collect::<Result<_, _>>()?
    };
    Ok(Batch { views, labels })
}
