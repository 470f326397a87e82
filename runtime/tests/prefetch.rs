//! The background batch producer (runtime/src/data/prefetch.rs): the same batches as the
//! inline path, prompt shutdown when the consumer stops, errors in order.
//!
//! Expected batches are built here the way `Trainer::step` builds them: the epoch's
//! `epoch_order`, the step's slice of it, `accum` chunks, `make_batch` on each.

use std::time::{Duration, Instant};

use canc_compiler::plan::Plan;
use canc_runtime::data::prefetch::{BatchPlan, StepBatches, prefetch};
use canc_runtime::data::{Batch, DataError, Dataset, epoch_order, make_batch};

/// The CAN spec's plan (two `simclr` views of 28×28 grey images), with `extra` overrides.
fn can_plan(extra: &[&str]) -> Plan {
    let overrides: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let res = canc_compiler::resolve_path("../specs/can.canspec".as_ref(), &overrides);
    assert!(
        !res.has_errors(),
        "{:?}",
        res.diagnostics
            .iter()
            .map(|d| d.message.clone())
            .collect::<Vec<_>>()
    );
    res.plans[0].clone()
}

/// `n` pseudo-random 28×28 grey images labelled `i % 10`; only the first `stored` have pixels
/// (the rest are out of range for `Dataset::image`, so batches touching them fail).
fn dataset(n: usize, stored: usize) -> Dataset {
    let mut x: u64 = 0x9E37_79B9;
    let images = (0..stored * 28 * 28)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (x >> 56) as u8
        })
        .collect();
    Dataset {
        images,
        labels: (0..n as u32).map(|i| i % 10).collect(),
        n,
        channels: 1,
        size: 28,
        classes: 10,
        class_names: (0..10).map(|c| c.to_string()).collect(),
    }
}

/// Step `step`'s micro-batches, built as the trainer builds them inline.
fn reference(ds: &Dataset, p: &BatchPlan, step: u64) -> Vec<Batch> {
    let epoch = step / p.per_epoch;
    let within = (step % p.per_epoch) as usize;
    let order = epoch_order(ds.n, p.seed, epoch);
    order[within * p.batch..(within + 1) * p.batch]
        .chunks(p.batch / p.accum)
        .map(|c| make_batch(ds, c, &p.views, &p.view_steps, p.seed, epoch, step).unwrap())
        .collect()
}

/// Every item of `steps` at `depth`, with the waits.
fn collect(
    ds: &Dataset,
    p: &BatchPlan,
    steps: std::ops::Range<u64>,
    depth: usize,
) -> Vec<Result<StepBatches, DataError>> {
    let usable = p.check(ds).is_ok();
    prefetch(ds, p, steps, depth, |it| {
        // No thread for depth 0, nor for a plan that fails its check.
        assert_eq!(it.is_background(), usable && depth > 0);
        let mut out = Vec::new();
        let mut waits = 0.0;
        while let Some((item, wait)) = it.next_timed() {
            assert!(wait >= 0.0);
            waits += wait;
            out.push(item);
        }
        assert!((it.total_wait() - waits).abs() < 1e-9);
        out
    })
}

#[test]
fn from_plan_takes_seed_views_and_view_steps() {
    let plan = can_plan(&["train.seed=7"]);
    let p = BatchPlan::from_plan(&plan, 16, 2, 3);
    assert_eq!(p.seed, 7);
    assert_eq!((p.batch, p.accum, p.per_epoch), (16, 2, 3));
    assert_eq!(p.views.len(), 1);
    assert_eq!(p.views[0].name, "simclr");
    assert_eq!(
        p.view_steps,
        vec![
            ("x1".to_string(), "simclr".to_string(), None),
            ("x2".to_string(), "simclr".to_string(), None),
        ]
    );
    assert_eq!(BatchPlan::from_plan(&can_plan(&[]), 16, 1, 3).seed, 0);
}

#[test]
fn prefetched_batches_equal_the_inline_ones() {
    let ds = dataset(40, 40);
    let p = BatchPlan::from_plan(&can_plan(&["train.seed=3"]), 16, 2, 2);
    // Steps 1..6 cross the epoch boundaries at steps 2 and 4; each epoch uses 32 of 40 images.
    let expected: Vec<Vec<Batch>> = (1..6).map(|s| reference(&ds, &p, s)).collect();
    for depth in [0, 1, 3] {
        let got = collect(&ds, &p, 1..6, depth);
        assert_eq!(got.len(), 5, "depth {depth}");
        for (k, item) in got.into_iter().enumerate() {
            let sb = item.unwrap();
            let step = k as u64 + 1;
            assert_eq!((sb.step, sb.epoch), (step, step / 2), "depth {depth}");
            assert_eq!(sb.micro.len(), 2);
            for b in &sb.micro {
                assert_eq!(b.labels.len(), 8);
                assert_eq!(b.views.len(), 2);
                assert_eq!((b.views[0].2, b.views[0].3), (1, 28));
                assert_eq!(b.views[0].1.len(), 8 * 28 * 28);
            }
            assert!(sb.micro == expected[k], "depth {depth}, step {step}");
            assert_eq!(p.step(&ds, step).unwrap(), sb);
        }
    }
    // The comparison can fail: different steps (and the two micro-batches) differ.
    assert_ne!(expected[0][0], expected[0][1]);
    assert_ne!(expected[0], expected[1]);
    // The two views of one image differ (independent augmentations).
    assert_ne!(expected[0][0].views[0].1, expected[0][0].views[1].1);
}

#[test]
fn an_empty_range_yields_nothing() {
    let ds = dataset(40, 40);
    let p = BatchPlan::from_plan(&can_plan(&[]), 8, 1, 5);
    assert!(collect(&ds, &p, 3..3, 2).is_empty());
    assert!(collect(&ds, &p, 3..3, 0).is_empty());
}

#[test]
fn a_data_error_arrives_in_order_and_ends_the_stream() {
    // 64 images declared, only 40 stored: the first step whose batch touches an index >= 40 fails.
    let ds = dataset(64, 40);
    let p = BatchPlan::from_plan(&can_plan(&[]), 4, 2, 16);
    let order = epoch_order(64, p.seed, 0);
    let bad = (0..16u64)
        .find(|&s| {
            order[s as usize * 4..s as usize * 4 + 4]
                .iter()
                .any(|&i| i >= 40)
        })
        .expect("some step of epoch 0 touches a missing image");
    for depth in [0, 2] {
        let got = collect(&ds, &p, 0..16, depth);
        assert_eq!(got.len() as u64, bad + 1, "depth {depth}");
        for (s, item) in got.iter().enumerate() {
            match item {
                Ok(sb) => {
                    assert!((s as u64) < bad);
                    assert_eq!(sb.step, s as u64);
                }
                Err(e) => {
                    assert_eq!(s as u64, bad);
                    assert!(e.to_string().contains("out of range"), "{e}");
                }
            }
        }
    }
}

#[test]
fn an_unusable_plan_is_the_first_item() {
    let ds = dataset(40, 40);
    let plan = can_plan(&[]);
    for (batch, accum, per_epoch, needle) in [
        (16, 3, 2, "micro-batches"),
        (16, 0, 2, "micro-batches"),
        (16, 1, 3, "need 48 images"),
        (16, 1, 0, "steps per epoch"),
    ] {
        let p = BatchPlan::from_plan(&plan, batch, accum, per_epoch);
        for depth in [0, 2] {
            let got = collect(&ds, &p, 0..4, depth);
            assert_eq!(got.len(), 1);
            let e = got[0].as_ref().unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        assert!(p.step(&ds, 0).is_err());
    }
}

#[test]
fn the_producer_stops_when_the_consumer_does() {
    let ds = dataset(512, 512);
    let p = BatchPlan::from_plan(&can_plan(&[]), 64, 1, 8);
    // Ten million steps would take hours: returning at all shows the producer stopped.
    let t = Instant::now();
    let firsts = prefetch(&ds, &p, 0..10_000_000, 2, |it| {
        let a = it.next().unwrap().unwrap().step;
        let b = it.next().unwrap().unwrap().step;
        // Let the producer fill the queue and block on it.
        std::thread::sleep(Duration::from_millis(200));
        (a, b)
    });
    assert_eq!(firsts, (0, 1));
    // Nothing consumed at all.
    prefetch(&ds, &p, 0..10_000_000, 4, |_| ());
    // The consumer panics: the panic propagates, the producer still ends.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        prefetch(&ds, &p, 0..10_000_000, 2, |it| {
            let _ = it.next();
            panic!("consumer failed");
        })
    }));
    assert!(r.is_err());
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn a_slow_consumer_does_not_wait_for_data() {
    let ds = dataset(256, 256);
    let p = BatchPlan::from_plan(&can_plan(&[]), 16, 1, 16);
    let step = Duration::from_millis(100);
    let waits = prefetch(&ds, &p, 0..6, 2, |it| {
        let mut waits = Vec::new();
        while let Some((item, wait)) = it.next_timed() {
            item.unwrap();
            waits.push(wait);
            std::thread::sleep(step);
        }
        waits
    });
    assert_eq!(waits.len(), 6);
    // Building 16 small images takes milliseconds; after the first step the queue is full
    // whenever the consumer comes back (generous bound for a loaded machine).
    let later: f64 = waits[1..].iter().sum();
    assert!(
        later < 0.5 * 5.0 * step.as_secs_f64(),
        "waited {later:.3} s over 5 steps: {waits:?}"
    );
}
