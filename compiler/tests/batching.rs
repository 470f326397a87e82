//! Call batching: which calls the plan runs as one, and that the reordered steps keep every
//! dependency and the order of the random draws.

use canc_compiler::Plan;
use std::path::Path;

fn spec(name: &str) -> Plan {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../specs/{name}.canspec"));
    let r = canc_compiler::resolve_path(&path, &[]);
    assert!(!r.has_errors(), "{name} does not compile");
    r.plans.into_iter().next().expect("one plan")
}

fn source(text: &str) -> Plan {
    let r = canc_compiler::resolve_source("t.canspec", text, &[]);
    let errors: Vec<_> = r.diagnostics.iter().map(|d| d.message.clone()).collect();
    assert!(!r.has_errors(), "spec does not compile: {errors:?}");
    r.plans.into_iter().next().expect("one plan")
}

fn groups(plan: &Plan) -> Vec<Vec<&str>> {
    plan.batch_groups()
}

/// Every input is computed before the step that reads it, and group members stand together.
fn assert_valid_order(plan: &Plan) {
    let pos = |v: &str| {
        plan.steps
            .iter()
            .position(|s| s.name == v || v.rsplit_once('.').is_some_and(|(n, _)| n == s.name))
    };
    for (i, s) in plan.steps.iter().enumerate() {
        for input in &s.inputs {
            let p = pos(&input.value).unwrap_or_else(|| panic!("{}: no producer", input.value));
            assert!(
                p < i,
                "`{}` reads `{}` before it is computed",
                s.name,
                input.value
            );
        }
    }
    for g in groups(plan) {
        let at: Vec<usize> = g.iter().filter_map(|n| pos(n)).collect();
        assert!(
            at.windows(2).all(|w| w[1] == w[0] + 1),
            "group {g:?} is not contiguous"
        );
    }
}

/// The names of the steps that draw masks or noise, in plan order.
fn draws(plan: &Plan) -> Vec<&str> {
    plan.steps
        .iter()
        .filter(|s| s.rng.is_some() && !matches!(s.op, canc_compiler::ir::Op::View { .. }))
        .map(|s| s.name.as_str())
        .collect()
}

#[test]
fn can_runs_each_network_once_per_step() {
    let plan = spec("can");
    assert_eq!(
        groups(&plan),
        [vec!["h1", "h2"], vec!["y1", "y2"], vec!["z1", "z2"]]
    );
    assert_valid_order(&plan);
    assert_eq!(
        draws(&plan),
        ["n1", "m1", "n2", "m2"],
        "random draws keep their order"
    );
}

#[test]
fn batchnorm_networks_and_unequal_shapes_are_not_batched() {
    // MoCo v3: the ViTs (online and teacher) batch; its projector and predictor have BatchNorm,
    // whose batch statistics would mix the views.
    let moco = spec("mocov3");
    assert_eq!(
        groups(&moco),
        [
            vec!["q1/encoder", "q2/encoder"],
            vec!["k1/teacher", "k2/teacher"]
        ]
    );
    assert_valid_order(&moco);
    // MACRL masks its two views at different ratios: encoder and decoder calls see different
    // token counts; only the projector (no norm) batches.
    let macrl = spec("macrl");
    assert_eq!(groups(&macrl), [vec!["zs", "zw"]]);
    assert_valid_order(&macrl);
    // One view, nothing to batch: the plan keeps the graph's order.
    let mae = spec("mae");
    assert!(groups(&mae).is_empty());
    let names: Vec<&str> = mae.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["x", "m", "h", "y", "rec/patchify", "rec/patch_norm", "rec"]
    );
}

#[test]
fn a_call_on_another_calls_output_is_not_batched_with_it() {
    // `b` and `c` apply the projector to `a`'s output: batching `a` with either would need `a`
    // before itself. `b` and `c` are independent and batch together.
    let plan = source(
        "data: synthetic { image_size = 8, channels = 1 }
view v { normalize {} }
network encoder: vit { patch = 4, dim = 16, depth = 1, heads = 2 }
network projector: mlp { layers = 2, hidden = 16, out = 16 }
graph {
  x1 = view(v)
  x2 = view(v)
  a = projector(pool(encoder(x1), mode = mean_all))
  b = projector(a)
  c = projector(stop_grad(a))
  l = cosine(b, c)
  e = cosine(pool(encoder(x2), mode = mean_all), a)
}
objective { l = 1.0, e = 1.0 }
optimizer: adamw { lr = 1e-3 }
train { epochs = 1, batch = 4 }
",
    );
    let g = groups(&plan);
    assert!(
        g.iter().all(|m| !m.contains(&"a")),
        "`a` batched with a call that reads it: {g:?}"
    );
    assert!(g.contains(&vec!["b", "c"]), "{g:?}");
    assert_valid_order(&plan);
}
