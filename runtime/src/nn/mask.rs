//! Patch masks, drawn per image on the CPU from a seeded RNG: which grid positions stay visible
//! (`keep`, ascending indices) and the `[B, grid]` mask (1.0 = masked).

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::{Rng, RngExt};

/// MAE's random masking: for each image, uniform noise over the `grid` positions, argsorted;
/// the first `kept` positions stay visible. Returns `keep` `[batch, kept]` (each row ascending)
/// and `mask` `[batch, grid]` (1.0 = masked). The same RNG state gives the same masks.
///
/// # Panics
/// If `kept > grid`.
pub fn random_keep<B: Backend>(
    batch: usize,
    grid: usize,
    kept: usize,
    rng: &mut impl Rng,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2>) {
    assert!(kept <= grid, "cannot keep {kept} of {grid} positions");
    let rows = (0..batch)
        .map(|_| {
            let noise: Vec<f64> = (0..grid).map(|_| rng.random::<f64>()).collect();
            let mut order: Vec<usize> = (0..grid).collect();
            order.sort_by(|&a, &b| noise[a].total_cmp(&noise[b]));
            order.truncate(kept);
            order
        })
        .collect();
    to_tensors(rows, grid, kept, device)
}

/// Block masking (CMAE): the grid of `side × side` positions is tiled by aligned
/// `block × block` squares (clipped at the edges when `block` does not divide `side`); for each
/// image, squares in random order are masked until at least `side² − kept` positions are,
/// then randomly chosen positions of the last square are unmasked again so that exactly `kept`
/// stay visible. Returns `keep` `[batch, kept]` (ascending) and `mask` `[batch, side²]`
/// (1.0 = masked).
///
/// # Panics
/// If `kept > side²` or `block == 0`.
pub fn block_keep<B: Backend>(
    batch: usize,
    side: usize,
    kept: usize,
    block: usize,
    rng: &mut impl Rng,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2>) {
    let grid = side * side;
    assert!(kept <= grid, "cannot keep {kept} of {grid} positions");
    assert!(block > 0, "block side must be positive");
    let cells = side.div_ceil(block);
    let square = |cell: usize| -> Vec<usize> {
        let (r0, c0) = ((cell / cells) * block, (cell % cells) * block);
        (r0..(r0 + block).min(side))
            .flat_map(|r| (c0..(c0 + block).min(side)).map(move |c| r * side + c))
            .collect()
    };
    let target = grid - kept;
    let rows = (0..batch)
        .map(|_| {
            let mut order: Vec<usize> = (0..cells * cells).collect();
            order.shuffle(rng);
            let mut masked = vec![false; grid];
            let mut count = 0;
            for cell in order {
                if count >= target {
                    break;
                }
                let mut positions = square(cell);
                let excess = (count + positions.len()).saturating_sub(target);
                positions.shuffle(rng);
                for &p in &positions[excess..] {
                    masked[p] = true;
                }
                count += positions.len() - excess;
            }
            (0..grid).filter(|&p| !masked[p]).collect()
        })
        .collect();
    to_tensors(rows, grid, kept, device)
}

/// `keep` and `mask` tensors of per-image visible position lists (each sorted here).
fn to_tensors<B: Backend>(
    rows: Vec<Vec<usize>>,
    grid: usize,
    kept: usize,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2>) {
    let batch = rows.len();
    let mut keep = Vec::with_capacity(batch * kept);
    let mut mask = vec![1f32; batch * grid];
    for (b, mut row) in rows.into_iter().enumerate() {
        row.sort_unstable();
        for &p in &row {
            mask[b * grid + p] = 0.0;
            keep.push(p as i64);
        }
    }
    (
        Tensor::from_data(TensorData::new(keep, [batch, kept]), device),
        Tensor::from_data(TensorData::new(mask, [batch, grid]), device),
    )
}
