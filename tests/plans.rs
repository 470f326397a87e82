//! Every spec of the library compiles to a plan; the plan (RON, every sweep variant) is
//! snapshotted so a change of wiring, shape or gradient flow shows up as a snapshot diff. Plus
//! structural properties every plan must have.

use crate::specs::{snapshot_name, spec_files};
use canc_compiler::plan::Role;
use canc_compiler::resolve_path;
use canc_compiler::shape::Fact;
use std::collections::HashSet;

#[test]
fn every_spec_compiles_and_matches_snapshot() {
    for path in spec_files() {
        let res = resolve_path(&path, &[]);
        assert!(!res.has_errors(), "{} has errors", path.display());
        assert_eq!(
            res.plans.len(),
            res.variants.len(),
            "{}: one plan per variant",
            path.display()
        );
        let mut text = String::new();
        for p in &res.plans {
            if let Some(v) = &p.variant {
                text.push_str(&format!("// variant {v}\n"));
            }
            text.push_str(&p.to_ron());
            text.push('\n');
        }
        insta::with_settings!({ snapshot_path => "snapshots/plans", prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!(snapshot_name(&path), text);
        });
    }
}

/// A run directory's `plan.ron` is what `canc resume` and `canc eval` read back: reading the
/// canonical text must give the same plan, for every variant of every spec.
#[test]
fn plan_ron_reads_back_to_the_same_plan() {
    for path in spec_files() {
        let res = resolve_path(&path, &[]);
        for r in &res.variants {
            let back = canc_compiler::resolved::ResolvedSpec::from_ron(&r.to_ron())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(back.to_ron(), r.to_ron(), "{}", path.display());
        }
        for p in &res.plans {
            let back = canc_compiler::Plan::from_ron(&p.to_ron())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(&back, p, "{}", path.display());
        }
    }
    let bad = canc_compiler::Plan::from_ron("(format: 1, spec: ");
    assert!(bad.is_err());
}

#[test]
fn compiling_twice_gives_the_same_plan() {
    for path in spec_files() {
        let a = resolve_path(&path, &[]);
        let b = resolve_path(&path, &[]);
        let ra: Vec<String> = a.plans.iter().map(|p| p.to_ron()).collect();
        let rb: Vec<String> = b.plans.iter().map(|p| p.to_ron()).collect();
        assert_eq!(ra, rb, "{}", path.display());
    }
}

#[test]
fn steps_are_in_topological_order_and_inputs_exist() {
    for path in spec_files() {
        for plan in resolve_path(&path, &[]).plans {
            let mut defined: HashSet<&str> = HashSet::new();
            for s in &plan.steps {
                for i in &s.inputs {
                    let producer = i.value.split('.').next().unwrap_or_default();
                    assert!(
                        defined.contains(producer),
                        "{}: step `{}` reads `{}` before it is computed",
                        path.display(),
                        s.name,
                        i.value
                    );
                }
                assert!(
                    defined.insert(&s.name),
                    "{}: `{}` defined twice",
                    path.display(),
                    s.name
                );
            }
            for (t, _) in &plan.objective.terms {
                let step = plan.step(t).expect("objective term is a step");
                assert_eq!(step.out, Fact::Scalar, "{}: term {t}", path.display());
            }
        }
    }
}

#[test]
fn masking_drops_tokens_before_the_encoder() {
    // can.canspec: 28 px / patch 4 = 7 × 7 = 49 patches; ratio 0.5 keeps floor(49 · 0.5) = 24.
    let res = resolve_path("specs/can.canspec".as_ref(), &[]);
    let plan = &res.plans[0];
    let h1 = plan.step("h1").expect("h1");
    assert_eq!(
        h1.out,
        Fact::Tokens {
            n: 24,
            grid: 49,
            cls: true,
            dim: 192,
            patch: 4,
            channels: 1,
            visible_of: Some("m1".into()),
        }
    );
    // The decoder predicts every patch: 49 positions × 4·4·1 = 16 pixels.
    let y1 = plan.step("y1").expect("y1");
    assert!(matches!(
        y1.out,
        Fact::Tokens {
            n: 49,
            dim: 16,
            cls: false,
            ..
        }
    ));
    // Overriding the ratio changes the visible count: floor(49 · 0.25) = 12.
    let res = resolve_path("specs/can.canspec".as_ref(), &["mask_ratio=0.75".into()]);
    let h1 = res.plans[0].step("h1").expect("h1");
    assert!(matches!(h1.out, Fact::Tokens { n: 12, .. }), "{:?}", h1.out);
}

#[test]
fn gradient_flags_follow_stop_grad_and_ema() {
    let res = resolve_path("specs/mocov3.canspec".as_ref(), &[]);
    let plan = &res.plans[0];
    // Keys come from the EMA teacher: no gradient; queries from the trained encoder: gradient.
    for k in ["k1", "k2"] {
        let s = plan.step(k).expect("key");
        assert!(!s.grad && !s.keep, "{k} must be gradient-free");
    }
    for q in ["q1", "q2"] {
        let s = plan.step(q).expect("query");
        assert!(s.grad && s.keep, "{q} must carry gradient");
    }
    let teacher = plan.network("teacher").expect("teacher");
    assert!(
        matches!(&teacher.role, Role::Ema { source, momentum, momentum_end, .. }
        if source == "encoder" && *momentum == 0.99 && *momentum_end == 1.0)
    );
    assert_eq!(
        plan.network("encoder").map(|n| &n.role),
        Some(&Role::Trained)
    );
    // The teacher's parameters equal its source's (it is a copy).
    assert_eq!(
        teacher.params,
        plan.network("encoder").expect("encoder").params
    );
}

#[test]
fn derived_optimisation_numbers() {
    // can.canspec: 60000 images, batch 256, 50 epochs, warm-up 5 epochs, lr 2.5e-4 linear.
    let res = resolve_path("specs/can.canspec".as_ref(), &[]);
    let o = &res.plans[0].optim;
    assert_eq!(o.steps_per_epoch, Some(234)); // floor(60000 / 256) = 234
    assert_eq!(o.total_steps, Some(11_700)); // 50 · 234
    assert_eq!(o.warmup_steps, Some(1_170)); // 5 · 234
    assert!((o.effective_lr - 2.5e-4).abs() < 1e-15); // 2.5e-4 · 256 / 256
    let res = resolve_path("specs/can.canspec".as_ref(), &["train.batch=512".into()]);
    let o = &res.plans[0].optim;
    assert_eq!(o.steps_per_epoch, Some(117)); // floor(60000 / 512)
    assert!((o.effective_lr - 5e-4).abs() < 1e-15); // 2.5e-4 · 512 / 256
    let w = &res.plans[0].objective;
    assert!((w.weight_sum - 1.0).abs() < 1e-12); // 0.03 + 0.67 + 0.3
}

#[test]
fn sweep_variants_each_get_a_plan() {
    let res = resolve_path("specs/ablations/can_mask_ratio_sweep.canspec".as_ref(), &[]);
    assert!(res.plans.len() > 1);
    let visible: Vec<u32> = res
        .plans
        .iter()
        .map(|p| match p.step("h1").map(|s| &s.out) {
            Some(Fact::Tokens { n, .. }) => *n,
            _ => 0,
        })
        .collect();
    let distinct: HashSet<u32> = visible.iter().copied().collect();
    assert_eq!(distinct.len(), visible.len(), "ratios differ: {visible:?}");
}
