//! Matrix-product throughput of the `gemm` crate (what Burn's CPU backend and canc's fused
//! Linear use) on the shapes of the CAN spec's blocks, for comparison with MKL through
//! `torch.mm(a, b, out=c)` on the same shapes and thread count.
//!
//!     cargo run --release -p canc-runtime --example gemm_bench

use canc_runtime::ops::gemm::{MatRef, linear, linear_backward, matmul_into};

#[path = "common/timing.rs"]
mod timing;
use timing::best_time;

fn main() {
    for (m, k, n) in [
        (1600, 192, 576),
        (1600, 192, 768),
        (1600, 768, 192),
        (1600, 192, 192),
        (192, 1600, 576),
        (1600, 576, 192),
    ] {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut c = vec![0.0f32; m * n];
        let dt = best_time(20, || {
            matmul_into(
                &mut c,
                false,
                MatRef::rows(&a, m, k),
                MatRef::rows(&b, k, n),
            );
        });
        println!(
            "{m} {k} {n} {:.1} GFLOP/s",
            2.0 * (m * k * n) as f64 / dt / 1e9
        );
    }
    // The Linear forward (bias included) of a block's four layers, at the token counts of a
    // batch of 64 and of 256 (CAN's encoder: 26 tokens per image).
    for m in [1664, 6656] {
        for (k, n) in [(192, 576), (192, 192), (192, 768), (768, 192)] {
            let x: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
            let w: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
            let b: Vec<f32> = (0..n).map(|i| (i % 3) as f32 * 0.1).collect();
            let dt = best_time(20, || {
                std::hint::black_box(linear(&x, &w, Some(&b), m, k, n));
            });
            println!(
                "linear forward {m} {k} {n}: {:.3} ms, {:.1} GFLOP/s",
                dt * 1e3,
                2.0 * (m * k * n) as f64 / dt / 1e9
            );
        }
    }
    // The Linear backward (dx and dw, plus db) of each of a block's four layers.
    for (k, n) in [(192, 576), (192, 192), (192, 768), (768, 192)] {
        let m = 1600;
        let x: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let w: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let dy: Vec<f32> = (0..m * n).map(|i| (i % 3) as f32 * 0.1).collect();
        let dt = best_time(20, || {
            std::hint::black_box(linear_backward(&x, &w, &dy, (m, k, n), [true, true, true]));
        });
        println!(
            "linear backward {m} {k} {n}: {:.3} ms, {:.1} GFLOP/s",
            dt * 1e3,
            4.0 * (m * k * n) as f64 / dt / 1e9
        );
    }
}
