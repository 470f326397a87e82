//! Times a stack of canc's ViT blocks, forward and forward + backward, on the CPU training
//! backend: the per-block cost that `CANC_PROFILE=1 canc bench` attributes to encoder calls.
//!
//!     cargo run --release -p canc-runtime --example block_bench -- [dim heads tokens batch depth]
//!
//! Compare with PyTorch on the same shapes (`bench/reference.py`'s `Block`).

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, Tensor};
use canc_runtime::nn::Block;
use std::time::Instant;

type AD = Autodiff<Flex>;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let [d, heads, t, b, depth] = match args.as_slice() {
        [d, h, t, b, n] => [*d, *h, *t, *b, *n],
        _ => [192, 3, 25, 64, 6],
    };
    let dev = Default::default();
    let blocks: Vec<Block<AD>> = (0..depth)
        .map(|_| Block::new(d, heads, 4 * d, 1e-6, 0.0, &dev))
        .collect();
    let x = Tensor::<AD, 3>::random([b, t, d], Distribution::Normal(0.0, 1.0), &dev).require_grad();
    let fwd = |x: Tensor<AD, 3>| blocks.iter().fold(x, |h, blk| blk.forward(h));
    for _ in 0..3 {
        let _ = fwd(x.clone()).sum().backward();
    }
    // Forward timed inside training steps (a forward alone leaves its autodiff graph, and the
    // activations it keeps, alive until a backward consumes it).
    let reps = 10;
    let (mut f, mut fb) = (0.0, 0.0);
    for _ in 0..reps {
        let t0 = Instant::now();
        let y = fwd(x.clone()).sum();
        let t1 = Instant::now();
        let _ = y.backward();
        f += (t1 - t0).as_secs_f64() / reps as f64;
        fb += t0.elapsed().as_secs_f64() / reps as f64;
    }
    let flop = 24.0 * (d * d * t * b * depth) as f64;
    println!(
        "d {d} heads {heads} tokens {t} batch {b} depth {depth}: forward {:.1} ms ({:.1} GFLOP/s), forward+backward {:.1} ms",
        f * 1e3,
        flop / f / 1e9,
        fb * 1e3
    );
}
