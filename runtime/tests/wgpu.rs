//! The GPU code paths on a real CubeCL backend, without a GPU: Burn's wgpu backend on whatever
//! Vulkan adapter the machine has (in CI, Mesa's lavapipe, which runs CubeCL's kernels on the
//! CPU). Training on it takes the GPUs' defaults — AdamW over flat parameter groups laid out
//! with `slice_assign`, closed-form backward steps for LayerNorm, attention and GELU, each
//! network called once for both views — the same code CUDA runs, and must give the CPU
//! backend's losses and weights. Needs the `wgpu` feature; without an adapter the tests say so
//! and pass, unless `CANC_REQUIRE_WGPU=1` (set by CI) makes that a failure.
#![cfg(feature = "wgpu")]

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};
use canc_runtime::backend::{CpuTrain, WgpuTrain, wgpu_adapters};
use canc_runtime::checkpoint::{self, Checkpoint};
use canc_runtime::data;
use canc_runtime::exec::Program;
use canc_runtime::train::{self, Outcome, RunOptions, Trainer};

mod common;
use common::{fill, flat, small, values};

/// Burn's device for the first adapter, or `None` (after saying so) when there is none.
fn device() -> Option<burn::backend::wgpu::WgpuDevice> {
    let adapters = wgpu_adapters();
    match adapters.first() {
        Some(a) => {
            eprintln!("wgpu adapter: {} ({:?})", a.name, a.kind);
            Some(a.device())
        }
        None => {
            assert_ne!(
                std::env::var("CANC_REQUIRE_WGPU").as_deref(),
                Ok("1"),
                "CANC_REQUIRE_WGPU=1 but wgpu sees no adapter (install mesa-vulkan-drivers)"
            );
            eprintln!("no wgpu adapter on this machine: skipped");
            None
        }
    }
}

/// Losses of `steps` training steps of `plan` on backend `B`, from the initial weights of the
/// checkpoint `init`, and the weights after them.
fn train<B: AutodiffBackend>(
    plan: &canc_compiler::Plan,
    init: &Checkpoint,
    device: &B::Device,
    steps: u64,
) -> (Vec<f64>, Vec<f32>, String, usize) {
    let ds = data::load(&plan.data, None).expect("Fashion-MNIST installed");
    let mut p = Program::<B>::new(plan.clone(), device).expect("builds");
    init.restore_networks(&mut p)
        .expect("loads the initial weights");
    let o = RunOptions::new(steps, 16);
    let mut t = Trainer::new(&p, &ds, &o).expect("trainer");
    let optimizer = t.optimizer().to_string();
    let run = train::run(&mut t, &mut p, &ds, &o, device, &mut train::Quiet).expect("runs");
    assert_eq!(run.outcome, Outcome::Finished);
    let losses = run.logs.iter().map(|l| l.loss).collect();
    (losses, flat(&p.model), optimizer, p.network_calls())
}

/// Trains `spec` for 4 steps on the CPU (its defaults: per-tensor AdamW, fused CPU kernels, a
/// call per view) and on wgpu (the GPUs' defaults: flat AdamW, closed-form backward steps,
/// batched calls), from the same initial weights, and compares.
fn same_as_cpu(spec: &str) {
    let Some((gpu, plan, _tmp, init)) = setup(spec) else {
        return;
    };
    let (cpu_loss, cpu_w, cpu_opt, cpu_calls) =
        train::<CpuTrain>(&plan, &init, &Default::default(), 4);
    let (gpu_loss, gpu_w, gpu_opt, gpu_calls) = train::<WgpuTrain>(&plan, &init, &gpu, 4);
    // The GPU paths really ran: the flat optimizer and (where the spec allows) batched calls.
    assert_eq!(cpu_opt, "adamw (per tensor)");
    assert!(gpu_opt.contains("flat"), "{spec}: wgpu ran `{gpu_opt}`");
    assert!(gpu_calls <= cpu_calls, "{spec}: {gpu_calls} > {cpu_calls}");
    for (i, (c, g)) in cpu_loss.iter().zip(&gpu_loss).enumerate() {
        assert!(
            c.is_finite() && g.is_finite(),
            "{spec}: step {i}: {c} vs {g}"
        );
        assert!(
            (c - g).abs() <= 2e-5 * c.abs().max(1.0),
            "{spec}: step {i} loss: CPU {c}, wgpu {g}\nCPU  {cpu_loss:?}\nwgpu {gpu_loss:?}"
        );
    }
    assert_eq!(cpu_w.len(), gpu_w.len());
    // Four AdamW steps move each weight by at most 4·lr; the backends' f32 sums differ in
    // order, so compare the weights to a fraction of that.
    let worst = cpu_w
        .iter()
        .zip(&gpu_w)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let loss_gap = cpu_loss
        .iter()
        .zip(&gpu_loss)
        .map(|(c, g)| (c - g).abs())
        .fold(0f64, f64::max);
    eprintln!("{spec}: losses within {loss_gap:.2e}, weights within {worst:.2e}");
    assert!(worst < 1e-4, "{spec}: weights differ by up to {worst}");
}

/// The loss terms of one forward pass of `plan` on the first 16 training images and each
/// parameter's gradient (empty where none), from the initial weights of `init`.
fn one_step<B: AutodiffBackend>(
    plan: &canc_compiler::Plan,
    init: &Checkpoint,
    device: &B::Device,
) -> (Vec<f32>, Vec<(String, Vec<f32>)>) {
    struct G<'a, B: AutodiffBackend>(&'a B::Gradients, Vec<(String, Vec<f32>)>);
    impl<B: AutodiffBackend> ModuleVisitor<B> for G<'_, B> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            let g = p.val().grad(self.0).map(|g| {
                let d = g.into_data().convert::<f32>();
                d.to_vec::<f32>().expect("f32")
            });
            self.1
                .push((format!("{:?}", p.val().dims()), g.unwrap_or_default()));
        }
    }
    let ds = data::load(&plan.data, None).expect("Fashion-MNIST installed");
    let mut program = Program::<B>::new(plan.clone(), device).expect("builds");
    init.restore_networks(&mut program)
        .expect("loads the initial weights");
    let views = train::view_steps(&program.plan);
    let idx: Vec<usize> = (0..16).collect();
    let b = data::make_batch(&ds, &idx, &program.plan.views, &views, 0, 0, 0).expect("batch");
    let batch = train::to_tensors::<B>(b, device);
    let mut rng = canc_runtime::exec::step_rng(0, 0);
    let f = program.forward(&batch, &mut rng).expect("forward");
    let terms = f
        .terms
        .iter()
        .map(|(_, t)| t.clone().into_scalar().elem())
        .collect();
    let grads = f.total.backward();
    let mut g = G::<B>(&grads, Vec::new());
    program.model.visit(&mut g);
    (terms, g.1)
}

/// What a CPU-vs-wgpu comparison of `spec` starts from: the wgpu device (`None` without an
/// adapter), the small plan, and the CPU's initial weights as a checkpoint in a temporary
/// directory (kept alive by the caller). Each backend draws its own initial weights from the
/// seed, so both start from the CPU's, through a checkpoint written by the CPU backend and read
/// by wgpu's, as a user would. Debug builds leave the fused ops off (see `fused_enabled`); the
/// GPUs' closed-form backward steps and canc's CubeCL kernels are among them, so they are
/// turned on.
fn setup(
    spec: &str,
) -> Option<(
    burn::backend::wgpu::WgpuDevice,
    canc_compiler::Plan,
    tempfile::TempDir,
    Checkpoint,
)> {
    let gpu = device()?;
    canc_runtime::ops::set_fused(Some(true));
    let plan = small(spec);
    let tmp = tempfile::tempdir().expect("tempdir");
    let init = initial_weights(&plan, tmp.path());
    Some((gpu, plan, tmp, init))
}

/// `spec`'s initial weights (the CPU backend's draw) as a checkpoint in `dir`.
fn initial_weights(plan: &canc_compiler::Plan, dir: &std::path::Path) -> Checkpoint {
    let p = Program::<CpuTrain>::new(plan.clone(), &Default::default()).expect("builds");
    let files = checkpoint::encode(&p, ()).expect("encodes");
    let dir = checkpoint::save(dir, 0, 1, "k", None, files, 1).expect("saves");
    Checkpoint::read(&dir).expect("reads")
}

/// One forward and backward pass of `spec` on the CPU and on wgpu from the same weights, batch
/// and RNG stream: every loss term and every parameter's gradient agree to float rounding.
fn gradients_match_the_cpu(spec: &str) {
    let Some((gpu, plan, _tmp, init)) = setup(spec) else {
        return;
    };
    let (cpu_terms, cpu_g) = one_step::<CpuTrain>(&plan, &init, &Default::default());
    let (gpu_terms, gpu_g) = one_step::<WgpuTrain>(&plan, &init, &gpu);
    for (c, g) in cpu_terms.iter().zip(&gpu_terms) {
        assert!(
            (c - g).abs() <= 1e-5 * c.abs().max(1.0),
            "{spec}: loss term {c} vs {g}"
        );
    }
    assert_eq!(cpu_g.len(), gpu_g.len());
    // Per tensor, the difference relative to the tensor's gradient norm, floored at 1% of
    // the largest: a gradient that cancels to almost nothing (a bias in front of a
    // normalisation) is all rounding on both sides.
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let floor = 1e-2 * cpu_g.iter().map(|(_, c)| norm(c)).fold(0f64, f64::max);
    let mut worst = (0f64, String::new());
    for (i, ((shape, c), (_, g))) in cpu_g.iter().zip(&gpu_g).enumerate() {
        assert_eq!(
            c.len(),
            g.len(),
            "{spec}: parameter {i} {shape}: gradient on one side only"
        );
        let diff: Vec<f32> = c.iter().zip(g).map(|(a, b)| a - b).collect();
        let rel = norm(&diff) / norm(c).max(floor);
        if rel > worst.0 {
            worst = (rel, format!("parameter {i} {shape}"));
        }
    }
    eprintln!(
        "{spec}: gradients within {:.2e} relative ({})",
        worst.0, worst.1
    );
    assert!(
        worst.0 < 1e-4,
        "{spec}: {} gradient differs by {:.2e} relative",
        worst.1,
        worst.0
    );
}

#[test]
fn can_gradients_on_wgpu_match_the_cpu() {
    gradients_match_the_cpu("can");
}

#[test]
fn mocov3_gradients_on_wgpu_match_the_cpu() {
    gradients_match_the_cpu("mocov3");
}

#[test]
fn can_trains_on_wgpu_as_on_the_cpu() {
    same_as_cpu("can");
}

#[test]
fn mocov3_trains_on_wgpu_as_on_the_cpu() {
    // EMA teacher, BatchNorm in the projector and predictor.
    same_as_cpu("mocov3");
}

#[test]
fn mae_trains_on_wgpu_as_on_the_cpu() {
    same_as_cpu("mae");
}

/// Asserts `a` and `b` agree within `tol` (absolute, or relative where larger than 1).
fn assert_close(what: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * x.abs().max(1.0),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

/// canc's own CubeCL kernels (`ops::cube`), each against the same function on the CPU backend:
/// Burn's composed ops forward and Burn's autodiff of them backward. Odd sizes (37 rows of 19),
/// scores up to 80 (the softmax must subtract its row maximum).
#[test]
fn cube_kernels_match_burns_ops_on_the_cpu() {
    use burn::tensor::TensorData;
    use canc_runtime::backend::{Cpu, Wgpu};
    use canc_runtime::ops::{cube, reference};
    let Some(gpu) = device() else { return };
    let cpu = Default::default();
    let (rows, d) = (37, 19);
    let (x, g, b, dy) = (
        fill(rows * d, 1, 2.0),
        fill(d, 2, 2.0),
        fill(d, 3, 2.0),
        fill(rows * d, 4, 2.0),
    );
    let on_gpu = |v: &[f32], shape: [usize; 2]| {
        Tensor::<Wgpu, 2>::from_data(TensorData::new(v.to_vec(), shape), &gpu)
    };
    let on_gpu1 =
        |v: &[f32]| Tensor::<Wgpu, 1>::from_data(TensorData::new(v.to_vec(), [v.len()]), &gpu);
    let on_cpu = |v: &[f32], shape: [usize; 2]| {
        Tensor::<CpuTrain, 2>::from_data(TensorData::new(v.to_vec(), shape), &cpu)
    };
    let on_cpu1 =
        |v: &[f32]| Tensor::<CpuTrain, 1>::from_data(TensorData::new(v.to_vec(), [v.len()]), &cpu);

    // LayerNorm forward and backward.
    let (y, xhat, rstd) =
        cube::layer_norm(&on_gpu(&x, [rows, d]), &on_gpu1(&g), &on_gpu1(&b), 1e-5)
            .expect("the kernels run on wgpu");
    let (xc, gc, bc) = (
        on_cpu(&x, [rows, d]).require_grad(),
        on_cpu1(&g).require_grad(),
        on_cpu1(&b).require_grad(),
    );
    let yc = reference::layer_norm(xc.clone(), gc.clone(), Some(bc.clone()), 1e-5);
    assert_close(
        "layer_norm y",
        &values(y),
        &values(yc.clone().inner()),
        1e-5,
    );
    let xhat_c = reference::layer_norm(
        xc.clone().inner(),
        Tensor::<Cpu, 1>::ones([d], &cpu),
        None,
        1e-5,
    );
    assert_close("layer_norm x̂", &values(xhat.clone()), &values(xhat_c), 1e-5);
    let grads = (yc * on_cpu(&dy, [rows, d])).sum().backward();
    let (dx, sums) = cube::layer_norm_dx(&on_gpu(&dy, [rows, d]), &xhat, &rstd, &on_gpu1(&g))
        .expect("the kernels run on wgpu");
    assert_close(
        "layer_norm dx",
        &values(dx),
        &values(xc.grad(&grads).expect("dx")),
        1e-4,
    );
    let both = sums.sum_dim(0).reshape([2 * d]);
    assert_close(
        "layer_norm dγ",
        &values(both.clone().narrow(0, 0, d)),
        &values(gc.grad(&grads).expect("dγ")),
        1e-4,
    );
    assert_close(
        "layer_norm dβ",
        &values(both.narrow(0, d, d)),
        &values(bc.grad(&grads).expect("dβ")),
        1e-4,
    );

    // GELU forward and backward.
    let n = rows * d;
    let (y, phi) = cube::gelu(&on_gpu1(&x)).expect("the kernels run on wgpu");
    let xc = on_cpu1(&x).require_grad();
    let yc = reference::gelu(xc.clone());
    assert_close("gelu y", &values(y), &values(yc.clone().inner()), 1e-5);
    let grads = (yc * on_cpu1(&dy)).sum().backward();
    let dx = cube::gelu_dx(&on_gpu1(&dy), &on_gpu1(&x), &phi).expect("the kernels run on wgpu");
    assert_close(
        "gelu dx",
        &values(dx),
        &values(xc.grad(&grads).expect("dx")),
        1e-5,
    );
    assert_eq!(n, x.len());

    // Scaled softmax over the last dimension, of a [2, 3, 5, 7] score tensor.
    let s: Vec<f32> = fill(2 * 3 * 5 * 7, 5, 2.0)
        .iter()
        .map(|v| v * 40.0)
        .collect();
    let st = TensorData::new(s, [2, 3, 5, 7]);
    let st_copy = st.clone();
    let p = cube::softmax(&Tensor::<Wgpu, 4>::from_data(st.clone(), &gpu), 0.5)
        .expect("the kernels run on wgpu");
    let pc =
        burn::tensor::activation::softmax(Tensor::<Cpu, 4>::from_data(st, &cpu).mul_scalar(0.5), 3);
    assert_close("softmax", &values(p.clone()), &values(pc), 1e-5);

    // Its backward step, against Burn's autodiff of softmax(s·scale) for a gradient dp.
    let dp = fill(2 * 3 * 5 * 7, 6, 2.0);
    let sc = Tensor::<CpuTrain, 4>::from_data(st_copy.clone(), &cpu).require_grad();
    let pc = burn::tensor::activation::softmax(sc.clone().mul_scalar(0.5), 3);
    let dpt = TensorData::new(dp, [2, 3, 5, 7]);
    let grads = (pc * Tensor::<CpuTrain, 4>::from_data(dpt.clone(), &cpu))
        .sum()
        .backward();
    let ds = cube::softmax_dx(&p, &Tensor::<Wgpu, 4>::from_data(dpt, &gpu), 0.5)
        .expect("the kernels run on wgpu");
    assert_close(
        "softmax dx",
        &values(ds),
        &values(sc.grad(&grads).expect("ds")),
        1e-5,
    );

    // Heads: [B, T, 3·H·dh] -> [3, B, H, T, dh], as Burn's reshape and permute on the CPU,
    // and packed back.
    let (bt, t, h, dh) = (2, 5, 3, 4);
    let qkv = fill(bt * t * 3 * h * dh, 7, 2.0);
    let qd = TensorData::new(qkv.clone(), [bt, t, 3 * h * dh]);
    let parts = cube::split_heads(&Tensor::<Wgpu, 3>::from_data(qd.clone(), &gpu), 3, h)
        .expect("the kernels run on wgpu");
    let parts_c = Tensor::<Cpu, 3>::from_data(qd, &cpu)
        .reshape([bt, t, 3, h, dh])
        .permute([2, 0, 3, 1, 4]);
    assert_close("split_heads", &values(parts.clone()), &values(parts_c), 0.0);
    let part = |i: usize| parts.clone().narrow(0, i, 1).reshape([bt, h, t, dh]);
    let packed = cube::pack_heads(&part(0), &part(1), &part(2)).expect("the kernels run on wgpu");
    assert_close("pack_heads", &values(packed), &qkv, 0.0);

    // Eleven pieces end to end with zero padding (two launches, the second with empty slots).
    let lens = [3, 1, 128, 130, 7, 0, 256, 5, 9, 64, 2];
    let pads: Vec<usize> = lens
        .iter()
        .map(|&n: &usize| n.div_ceil(128).max(1) * 128)
        .collect();
    let mut want = Vec::new();
    let pieces: Vec<Tensor<Wgpu, 1>> = lens
        .iter()
        .zip(&pads)
        .enumerate()
        .map(|(i, (&n, &p))| {
            let v = fill(n, 10 + i as u64, 2.0);
            want.extend(&v);
            want.resize(want.len() + p - n, 0.0);
            Tensor::from_data(TensorData::new(v, [n]), &gpu)
        })
        .collect();
    let flat = cube::lay_end_to_end(&pieces, &pads, want.len()).expect("the kernels run on wgpu");
    assert_close("lay_end_to_end", &values(flat), &want, 0.0);

    // The EMA step of six tensors (two launches, the second with empty slots).
    let sizes = [5, 300, 1, 64, 17, 2];
    let (mut ts, mut ss, mut want) = (Vec::new(), Vec::new(), Vec::new());
    for (i, &n) in sizes.iter().enumerate() {
        let (t, s) = (fill(n, 30 + i as u64, 2.0), fill(n, 40 + i as u64, 2.0));
        let tc = Tensor::<Cpu, 1>::from_data(TensorData::new(t.clone(), [n]), &cpu);
        let sc = Tensor::<Cpu, 1>::from_data(TensorData::new(s.clone(), [n]), &cpu);
        want.push(values(reference::ema(tc, sc, 0.996)));
        ts.push(Tensor::<Wgpu, 1>::from_data(TensorData::new(t, [n]), &gpu));
        ss.push(Tensor::<Wgpu, 1>::from_data(TensorData::new(s, [n]), &gpu));
    }
    let got = cube::ema_many(&ts, &ss, 0.996).expect("the kernels run on wgpu");
    assert_eq!(got.len(), sizes.len());
    for (i, (g, w)) in got.into_iter().zip(&want).enumerate() {
        assert_close(&format!("ema tensor {i}"), &values(g), w, 1e-6);
    }

    // One AdamW step of a flat group, with and without weight decay, against Burn's ops.
    use canc_runtime::ops::inplace::AdamWStep;
    let n = 301;
    let (p, g) = (fill(n, 90, 2.0), fill(n, 91, 2.0));
    let (m1, m2): (Vec<f32>, Vec<f32>) = (
        fill(n, 92, 0.5),
        fill(n, 93, 0.5).iter().map(|v| v * v).collect(),
    );
    for wd in [0.0, 0.05] {
        let s = AdamWStep::new((0.9, 0.95, 1e-8, wd), 1e-3, 7);
        let on_cpu =
            |v: &[f32]| Tensor::<Cpu, 1>::from_data(TensorData::new(v.to_vec(), [n]), &cpu);
        let (pw, m1w, m2w) =
            reference::adamw(on_cpu(&p), on_cpu(&g), Some((on_cpu(&m1), on_cpu(&m2))), &s);
        let [pg, m1g, m2g] = cube::adamw(
            [&on_gpu1(&p), &on_gpu1(&g), &on_gpu1(&m1), &on_gpu1(&m2)],
            &s,
        )
        .expect("the kernels run on wgpu");
        assert_close(
            &format!("adamw weights (decay {wd})"),
            &values(pg),
            &values(pw),
            1e-6,
        );
        assert_close("adamw first moment", &values(m1g), &values(m1w), 1e-6);
        assert_close("adamw second moment", &values(m2g), &values(m2w), 1e-6);
    }
}

/// BatchNorm in training (batch statistics, running ones moved), with and without its affine
/// and a ReLU after it: on wgpu through canc's kernels (`ops::batch_norm_train`, under
/// autodiff and without), against Burn's composed ops on the CPU: outputs, running statistics
/// and the gradients of `x`, `γ` and `β`. A batch of 37 (not a multiple of the kernel's row
/// groups) and 45 features (two cubes of 32 columns, the second part empty).
#[test]
fn batch_norm_kernels_match_burns_ops_on_the_cpu() {
    use burn::module::{Param, RunningState};
    use burn::tensor::TensorData;
    use canc_runtime::backend::Wgpu;
    use canc_runtime::nn::BatchNorm1d;
    let Some(gpu) = device() else { return };
    canc_runtime::ops::set_fused(Some(true));
    let cpu = Default::default();
    let (n, c) = (37, 45);
    let (x, dy) = (fill(n * c, 50, 2.0), fill(n * c, 51, 2.0));
    let (g, b) = (fill(c, 52, 2.0), fill(c, 53, 0.5));
    let (rm, rv): (Vec<f32>, Vec<f32>) = (
        fill(c, 54, 1.0),
        fill(c, 55, 0.5).iter().map(|v| v + 1.0).collect(),
    );
    fn bn<Bk: burn::tensor::backend::Backend>(
        affine: bool,
        [g, b, rm, rv]: [&[f32]; 4],
        dev: &Bk::Device,
    ) -> BatchNorm1d<Bk> {
        let t = |v: &[f32]| Tensor::<Bk, 1>::from_data(TensorData::new(v.to_vec(), [v.len()]), dev);
        let mut m = BatchNorm1d::new(g.len(), affine, dev);
        if affine {
            m.gamma = Some(Param::from_tensor(t(g)));
            m.beta = Some(Param::from_tensor(t(b)));
        }
        m.running_mean = RunningState::new(t(rm));
        m.running_var = RunningState::new(t(rv));
        m
    }
    let stats = [&g[..], &b, &rm, &rv];
    for affine in [true, false] {
        for relu in [true, false] {
            let case = format!("affine {affine}, relu {relu}");
            let (bc, bg) = (
                bn::<CpuTrain>(affine, stats, &cpu),
                bn::<WgpuTrain>(affine, stats, &gpu),
            );
            let xc = Tensor::<CpuTrain, 2>::from_data(TensorData::new(x.clone(), [n, c]), &cpu)
                .require_grad();
            let xg = Tensor::<WgpuTrain, 2>::from_data(TensorData::new(x.clone(), [n, c]), &gpu)
                .require_grad();
            let (yc, yg) = (
                bc.forward_act(xc.clone(), true, relu),
                bg.forward_act(xg.clone(), true, relu),
            );
            let want_y = values(yc.clone());
            assert_close(&format!("y ({case})"), &values(yg.clone()), &want_y, 1e-5);
            for (what, a, w) in [
                (
                    "running mean",
                    bg.running_mean.value(),
                    bc.running_mean.value(),
                ),
                (
                    "running var",
                    bg.running_var.value(),
                    bc.running_var.value(),
                ),
            ] {
                assert_close(&format!("{what} ({case})"), &values(a), &values(w), 1e-5);
            }
            let gc = (yc * Tensor::from_data(TensorData::new(dy.clone(), [n, c]), &cpu))
                .sum()
                .backward();
            let gg = (yg * Tensor::from_data(TensorData::new(dy.clone(), [n, c]), &gpu))
                .sum()
                .backward();
            let grad = |t: &Tensor<WgpuTrain, 2>| values(t.grad(&gg).expect("dx on wgpu"));
            let want = values(xc.grad(&gc).expect("dx on the cpu"));
            assert_close(&format!("dx ({case})"), &grad(&xg), &want, 1e-4);
            if affine {
                for (what, pg, pc) in [
                    ("dγ", bg.gamma.as_ref(), bc.gamma.as_ref()),
                    ("dβ", bg.beta.as_ref(), bc.beta.as_ref()),
                ] {
                    let (pg, pc) = (pg.expect("affine"), pc.expect("affine"));
                    assert_close(
                        &format!("{what} ({case})"),
                        &values(pg.val().grad(&gg).expect("on wgpu")),
                        &values(pc.val().grad(&gc).expect("on the cpu")),
                        1e-4,
                    );
                }
            }
            // An EMA teacher's BatchNorm: the same forward without autodiff.
            let bi = bn::<Wgpu>(affine, stats, &gpu);
            let yi = bi.forward_act(xg.clone().inner(), true, relu);
            assert_close(
                &format!("y without autodiff ({case})"),
                &values(yi),
                &want_y,
                1e-5,
            );
            let moved = values(bi.running_var.value());
            let want = values(bc.running_var.value());
            assert_close(
                &format!("running var without autodiff ({case})"),
                &moved,
                &want,
                1e-5,
            );
        }
    }
    // The kernels ran, rather than a silent fallback to the composed ops.
    let t = |v: &[f32]| Tensor::<Wgpu, 1>::from_data(TensorData::new(v.to_vec(), [c]), &gpu);
    let xi = Tensor::<Wgpu, 2>::from_data(TensorData::new(x.clone(), [n, c]), &gpu);
    let ran = canc_runtime::ops::batch_norm_train(&xi, None, (&t(&rm), &t(&rv)), 1e-5, 0.1, false);
    assert!(ran.is_some(), "canc's BatchNorm kernel runs on wgpu");
}

/// The reconstruction losses (`loss::mse`, `loss::l1` on patches) on wgpu, through canc's
/// kernels, against Burn's composed ops on the CPU: the loss and the gradients of the
/// prediction and of a target that needs one, with a selection of rows and without, and with
/// an empty selection (loss 0); and MAE's per-patch target normalisation.
#[test]
fn patch_losses_match_burns_ops_on_the_cpu() {
    use burn::tensor::TensorData;
    use canc_runtime::loss;
    let Some(gpu) = device() else { return };
    canc_runtime::ops::set_fused(Some(true));
    let cpu = Default::default();
    let (b, n, d) = (3, 7, 13);
    let (p, t) = (fill(b * n * d, 60, 2.0), fill(b * n * d, 61, 2.0));
    let some: Vec<f32> = (0..b * n)
        .map(|i| f32::from(u8::from(i % 3 != 1)))
        .collect();
    let none = vec![0.0; b * n];
    for l1 in [false, true] {
        for select in [None, Some(&some), Some(&none)] {
            let case = format!(
                "l1 {l1}, select {:?}",
                select.map(|s| s.iter().sum::<f32>())
            );
            let cpu_t = |v: &[f32]| {
                Tensor::<CpuTrain, 3>::from_data(TensorData::new(v.to_vec(), [b, n, d]), &cpu)
                    .require_grad()
            };
            let gpu_t = |v: &[f32]| {
                Tensor::<WgpuTrain, 3>::from_data(TensorData::new(v.to_vec(), [b, n, d]), &gpu)
                    .require_grad()
            };
            let (pc, tc, pg, tg) = (cpu_t(&p), cpu_t(&t), gpu_t(&p), gpu_t(&t));
            let sc = select.map(|s| Tensor::from_data(TensorData::new(s.clone(), [b, n]), &cpu));
            let sg = select.map(|s| Tensor::from_data(TensorData::new(s.clone(), [b, n]), &gpu));
            let (lc, lg) = if l1 {
                (
                    loss::l1(pc.clone(), tc.clone(), sc),
                    loss::l1(pg.clone(), tg.clone(), sg),
                )
            } else {
                (
                    loss::mse(pc.clone(), tc.clone(), sc),
                    loss::mse(pg.clone(), tg.clone(), sg),
                )
            };
            let want = values(lc.clone());
            assert_close(&format!("loss ({case})"), &values(lg.clone()), &want, 1e-5);
            let (gc, gg) = (lc.mul_scalar(3.0).backward(), lg.mul_scalar(3.0).backward());
            for (what, a, w) in [("dpred", &pg, &pc), ("dtarget", &tg, &tc)] {
                assert_close(
                    &format!("{what} ({case})"),
                    &values(a.grad(&gg).expect("on wgpu")),
                    &values(w.grad(&gc).expect("on the cpu")),
                    1e-5,
                );
            }
        }
    }
    // MAE's per-patch target normalisation: of the data (canc's kernel), and of a tracked input
    // (Burn's ops, for the gradient).
    let pc = Tensor::<CpuTrain, 3>::from_data(TensorData::new(p.clone(), [b, n, d]), &cpu);
    let pg = Tensor::<WgpuTrain, 3>::from_data(TensorData::new(p.clone(), [b, n, d]), &gpu);
    let want = values(loss::patch_norm(pc.clone(), 1e-6));
    let got = values(loss::patch_norm(pg.clone(), 1e-6));
    assert_close("patch_norm", &got, &want, 1e-5);
    let (pc, pg) = (pc.require_grad(), pg.require_grad());
    let (yc, yg) = (
        loss::patch_norm(pc.clone(), 1e-6),
        loss::patch_norm(pg.clone(), 1e-6),
    );
    assert_close("tracked patch_norm", &values(yg.clone()), &want, 1e-5);
    let (gc, gg) = (
        yc.powf_scalar(3.0).sum().backward(),
        yg.powf_scalar(3.0).sum().backward(),
    );
    assert_close(
        "patch_norm dx",
        &values(pg.grad(&gg).expect("on wgpu")),
        &values(pc.grad(&gc).expect("on the cpu")),
        1e-4,
    );

    // The kernels ran, rather than a silent fallback to the composed ops.
    let x = Tensor::<WgpuTrain, 2>::from_data(TensorData::new(p.clone(), [b * n, d]), &gpu);
    let ran = canc_runtime::ops::patch_error(&x, &x, None, false);
    assert!(ran.is_some(), "canc's patch-error kernels run on wgpu");
    let ran = canc_runtime::ops::patch_norm(&x, 1e-6);
    assert!(ran.is_some(), "canc's patch-norm kernel runs on wgpu");
}

/// A Linear's bias added in the op after it (`ops::bias_gelu`, `ops::bias_residual`): on wgpu
/// through canc's kernels, under autodiff and without, against `gelu(h + b)` and `r + (h + b)`
/// in Burn's ops on the CPU, values and the gradients of `r`, `h` and `b`.
#[test]
fn bias_kernels_match_burns_ops_on_the_cpu() {
    use burn::tensor::TensorData;
    use canc_runtime::backend::Wgpu;
    use canc_runtime::ops::{self, reference};
    let Some(gpu) = device() else { return };
    ops::set_fused(Some(true));
    let cpu = Default::default();
    let (rows, width) = (23, 17);
    let (r, h, b, dy) = (
        fill(rows * width, 70, 2.0),
        fill(rows * width, 71, 2.0),
        fill(width, 72, 2.0),
        fill(rows * width, 73, 2.0),
    );
    let c2 = |v: &[f32]| {
        Tensor::<CpuTrain, 2>::from_data(TensorData::new(v.to_vec(), [rows, width]), &cpu)
            .require_grad()
    };
    let g2 = |v: &[f32]| {
        Tensor::<WgpuTrain, 2>::from_data(TensorData::new(v.to_vec(), [rows, width]), &gpu)
            .require_grad()
    };
    let bc = Tensor::<CpuTrain, 1>::from_data(TensorData::new(b.clone(), [width]), &cpu);
    let bg = Tensor::<WgpuTrain, 1>::from_data(TensorData::new(b.clone(), [width]), &gpu);
    let (bc, bg) = (bc.require_grad(), bg.require_grad());
    for residual in [false, true] {
        let case = if residual {
            "bias_residual"
        } else {
            "bias_gelu"
        };
        let (rc, hc, rg, hg) = (c2(&r), c2(&h), g2(&r), g2(&h));
        let (yc, yg) = if residual {
            (
                rc.clone() + (hc.clone() + bc.clone().unsqueeze::<2>()),
                ops::bias_residual(rg.clone(), hg.clone(), bg.clone()),
            )
        } else {
            (
                reference::gelu(hc.clone() + bc.clone().unsqueeze::<2>()),
                ops::bias_gelu(hg.clone(), bg.clone()),
            )
        };
        let want = values(yc.clone());
        assert_close(case, &values(yg.clone()), &want, 1e-5);
        let (hi, bi) = (hg.clone().inner(), bg.clone().inner());
        let plain: Tensor<Wgpu, 2> = if residual {
            ops::bias_residual(rg.clone().inner(), hi, bi)
        } else {
            ops::bias_gelu(hi, bi)
        };
        assert_close(
            &format!("{case} without autodiff"),
            &values(plain),
            &want,
            1e-5,
        );
        let up = |t: Tensor<CpuTrain, 2>| t * c2(&dy).detach();
        let gc = up(yc).sum().backward();
        let gg = (yg * g2(&dy).detach()).sum().backward();
        let grad = |t: &Tensor<WgpuTrain, 2>| values(t.grad(&gg).expect("on wgpu"));
        let want = |t: &Tensor<CpuTrain, 2>| values(t.grad(&gc).expect("on the cpu"));
        assert_close(&format!("{case} dh"), &grad(&hg), &want(&hc), 1e-5);
        if residual {
            assert_close(&format!("{case} dr"), &grad(&rg), &want(&rc), 1e-5);
        }
        assert_close(
            &format!("{case} db"),
            &values(bg.grad(&gg).expect("on wgpu")),
            &values(bc.grad(&gc).expect("on the cpu")),
            1e-4,
        );
    }
    let ran = canc_runtime::ops::gpu_kernels::<WgpuTrain>();
    assert!(ran, "canc's kernels run on wgpu");
}

/// Column sums on wgpu by canc's kernel (one, two and three passes of 256-row chunks; widths
/// under, at and over a cube's 32 columns) against sums in f64; and the bias add whose gradient
/// they give against Burn's autodiff on the CPU, values and both gradients.
#[test]
fn column_sums_and_bias_add_match_burns_ops_on_the_cpu() {
    use burn::tensor::TensorData;
    use canc_runtime::backend::Wgpu;
    use canc_runtime::ops::{self, cube};
    let Some(gpu) = device() else { return };
    ops::set_fused(Some(true));
    let cpu = Default::default();
    for (i, &(rows, c)) in [
        (1, 5),
        (7, 33),
        (256, 17),
        (257, 40),
        (600, 192),
        (70_000, 3),
    ]
    .iter()
    .enumerate()
    {
        let x = fill(rows * c, 90 + i as u64, 2.0);
        // The reference sums in f64: an f32 sum of 70,000 values is itself off by about 1e-3.
        let want: Vec<f32> = (0..c)
            .map(|j| (0..rows).map(|r| f64::from(x[r * c + j])).sum::<f64>() as f32)
            .collect();
        let xg = Tensor::<Wgpu, 2>::from_data(TensorData::new(x, [rows, c]), &gpu);
        let got = cube::col_sum(&xg).expect("canc's kernels run on wgpu");
        assert_close(&format!("col_sum {rows}x{c}"), &values(got), &want, 1e-5);
    }
    let (rows, width) = (300, 19);
    let (h, b, dy) = (
        fill(rows * width, 95, 2.0),
        fill(width, 96, 2.0),
        fill(rows * width, 97, 2.0),
    );
    let hc = Tensor::<CpuTrain, 2>::from_data(TensorData::new(h.clone(), [rows, width]), &cpu)
        .require_grad();
    let hg =
        Tensor::<WgpuTrain, 2>::from_data(TensorData::new(h, [rows, width]), &gpu).require_grad();
    let bc =
        Tensor::<CpuTrain, 1>::from_data(TensorData::new(b.clone(), [width]), &cpu).require_grad();
    let bg = Tensor::<WgpuTrain, 1>::from_data(TensorData::new(b, [width]), &gpu).require_grad();
    let yc = hc.clone() + bc.clone().unsqueeze::<2>();
    let yg = ops::add_bias(hg.clone(), bg.clone());
    assert_close("add_bias", &values(yg.clone()), &values(yc.clone()), 1e-6);
    let dyc = Tensor::<CpuTrain, 2>::from_data(TensorData::new(dy.clone(), [rows, width]), &cpu);
    let dyg = Tensor::<WgpuTrain, 2>::from_data(TensorData::new(dy, [rows, width]), &gpu);
    let gc = (yc * dyc).sum().backward();
    let gg = (yg * dyg).sum().backward();
    assert_close(
        "add_bias dh",
        &values(hg.grad(&gg).expect("on wgpu")),
        &values(hc.grad(&gc).expect("on the cpu")),
        1e-6,
    );
    assert_close(
        "add_bias db",
        &values(bg.grad(&gg).expect("on wgpu")),
        &values(bc.grad(&gc).expect("on the cpu")),
        1e-4,
    );
}

/// The masked-row ops on wgpu (canc's inverse of the row indices, the gathers that replace
/// Burn's scatter-add gradients) against Burn's select and autodiff on the CPU: the kept rows'
/// select and the placement of rows among fill rows, values and gradients (the fill's is a sum
/// over every position it fills).
#[test]
fn row_select_and_placement_match_burns_ops_on_the_cpu() {
    use burn::tensor::{Int, TensorData};
    use canc_runtime::ops;
    let Some(gpu) = device() else { return };
    ops::set_fused(Some(true));
    let cpu = Default::default();
    let (total, d) = (29, 7);
    // 11 distinct rows out of 29, in no order.
    let flat: Vec<i64> = vec![3, 17, 0, 28, 9, 21, 5, 14, 26, 11, 8];
    let m = flat.len();
    let fc = Tensor::<CpuTrain, 1, Int>::from_data(TensorData::new(flat.clone(), [m]), &cpu);
    let fg = Tensor::<WgpuTrain, 1, Int>::from_data(TensorData::new(flat.clone(), [m]), &gpu);
    let c2 = |v: &[f32], r: usize| {
        Tensor::<CpuTrain, 2>::from_data(TensorData::new(v.to_vec(), [r, d]), &cpu).require_grad()
    };
    let g2 = |v: &[f32], r: usize| {
        Tensor::<WgpuTrain, 2>::from_data(TensorData::new(v.to_vec(), [r, d]), &gpu).require_grad()
    };
    let grad_c = |t: &Tensor<CpuTrain, 2>, g: &_| values(t.grad(g).expect("on the cpu"));
    let grad_g = |t: &Tensor<WgpuTrain, 2>, g: &_| values(t.grad(g).expect("on wgpu"));

    let (x, dy) = (fill(total * d, 110, 2.0), fill(m * d, 111, 2.0));
    let (xc, xg) = (c2(&x, total), g2(&x, total));
    let yc = xc.clone().select(0, fc.clone());
    let yg = ops::select_rows(xg.clone(), fg.clone());
    assert_close("select_rows", &values(yg.clone()), &values(yc.clone()), 0.0);
    let gc = (yc * c2(&dy, m).detach()).sum().backward();
    let gg = (yg * g2(&dy, m).detach()).sum().backward();
    assert_close("select_rows dx", &grad_g(&xg, &gg), &grad_c(&xc, &gc), 1e-6);

    let (rows, f, dy) = (
        fill(m * d, 112, 2.0),
        fill(d, 113, 2.0),
        fill(total * d, 114, 2.0),
    );
    let (rc, rg) = (c2(&rows, m), g2(&rows, m));
    let flc =
        Tensor::<CpuTrain, 1>::from_data(TensorData::new(f.clone(), [d]), &cpu).require_grad();
    let flg = Tensor::<WgpuTrain, 1>::from_data(TensorData::new(f, [d]), &gpu).require_grad();
    let yc = ops::place_rows(rc.clone(), flc.clone(), fc, total);
    let yg = ops::place_rows(rg.clone(), flg.clone(), fg, total);
    assert_close("place_rows", &values(yg.clone()), &values(yc.clone()), 0.0);
    let gc = (yc * c2(&dy, total).detach()).sum().backward();
    let gg = (yg * g2(&dy, total).detach()).sum().backward();
    assert_close(
        "place_rows d_rows",
        &grad_g(&rg, &gg),
        &grad_c(&rc, &gc),
        1e-6,
    );
    assert_close(
        "place_rows d_fill",
        &values(flg.grad(&gg).expect("on wgpu")),
        &values(flc.grad(&gc).expect("on the cpu")),
        1e-5,
    );
    // The placement's values by hand: row flat[r] is rows[r], the others the fill.
    let placed = values(ops::place_rows(
        rc.inner(),
        flc.inner(),
        Tensor::from_data(TensorData::new(flat.clone(), [m]), &cpu),
        total,
    ));
    for (r, &at) in flat.iter().enumerate() {
        assert_eq!(
            placed[at as usize * d..][..d],
            rows[r * d..][..d],
            "row {r} at {at}"
        );
    }
}

/// The contrastive losses on wgpu through canc's kernels (L2 normalisation, and the
/// cross-entropy over cosine logits with its positives and masked diagonal), against Burn's
/// composed ops on the CPU: NT-Xent (mean and SimCLR's sum over views) and MoCo v3's
/// query-key form (plain and times 2τ), the loss and the gradients of both inputs; and the L2
/// normalisation of a zero row (its norm clamped).
#[test]
fn contrastive_kernels_match_burns_ops_on_the_cpu() {
    use burn::tensor::TensorData;
    use canc_runtime::loss;
    let Some(gpu) = device() else { return };
    canc_runtime::ops::set_fused(Some(true));
    let cpu = Default::default();
    let (n, d) = (9, 21);
    let (a, b) = (fill(n * d, 80, 2.0), fill(n * d, 81, 2.0));
    let c = |v: &[f32]| {
        Tensor::<CpuTrain, 2>::from_data(TensorData::new(v.to_vec(), [n, d]), &cpu).require_grad()
    };
    let g = |v: &[f32]| {
        Tensor::<WgpuTrain, 2>::from_data(TensorData::new(v.to_vec(), [n, d]), &gpu).require_grad()
    };
    for (case, t, flag) in [
        ("infonce", 0.2, false),
        ("infonce summed over views", 0.5, true),
        ("infonce_qk", 0.2, false),
        ("infonce_qk × 2τ", 1.0, true),
    ] {
        let qk = case.starts_with("infonce_qk");
        let (ac, bc, ag, bg) = (c(&a), c(&b), g(&a), g(&b));
        let (lc, lg) = if qk {
            (
                loss::infonce_qk(ac.clone(), bc.clone(), t, flag),
                loss::infonce_qk(ag.clone(), bg.clone(), t, flag),
            )
        } else {
            (
                loss::infonce(ac.clone(), bc.clone(), t, flag),
                loss::infonce(ag.clone(), bg.clone(), t, flag),
            )
        };
        assert_close(case, &values(lg.clone()), &values(lc.clone()), 1e-5);
        let (gc, gg) = (lc.mul_scalar(1.5).backward(), lg.mul_scalar(1.5).backward());
        for (what, x, y) in [("da", &ag, &ac), ("db", &bg, &bc)] {
            assert_close(
                &format!("{case} {what}"),
                &values(x.grad(&gg).expect("on wgpu")),
                &values(y.grad(&gc).expect("on the cpu")),
                1e-5,
            );
        }
    }
    // A zero row: its norm is clamped to 1e-12, and its gradient is dy/1e-12 (torch's).
    let mut z = a.clone();
    z[d..2 * d].fill(0.0);
    let dy = fill(n * d, 82, 1e-12);
    let (zc, zg) = (c(&z), g(&z));
    let (yc, yg) = (loss::l2norm(zc.clone()), loss::l2norm(zg.clone()));
    assert_close("l2norm", &values(yg.clone()), &values(yc.clone()), 1e-5);
    let up_c = Tensor::<CpuTrain, 2>::from_data(TensorData::new(dy.clone(), [n, d]), &cpu);
    let up_g = Tensor::<WgpuTrain, 2>::from_data(TensorData::new(dy, [n, d]), &gpu);
    let (gc, gg) = ((yc * up_c).sum().backward(), (yg * up_g).sum().backward());
    assert_close(
        "l2norm dx",
        &values(zg.grad(&gg).expect("on wgpu")),
        &values(zc.grad(&gc).expect("on the cpu")),
        1e-5,
    );
    let x = Tensor::<WgpuTrain, 2>::from_data(TensorData::new(a.clone(), [n, d]), &gpu);
    assert!(
        canc_runtime::ops::l2norm(&x, 1e-12).is_some(),
        "canc's l2norm kernel runs"
    );
}
