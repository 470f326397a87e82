//! `train.precision = bf16`: the transformer blocks' matrix products run in bf16 on f32 master
//! weights (autocast); `f16` is refused. On the CPU backend bf16 products are computed in f32
//! after rounding their inputs, which is what these tests observe.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use canc_runtime::backend::CpuTrain;
use canc_runtime::data;
use canc_runtime::exec::{ExecError, Program};
use canc_runtime::train::{RunOptions, Trainer};

fn plan(precision: &str) -> canc_compiler::Plan {
    let sets: Vec<String> = [
        "data.limit=32",
        "train.batch=16",
        "train.epochs=2",
        "network.encoder.dim=32",
        "network.encoder.depth=2",
        "network.encoder.heads=2",
        "network.decoder.dim=32",
        "network.decoder.heads=2",
        "schedule.warmup=0 steps",
        &format!("train.precision={precision}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let res = canc_compiler::resolve_path("../specs/can.canspec".as_ref(), &sets);
    assert!(!res.has_errors(), "can does not compile");
    res.plans[0].clone()
}

/// Every float parameter: its dtype and values (as f32), in visiting order.
#[derive(Default)]
struct Flat {
    dtypes: Vec<DType>,
    values: Vec<f32>,
}
impl<B: Backend> ModuleVisitor<B> for Flat {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
        let v = p.val().into_data();
        self.dtypes.push(v.dtype);
        let v = v.convert::<f32>();
        self.values
            .extend(v.as_slice::<f32>().expect("f32").iter().copied());
    }
}

fn flat<M: Module<CpuTrain>>(m: &M) -> Flat {
    let mut f = Flat::default();
    m.visit(&mut f);
    f
}

/// One optimizer step of `precision`: the weights before and after, and the step's loss.
fn one_step(precision: &str) -> (Flat, Flat, f64) {
    let plan = plan(precision);
    let ds = data::load(&plan.data, None).expect("Fashion-MNIST installed");
    let device = Default::default();
    let mut program = Program::<CpuTrain>::new(plan, &device).expect("builds");
    let before = flat(&program.model);
    let opts = RunOptions::new(4, 16);
    let mut trainer = Trainer::new(&program, &ds, &opts).expect("trainer");
    let log = trainer.step(&mut program, &ds, 0, &device).expect("step");
    (before, flat(&program.model), log.loss)
}

#[test]
fn bf16_rounds_the_products_keeps_f32_master_weights_and_stays_close_to_f32() {
    let (w0, w1, loss32) = one_step("f32");
    let (v0, v1, loss16) = one_step("bf16");
    assert_eq!(w0.values, v0.values, "same seed, same initial weights");
    // The products' inputs were rounded (bf16 keeps 8 significant bits: ~0.4% per value) ...
    assert_ne!(loss16, loss32, "bf16 changed nothing");
    // ... and the loss stays within a percent of f32's.
    let rel = (loss16 - loss32).abs() / loss32.abs();
    assert!(
        rel < 1e-2,
        "bf16 loss {loss16} vs f32 {loss32}: {rel:.2e} relative"
    );
    // The master weights and what the optimizer wrote are f32.
    assert!(
        v1.dtypes.iter().all(|d| *d == DType::F32),
        "{:?}",
        v1.dtypes
    );
    // The first AdamW update is about lr·sign(g): bf16 gradients point the same way as f32's
    // almost everywhere.
    let (mut moved, mut agree) = (0usize, 0usize);
    for i in 0..w0.values.len() {
        let (a, b) = (w1.values[i] - w0.values[i], v1.values[i] - v0.values[i]);
        if a.abs() > 1e-6 {
            moved += 1;
            agree += usize::from(a.signum() == b.signum());
        }
    }
    eprintln!("loss f32 {loss32}, bf16 {loss16} ({rel:.2e}); {agree}/{moved} update signs agree");
    assert!(moved > 1000, "only {moved} weights moved");
    let share = agree as f64 / moved as f64;
    assert!(
        share > 0.9,
        "update directions agree for {:.1}% only",
        100.0 * share
    );
    assert!(
        share < 1.0,
        "bf16 updates identical to f32: no rounding reached the gradients"
    );
}

#[test]
fn f16_is_refused_with_a_reason() {
    // The checker does not offer it ...
    let res = canc_compiler::resolve_path(
        "../specs/can.canspec".as_ref(),
        &["train.precision=f16".to_string()],
    );
    assert!(res.has_errors(), "the checker accepted f16");
    // ... and the runtime refuses a plan that has it anyway (a hand-edited plan.ron).
    let mut p = plan("f32");
    p.train.insert(
        "precision".into(),
        canc_compiler::RValue::Ident("f16".into()),
    );
    let device = Default::default();
    let err = Program::<CpuTrain>::new(p, &device).expect_err("f16 is refused");
    assert!(matches!(err, ExecError::Precision(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("loss scaling") && msg.contains("bf16"),
        "{msg}"
    );
}
