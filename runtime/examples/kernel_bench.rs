//! Throughput of canc's fused CPU kernels (attention, LayerNorm, GELU; forward and backward)
//! on the CAN spec's encoder and decoder shapes (batch 64).
//!
//!     cargo run --release -p canc-runtime --example kernel_bench

use canc_runtime::ops::kernels::{
    AttnShape, attention, attention_backward, gelu, gelu_backward, layer_norm, layer_norm_backward,
};

#[path = "common/timing.rs"]
mod timing;
use timing::best_time;

/// Deterministic test values in [-0.5, 0.5).
fn fill(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + seed * 104729) % 1000) as f32 * 1e-3 - 0.5)
        .collect()
}

fn main() {
    for (name, rows, d) in [("encoder", 1600, 192), ("decoder", 3200, 128)] {
        let x = fill(rows * d, 1);
        let dy = fill(rows * d, 2);
        let gamma = fill(d, 3);
        let beta = fill(d, 4);
        let (_, mean, rstd) = layer_norm(&x, &gamma, Some(&beta), d, 1e-6);
        let f = best_time(10, || {
            std::hint::black_box(layer_norm(&x, &gamma, Some(&beta), d, 1e-6));
        });
        let bw = best_time(10, || {
            std::hint::black_box(layer_norm_backward(&x, &mean, &rstd, &gamma, &dy, d));
        });
        // Bytes read and written: x → y; x, dy → dx.
        let mb = (rows * d * 4) as f64 / 1e6;
        println!(
            "layer_norm {name} [{rows}, {d}]: forward {:.3} ms ({:.1} GB/s), backward {:.3} ms ({:.1} GB/s)",
            f * 1e3,
            2.0 * mb / f / 1e3,
            bw * 1e3,
            3.0 * mb / bw / 1e3
        );
        let h = fill(rows * 4 * d, 5);
        let g = fill(rows * 4 * d, 6);
        let f = best_time(10, || {
            std::hint::black_box(gelu(&h));
        });
        let bw = best_time(10, || {
            std::hint::black_box(gelu_backward(&h, &g));
        });
        println!(
            "gelu {name} [{rows}, {}]: forward {:.3} ms ({:.0} Melem/s), backward {:.3} ms ({:.0} Melem/s)",
            4 * d,
            f * 1e3,
            h.len() as f64 / f / 1e6,
            bw * 1e3,
            h.len() as f64 / bw / 1e6
        );
    }
    for (name, s) in [
        (
            "encoder",
            AttnShape {
                b: 64,
                t: 25,
                h: 3,
                dh: 64,
            },
        ),
        (
            "decoder",
            AttnShape {
                b: 64,
                t: 50,
                h: 4,
                dh: 32,
            },
        ),
    ] {
        let n = s.b * s.t * 3 * s.d();
        let qkv = fill(n, 7);
        let dout = fill(s.b * s.t * s.d(), 8);
        let (_, probs) = attention(&qkv, s);
        let f = best_time(10, || {
            std::hint::black_box(attention(&qkv, s));
        });
        let bw = best_time(10, || {
            std::hint::black_box(attention_backward(&qkv, &probs, &dout, s));
        });
        // q·kᵀ and p·v: 2 products of t·t·dh multiply-adds per head; backward 4.
        let flop = 2.0 * (2 * s.b * s.h * s.t * s.t * s.dh) as f64;
        println!(
            "attention {name} {s:?}: forward {:.2} ms ({:.1} GFLOP/s), backward {:.2} ms ({:.1} GFLOP/s)",
            f * 1e3,
            flop / f / 1e9,
            bw * 1e3,
            2.0 * flop / bw / 1e9
        );
    }
}
