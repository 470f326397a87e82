//! The plan interpreter and trainer: EMA update math (and no gradient into a teacher),
//! reproducibility per seed.

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use canc_runtime::backend::{Cpu, CpuTrain};
use canc_runtime::data;
use canc_runtime::exec::Program;
use canc_runtime::train::{RunOptions, Trainer, train};

mod common;
use common::flat;

fn small(spec: &str, extra: &[&str]) -> canc_compiler::Plan {
    let mut sets = vec![
        "data.limit=32",
        "train.batch=16",
        "train.epochs=2",
        "network.encoder.dim=32",
        "network.encoder.depth=1",
        "network.encoder.heads=2",
        "schedule.warmup=0 steps",
    ];
    sets.extend(extra);
    common::plan(spec, &sets)
}

/// Builds `plan` and trains it `steps` steps of 16 images; the program and each step's loss.
fn losses(plan: canc_compiler::Plan, steps: u64) -> (Program<CpuTrain>, Vec<f64>) {
    let ds = data::load(&plan.data, None).expect("Fashion-MNIST installed");
    let device = Default::default();
    let mut program = Program::<CpuTrain>::new(plan, &device).expect("builds");
    let opts = RunOptions::new(steps, 16);
    let logs = train(&mut program, &ds, &opts, &device).expect("trains");
    (program, logs.iter().map(|l| l.loss).collect())
}

#[test]
fn ema_teacher_follows_its_source_by_momentum_only() {
    // MoCo v3: teacher = EMA of encoder, momentum 0.99 at step 0 of the cosine schedule
    // (end − (end − m)·(cos 0 + 1)/2 = m).
    let plan = small(
        "mocov3",
        &["network.projector.hidden=64", "network.predictor.hidden=64"],
    );
    let ds = data::load(&plan.data, None).expect("Fashion-MNIST installed");
    let device = Default::default();
    let mut program = Program::<CpuTrain>::new(plan, &device).expect("builds");
    let (_, src, _) = program.teachers[0].clone();
    let teacher0 = flat::<Cpu, _>(&program.teachers[0].2);
    let source0 = flat::<Cpu, _>(&program.model.nets[src].valid());
    assert_eq!(
        teacher0, source0,
        "a teacher starts as a copy of its source"
    );
    let opts = RunOptions::new(4, 16);
    let mut trainer = Trainer::new(&program, &ds, &opts).expect("trainer");
    trainer.step(&mut program, &ds, 0, &device).expect("step");
    let source1 = flat::<Cpu, _>(&program.model.nets[src].valid());
    let teacher1 = flat::<Cpu, _>(&program.teachers[0].2);
    assert_ne!(source1, source0, "the optimizer moved the source");
    let mut worst = 0.0f32;
    for ((t0, s1), t1) in teacher0.iter().zip(&source1).zip(&teacher1) {
        let want = 0.99 * t0 + 0.01 * s1;
        worst = worst.max((want - t1).abs());
    }
    // Anything else touching the teacher (a gradient step) would break the identity.
    assert!(
        worst < 1e-6,
        "teacher differs from 0.99·t + 0.01·s by {worst}"
    );
}

#[test]
fn same_seed_same_losses_other_seed_other_losses() {
    let run = |seed: &str| losses(small("simclr", &[seed]), 3).1;
    let a = run("train.seed=7");
    let b = run("train.seed=7");
    let c = run("train.seed=8");
    assert_eq!(a, b, "same spec and seed must give the same losses");
    assert_ne!(a, c, "another seed must give other losses");
}

#[test]
fn accumulation_matches_one_big_batch_for_a_batch_independent_loss() {
    // MAE's loss is a mean over images, so 2 micro-batches of 8 with the loss halved give the
    // same gradient as one batch of 16 (up to float rounding): the losses of the next steps agree.
    let run = |accum: &str| {
        let plan = small(
            "mae",
            &[
                accum,
                "network.decoder.dim=32",
                "network.decoder.heads=2",
                "network.decoder.depth=1",
            ],
        );
        losses(plan, 3).1
    };
    let one = run("train.accum=1");
    let two = run("train.accum=2");
    for (x, y) in one.iter().zip(&two) {
        assert!(
            (x - y).abs() < 1e-3 * x.abs().max(1.0),
            "{one:?} vs {two:?}"
        );
    }
}

#[test]
fn each_image_is_computed_independently_of_the_rest_of_the_batch() {
    // Encoder, decoder and losses must not mix images: the first image's reconstruction loss
    // computed in a batch of 4 equals the one computed alone (same mask for it).
    use burn::tensor::{Int, TensorData};
    use canc_runtime::nn::Network;
    let plan = small(
        "mae",
        &[
            "network.decoder.dim=32",
            "network.decoder.heads=2",
            "network.decoder.depth=1",
        ],
    );
    let device = Default::default();
    let program = Program::<CpuTrain>::new(plan, &device).expect("builds");
    let enc = program.model.nets[program.index["encoder"]].clone();
    let dec = program.model.nets[program.index["decoder"]].clone();
    let (Network::Vit(enc), Network::Decoder(dec)) = (enc, dec) else {
        panic!("kinds")
    };
    // Deterministic pixels (no backend RNG: other tests seed it concurrently).
    let px: Vec<f32> = (0..4 * 28 * 28)
        .map(|i| ((i * 37 % 101) as f32) / 101.0)
        .collect();
    let x = Tensor::<CpuTrain, 4>::from_data(TensorData::new(px, [4, 1, 28, 28]), &device);
    let keep: Vec<i64> = (0..4)
        .flat_map(|i| (0..49).filter(move |j| (j + i) % 2 == 0).take(24))
        .collect();
    let keep = Tensor::<CpuTrain, 2, Int>::from_data(TensorData::new(keep, [4, 24]), &device);
    let all = dec.forward(
        enc.forward(x.clone(), Some(keep.clone())),
        Some(keep.clone()),
        None,
    );
    let one = dec.forward(
        enc.forward(x.slice(0..1), Some(keep.clone().slice(0..1))),
        Some(keep.slice(0..1)),
        None,
    );
    let diff = (all.slice(0..1) - one).abs().max().into_scalar();
    assert!(
        diff < 1e-4,
        "image 0 depends on the other images: max diff {diff}"
    );
}

#[test]
fn a_batch_split_in_two_gives_the_same_mean_loss() {
    // The plan's forward on 16 images equals the mean of its forward on the two halves, with
    // the same RNG stream (masks are drawn image by image) and the same per-image augmentation.
    let plan = small(
        "mae",
        &[
            "network.decoder.dim=32",
            "network.decoder.heads=2",
            "network.decoder.depth=1",
        ],
    );
    let ds = data::load(&plan.data, None).expect("data");
    let device = Default::default();
    let program = Program::<CpuTrain>::new(plan, &device).expect("builds");
    let views = canc_runtime::train::view_steps(&program.plan);
    let idx: Vec<usize> = (0..16).collect();
    let batch = |ix: &[usize]| {
        let b = data::make_batch(&ds, ix, &program.plan.views, &views, 0, 0, 0).expect("batch");
        canc_runtime::train::to_tensors::<CpuTrain>(b, &device)
    };
    let mut rng = canc_runtime::exec::step_rng(0, 0);
    let whole = program
        .forward(&batch(&idx), &mut rng)
        .expect("fwd")
        .total
        .into_scalar();
    let mut rng = canc_runtime::exec::step_rng(0, 0);
    let a = program
        .forward(&batch(&idx[..8]), &mut rng)
        .expect("fwd")
        .total
        .into_scalar();
    let b = program
        .forward(&batch(&idx[8..]), &mut rng)
        .expect("fwd")
        .total
        .into_scalar();
    assert!(
        (whole - (a + b) / 2.0).abs() < 1e-4,
        "whole {whole} vs halves {a}, {b}"
    );
}

#[test]
fn gradient_clipping_bounds_the_update() {
    // AdamW is invariant to the gradient's scale except through eps (1e-8): clipping the global
    // norm to 1e-12 makes every gradient element ≪ eps, so the first update is ~lr·g/eps ≈ 0,
    // while without clipping it is ~lr (m̂/√v̂ = ±1 at step 1).
    let moved = |extra: &[&str]| {
        let mut sets = vec![
            "optimizer.lr=1e-2",
            "optimizer.weight_decay=0.0",
            "optimizer.lr_scaling=none",
        ];
        sets.extend_from_slice(extra);
        let plan = small("mae", &sets);
        let ds = data::load(&plan.data, None).expect("data");
        let device = Default::default();
        let mut program = Program::<CpuTrain>::new(plan, &device).expect("builds");
        let before = flat::<CpuTrain, _>(&program.model);
        let opts = RunOptions::new(1, 16);
        train(&mut program, &ds, &opts, &device).expect("trains");
        let after = flat::<CpuTrain, _>(&program.model);
        before
            .iter()
            .zip(&after)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max)
    };
    let free = moved(&[]);
    let clipped = moved(&["optimizer.clip_grad=1e-12"]);
    assert!(
        free > 5e-3,
        "an unclipped step moves weights by about lr: {free}"
    );
    assert!(
        clipped < 1e-4,
        "a clipped step barely moves them: {clipped}"
    );
}

#[test]
fn weight_decay_skips_exactly_biases_norms_and_tokens() {
    // The compiler's split (`params.no_decay`) counts biases, norm weights, CLS/mask tokens and
    // position tables; the trainer's no-decay group must hold exactly those elements.
    for spec in ["can", "mae"] {
        let plan = small(spec, &["network.encoder.pos=learned"]);
        let want: u64 = plan.networks.iter().map(|n| n.params.no_decay).sum();
        let device = Default::default();
        let program = Program::<CpuTrain>::new(plan, &device).expect("builds");
        let ids = canc_runtime::exec::no_decay_ids::<CpuTrain, _>(&program.model);
        let named = canc_runtime::exec::named_params::<CpuTrain, _>(&program.model);
        let got: usize = named
            .iter()
            .filter(|(_, id, _)| ids.contains(id))
            .map(|(_, _, shape)| shape.iter().product::<usize>())
            .sum();
        assert_eq!(got as u64, want, "{spec}");
        assert!(
            named
                .iter()
                .any(|(n, _, _)| n.contains("blocks.0") && n.ends_with("weight")),
            "{spec}: paths name fields and indices: {:?}",
            named.iter().take(3).collect::<Vec<_>>()
        );
    }
}

/// Every parameter's gradient of `total`, flattened in visiting order (zeros where none).
fn grads_flat(program: &Program<CpuTrain>, total: Tensor<CpuTrain, 1>) -> Vec<f32> {
    struct G<'a>(
        &'a <CpuTrain as burn::tensor::backend::AutodiffBackend>::Gradients,
        Vec<f32>,
    );
    impl ModuleVisitor<CpuTrain> for G<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<CpuTrain, D>>) {
            match p.val().grad(self.0) {
                Some(g) => self
                    .1
                    .extend(g.into_data().convert::<f32>().to_vec::<f32>().expect("f32")),
                None => self
                    .1
                    .extend(std::iter::repeat_n(0.0, p.val().shape().num_elements())),
            }
        }
    }
    let grads = total.backward();
    let mut g = G(&grads, Vec::new());
    program.model.visit(&mut g);
    g.1
}

#[test]
fn batched_calls_compute_what_separate_calls_do() {
    // The compiler batches CAN's two encoder, decoder and projector calls (and MoCo v3's
    // encoder and teacher calls, but not its BatchNorm MLPs); run both ways on one batch and
    // one RNG stream, the losses and every gradient agree to float rounding.
    for (spec, groups) in [("can", 3), ("mocov3", 2)] {
        let plan = small(
            spec,
            &[
                "network.decoder.dim=32",
                "network.decoder.heads=2",
                "network.decoder.depth=1",
            ]
            .into_iter()
            .filter(|_| spec == "can")
            .collect::<Vec<_>>(),
        );
        let batched: std::collections::BTreeSet<u32> =
            plan.steps.iter().filter_map(|s| s.batch).collect();
        assert_eq!(batched.len(), groups, "{spec}: batch groups");
        let ds = data::load(&plan.data, None).expect("data");
        let device = Default::default();
        let mut program = Program::<CpuTrain>::new(plan, &device).expect("builds");
        let views = canc_runtime::train::view_steps(&program.plan);
        let idx: Vec<usize> = (0..16).collect();
        let batch = {
            let b =
                data::make_batch(&ds, &idx, &program.plan.views, &views, 0, 0, 0).expect("batch");
            canc_runtime::train::to_tensors::<CpuTrain>(b, &device)
        };
        let mut run = |on: bool| {
            program.batch_calls = on;
            let mut rng = canc_runtime::exec::step_rng(0, 3);
            let f = program.forward(&batch, &mut rng).expect("forward");
            let terms: Vec<f32> = f
                .terms
                .iter()
                .map(|(_, t)| t.clone().into_scalar())
                .collect();
            (terms, grads_flat(&program, f.total))
        };
        let (t1, g1) = run(true);
        let (t0, g0) = run(false);
        for (a, b) in t1.iter().zip(&t0) {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                "{spec}: loss {a} vs {b}"
            );
        }
        assert_eq!(g1.len(), g0.len());
        let scale = g0.iter().fold(0f32, |m, g| m.max(g.abs()));
        let worst = g1
            .iter()
            .zip(&g0)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(scale > 0.0, "{spec}: no gradient");
        assert!(
            worst <= 1e-4 * scale,
            "{spec}: gradients differ by {worst} (max |g| {scale})"
        );
    }
}

#[test]
fn add_noise_draws_sigma_times_a_standard_normal_per_image() {
    use canc_compiler::ir::Dist;
    let (images, per) = (64, 784);
    let draw = |seed: u64| {
        let mut rng = canc_runtime::exec::step_rng(seed, 0);
        canc_runtime::exec::draw_noise(images, per, &Dist::Uniform(0.01, 0.05), &mut rng)
    };
    let (sig, eps) = draw(7);
    assert_eq!((sig.len(), eps.len()), (images, images * per));
    assert!(sig.iter().all(|s| (0.01..0.05).contains(s)), "{sig:?}");
    assert_eq!(
        draw(7),
        (sig.clone(), eps.clone()),
        "same RNG stream, same draws"
    );
    assert_ne!(draw(8).1, eps, "another stream, other draws");
    // eps = noise / sigma, pooled over all images: N(0, 1) moments and the 1σ/2σ masses
    // (N = 50,176: standard errors 0.0045 for the mean, 0.0032 for the std, ≤ 0.0021 for the
    // masses; the bounds are about 4 of them).
    let z: Vec<f64> = eps
        .chunks(per)
        .zip(&sig)
        .flat_map(|(row, s)| row.iter().map(move |e| f64::from(*e) / f64::from(*s)))
        .collect();
    let n = z.len() as f64;
    let mean = z.iter().sum::<f64>() / n;
    let std = (z.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    let within = |k: f64| z.iter().filter(|v| v.abs() < k).count() as f64 / n;
    assert!(mean.abs() < 0.02, "mean {mean}");
    assert!((std - 1.0).abs() < 0.013, "std {std}");
    assert!(
        (within(1.0) - 0.6827).abs() < 0.009,
        "P(|z| < 1) = {}",
        within(1.0)
    );
    assert!(
        (within(2.0) - 0.9545).abs() < 0.005,
        "P(|z| < 2) = {}",
        within(2.0)
    );
    // A zero noise level gives exact zeros.
    let mut rng = canc_runtime::exec::step_rng(0, 0);
    let (_, zero) = canc_runtime::exec::draw_noise(2, 4, &Dist::Const(0.0), &mut rng);
    assert!(zero.iter().all(|v| *v == 0.0));
}
