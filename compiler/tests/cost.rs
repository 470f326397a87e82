//! `canc cost`: FLOPs per image against hand arithmetic and timm's published GMACs, parameter
//! counts against timm and by hand, backward only on trainable paths, and the memory estimate.

use canc_compiler::Plan;
use canc_compiler::cost::{
    self, Dtype, VitShape, block_activations_per_token, memory, step_cost, step_cost_at,
    vit_forward_macs,
};
use canc_compiler::plan::Role;
use std::path::Path;

fn plan(text: &str) -> Plan {
    let r = canc_compiler::resolve_source("t.canspec", text, &[]);
    let errors: Vec<_> = r.diagnostics.iter().map(|d| d.message.clone()).collect();
    assert!(!r.has_errors(), "spec does not compile: {errors:?}");
    r.plans.into_iter().next().expect("one plan")
}

/// An MAE-style spec: a ViT encoder at `image` px with the given shape and mask ratio (`None`:
/// no mask), a decoder `dec_depth × dec_dim`, MSE on the raw patches.
fn mae(image: u32, patch: u32, dim: u32, depth: u32, heads: u32, mask: Option<f64>) -> String {
    let (m, call, on) = match mask {
        Some(r) => (
            format!("m = mask(encoder, ratio = {r})"),
            "mask = m",
            ", on = masked(m)",
        ),
        None => (String::new(), "", ""),
    };
    let sep = if call.is_empty() { "" } else { ", " };
    format!(
        "data: synthetic {{ image_size = {image}, channels = 3 }}
view v {{ normalize {{}} }}
network encoder: vit {{ patch = {patch}, dim = {dim}, depth = {depth}, heads = {heads} }}
network decoder: vit_decoder {{ dim = 512, depth = 8, heads = 16 }}
graph {{
  x = view(v)
  {m}
  h = encoder(x{sep}{call})
  y = decoder(h{sep}{call})
  rec = mse(y, patchify(x, patch = {patch}){on})
}}
objective {{ rec = 1.0 }}
optimizer: adamw {{ lr = 1.5e-4 }}
train {{ epochs = 1, batch = 64 }}
"
    )
}

fn vit(image: u64, patch: u64, dim: u64, depth: u64) -> VitShape {
    VitShape {
        image,
        patch,
        channels: 3,
        dim,
        depth,
        mlp_ratio: 4.0,
        cls: true,
    }
}

#[test]
fn vit_forward_macs_by_hand() {
    // ViT-S/16 @224: N = 196 + 1 = 197, d = 384, 12 blocks.
    // 12·N·d² = 12·197·147,456 = 348,585,984; 2·N²·d = 2·38,809·384 = 29,805,312;
    // block 378,391,296, × 12 = 4,540,695,552; patch embedding 196·(16²·3 = 768)·384 = 57,802,752.
    let s16 = vit_forward_macs(&vit(224, 16, 384, 12), None);
    assert_eq!(s16, 4_598_498_304);
    // ViT-B/16 @224: 12·197·589,824 = 1,394,343,936; 2·38,809·768 = 59,610,624;
    // block 1,453,954,560, × 12 = 17,447,454,720; embedding 196·768·768 = 115,605,504.
    let b16 = vit_forward_macs(&vit(224, 16, 768, 12), None);
    assert_eq!(b16, 17_563_060_224);
    // ViT-S/4 @32: N = 64 + 1 = 65. 12·65·147,456 = 115,015,680; 2·4,225·384 = 3,244,800;
    // block 118,260,480, × 12 = 1,419,125,760; embedding 64·48·384 = 1,179,648.
    let s4 = vit_forward_macs(&vit(32, 4, 384, 12), None);
    assert_eq!(s4, 1_420_305_408);
    // ViT-B/16 with 75% masked: 49 visible + CLS = 50 tokens. 12·50·589,824 = 353,894,400;
    // 2·2,500·768 = 3,840,000; block 357,734,400, × 12 = 4,292,812,800; embedding
    // 49·768·768 = 28,901,376.
    let b16_masked = vit_forward_macs(&vit(224, 16, 768, 12), Some(49));
    assert_eq!(b16_masked, 4_321_714_176);

    // And they agree with timm's published GMACs (S/16 4.61, B/16 17.58) within 0.5%.
    for (ours, timm) in [(s16, 4.61e9), (b16, 17.58e9)] {
        let rel = (ours as f64 - timm).abs() / timm;
        assert!(rel < 0.005, "{ours} vs timm {timm}: {rel}");
    }
}

#[test]
fn plan_counts_only_visible_tokens_in_the_encoder() {
    // ViT-S/16 at 75% mask: 49 visible + CLS. 12·50·147,456 = 88,473,600; 2·2,500·384 =
    // 1,920,000; block 90,393,600, × 12 = 1,084,723,200; embedding 49·768·384 = 14,450,688;
    // total 1,099,173,888 MACs.
    let p = plan(&mae(224, 16, 384, 12, 6, Some(0.75)));
    let c = step_cost(&p);
    assert_eq!(c.network("encoder"), 2.0 * 1_099_173_888.0);
    // Decoder 8×512 on the same: input projection on the 49 + 1 encoder tokens
    // 50·384·512 = 9,830,400; blocks on 196 + 1 tokens: 12·197·262,144 = 619,708,416 and
    // 2·38,809·512 = 39,740,416, block 659,448,832, × 8 = 5,275,590,656; head 196·512·768 =
    // 77,070,336; total 5,362,491,392 MACs. (performance.md §2.2's 5.39 G projects all 197
    // tokens: + 147·384·512 = 28,901,376.)
    assert_eq!(c.network("decoder"), 2.0 * 5_362_491_392.0);
    assert_eq!(
        c.per_network
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["encoder", "decoder"]
    );

    // Without a mask the encoder sees the whole grid: ViT-B/16 @224, 17,563,060,224 MACs.
    let p = plan(&mae(224, 16, 768, 12, 12, None));
    assert_eq!(step_cost(&p).network("encoder"), 2.0 * 17_563_060_224.0);
    // 75% masked ViT-B/16: 4,321,714,176 MACs (above).
    let p = plan(&mae(224, 16, 768, 12, 12, Some(0.75)));
    assert_eq!(step_cost(&p).network("encoder"), 2.0 * 4_321_714_176.0);
    // ViT-S/4 @32, whole grid: 1,420,305,408 MACs (above).
    let p = plan(&mae(32, 4, 384, 12, 6, None));
    assert_eq!(step_cost(&p).network("encoder"), 2.0 * 1_420_305_408.0);
}

#[test]
fn backward_is_twice_forward_when_everything_trains() {
    // Encoder, decoder and MSE reach the loss; view, mask and patchify (the target) cost 0.
    let c = step_cost(&plan(&mae(32, 4, 192, 6, 3, Some(0.5))));
    assert!(c.forward_flops_per_image > 0.0);
    assert_eq!(c.backward_flops_per_image, 2.0 * c.forward_flops_per_image);
    assert_eq!(c.train_flops_per_image(), 3.0 * c.forward_flops_per_image);
}

#[test]
fn vit_s16_params_match_timm() {
    // timm vit_small_patch16_224 has 22,050,664 parameters; without its 1000-class head
    // (384·1000 + 1000 = 385,000) that is 21,665,664, with a learned (196 + 1)·384 = 75,648
    // position embedding. Ours by hand: patch embedding 768·384 + 384 = 295,296; CLS 384;
    // blocks 12 × (norms 4·384 + qkv 384·1152 + 1152 + proj 384² + 384
    //   + fc1 384·1536 + 1536 + fc2 1536·384 + 384) = 12 × 1,774,464 = 21,293,568; final norm 768.
    let learned =
        mae(224, 16, 384, 12, 6, None).replace("heads = 6 }", "heads = 6, pos = learned }");
    let p = plan(&learned);
    let enc = p.network("encoder").expect("encoder");
    assert_eq!(
        enc.params.total(),
        295_296 + 384 + 75_648 + 21_293_568 + 768
    );
    assert_eq!(enc.params.total(), 21_665_664);
    // The sin-cos default has no position parameters.
    let p = plan(&mae(224, 16, 384, 12, 6, None));
    let enc = p.network("encoder").expect("encoder");
    assert_eq!(enc.params.total(), 21_665_664 - 197 * 384);
}

#[test]
fn decoder_and_mlp_params_by_hand() {
    let p = plan(&mae(224, 16, 384, 12, 6, Some(0.75)));
    // Decoder 8×512 after a 384-wide encoder, 16×16×3 pixels out: input projection
    // 384·512 + 512 = 197,120; mask token 512; per block norms 2048 + qkv 512·1536 + 1536
    // + proj 512² + 512 + fc1 512·2048 + 2048 + fc2 2048·512 + 512 = 3,152,384, × 8 =
    // 25,219,072; final norm 1024; head 512·768 + 768 = 393,984.
    let dec = p.network("decoder").expect("decoder");
    assert_eq!(
        dec.params.total(),
        197_120 + 512 + 25_219_072 + 1024 + 393_984
    );

    // MoCo v3's projector: 192 → 1024 → 1024 → 256 without biases, BN affine after the two
    // hidden layers, no affine in the last BN: 192·1024 + 2·1024 + 1024² + 2·1024 + 1024·256.
    let r = canc_compiler::resolve_path(Path::new("../specs/mocov3.canspec"), &[]);
    let p = r.plans.first().expect("mocov3 compiles");
    let proj = p.network("projector").expect("projector");
    assert_eq!(
        proj.params.total(),
        196_608 + 2048 + 1_048_576 + 2048 + 262_144
    );
    // Its patch embedding is frozen: 4²·1·192 + 192 = 3,264 weights get no gradient.
    let enc = p.network("encoder").expect("encoder");
    assert_eq!(cost::trainable_params(enc), enc.params.total() - 3264);
}

const BYOL: &str = "data: synthetic { image_size = 32, channels = 3 }
view v { normalize {} }
network encoder: vit { patch = 4, dim = 64, depth = 2, heads = 2 }
network projector: mlp { hidden = 128, out = 32 }
network teacher: ema { source = encoder }
network teacher_projector: ema { source = projector }
graph {
  x1 = view(v)
  x2 = view(v)
  q = projector(pool(encoder(x1)))
  k = teacher_projector(pool(teacher(x2)))
  loss = cosine(q, stop_grad(k))
}
objective { loss = 1.0 }
optimizer: sgd { lr = 0.05 }
train { epochs = 1, batch = 32 }
";

#[test]
fn ema_branch_adds_forward_only() {
    let p = plan(BYOL);
    let c = step_cost(&p);
    // Encoder d = 64, 2 blocks on 64 + 1 tokens: 12·65·4,096 = 3,194,880; 2·4,225·64 = 540,800;
    // block 3,735,680, × 2 = 7,471,360; embedding 64·48·64 = 196,608; 7,667,968 MACs.
    let enc = 2.0 * 7_667_968.0;
    // Projector 64 → 128 → 32: 8,192 + 4,096 = 12,288 MACs.
    let proj = 2.0 * 12_288.0;
    assert_eq!(c.network("encoder"), enc);
    assert_eq!(c.network("teacher"), enc);
    assert_eq!(c.network("projector"), proj);
    assert_eq!(c.network("teacher_projector"), proj);
    // Pooling reads 65·64 = 4,160 elements per branch; cosine 6·32 = 192.
    assert_eq!(
        c.forward_flops_per_image,
        2.0 * enc + 2.0 * proj + 2.0 * 4160.0 + 192.0
    );
    // Backward: only the online branch, 2 × (encoder + projector + its pool + cosine).
    assert_eq!(
        c.backward_flops_per_image,
        2.0 * (enc + proj + 4160.0 + 192.0)
    );
    for s in &c.steps {
        if s.network
            .as_deref()
            .is_some_and(|n| n.starts_with("teacher"))
        {
            assert_eq!(s.backward, 0.0, "{}", s.step);
            assert!(s.forward > 0.0, "{}", s.step);
        }
    }

    // EMA copies hold weights but no gradients or optimizer state; SGD keeps one momentum.
    let m = memory(&p, None, Dtype::F32);
    let own: u64 = ["encoder", "projector"]
        .iter()
        .map(|n| p.network(n).expect("network").params.total())
        .sum();
    assert!(matches!(
        p.network("teacher").expect("teacher").role,
        Role::Ema { .. }
    ));
    assert_eq!(m.weights, 4 * own);
    assert_eq!(m.ema, 4 * own);
    assert_eq!(m.gradients, 4 * own);
    assert_eq!(m.optimizer_states, 1);
    assert_eq!(m.optimizer, 4 * own);
}

/// A tiny MAE whose activations can be counted by hand.
const TINY: &str = "data: synthetic { image_size = 8, channels = 1 }
view v { normalize {} }
network encoder: vit { patch = 4, dim = 8, depth = 1, heads = 2 }
network decoder: vit_decoder { dim = 8, depth = 1, heads = 2 }
graph {
  x = view(v)
  m = mask(encoder, ratio = 0.5)
  h = encoder(x, mask = m)
  y = decoder(h, mask = m)
  rec = mse(y, patchify(x, patch = 4), on = masked(m))
}
objective { rec = 1.0 }
optimizer: adamw { lr = 1e-3 }
train { epochs = 1, batch = 10 }
";

#[test]
fn activations_by_hand_and_linear_in_batch() {
    let p = plan(TINY);
    // Per block and token: 8d + 2h + heads·n with d = 8, h = 32.
    assert_eq!(block_activations_per_token(3, 8, 2, 4.0), 64 + 64 + 6);
    // Encoder: 2 of 4 patches visible + CLS = 3 tokens. Patch pixels 2·16 = 32; block
    // 3·134 = 402; final norm input 3·8 = 24; output 3·8 = 24. Total 482.
    // Decoder: 4 + 1 = 5 tokens. Block 5·(64 + 64 + 2·5) = 690; final norm input 5·8 = 40;
    // head input 4·8 = 32; output 4·16 = 64. Total 826. The target (patchify) is not kept.
    let m = memory(&p, None, Dtype::F32);
    assert_eq!(m.activations_per_image, 482 + 826);
    assert_eq!(m.activations, 1308 * 10 * 4);
    assert_eq!(memory(&p, None, Dtype::Bf16).activations, 1308 * 10 * 2);

    // Weights, gradients and AdamW's two moments do not depend on the batch; activations
    // grow linearly with it.
    let a = memory(&p, Some(64), Dtype::F32);
    let b = memory(&p, Some(128), Dtype::F32);
    assert_eq!(b.activations, 2 * a.activations);
    assert_eq!(
        (a.weights, a.gradients, a.optimizer),
        (b.weights, b.gradients, b.optimizer)
    );
    assert_eq!(a.optimizer, 2 * a.gradients);
    assert_eq!(b.total() - a.total(), a.activations);
}

#[test]
fn contrastive_similarity_scales_with_batch() {
    let text = "data: synthetic { image_size = 32, channels = 3 }
view v { normalize {} }
network encoder: vit { patch = 4, dim = 64, depth = 2, heads = 2 }
network projector: mlp { hidden = 128, out = 32 }
graph {
  z1 = projector(pool(encoder(view(v))))
  z2 = projector(pool(encoder(view(v))))
  nce = infonce(z1, z2)
}
objective { nce = 1.0 }
optimizer: adamw { lr = 1e-3 }
train { epochs = 1, batch = 256 }
";
    let p = plan(text);
    let nce = |b: u64| {
        step_cost_at(&p, b)
            .steps
            .iter()
            .find(|s| s.step == "nce")
            .map(|s| s.forward)
            .expect("nce step")
    };
    // (2B)² similarities of width 32: 2·4·256²·32 / 256 = 65,536 FLOPs per image, plus a
    // 3-FLOP softmax per logit: 3·4·256 = 3,072.
    assert_eq!(nce(256), 65_536.0 + 3_072.0);
    assert_eq!(nce(512), 2.0 * nce(256));
}

#[test]
fn report_on_the_can_spec() {
    let r = canc_compiler::resolve_path(Path::new("../specs/can.canspec"), &[]);
    let p = r.plans.first().expect("can.canspec compiles");
    let text = cost::report(p, None, Dtype::F32);
    // Encoder 6×192 on 24 of 49 patches + CLS, two views: 12·25·36,864 + 2·625·192 =
    // 11,299,200 per block, × 6 = 67,795,200, + embedding 24·16·192 = 73,728 → 67,868,928 MACs;
    // × 2 FLOPs × 2 calls = 271,475,712.
    assert!(text.contains("271.48 MFLOP"), "{text}");
    // Decoder 2×128: projection 25·192·128 = 614,400; blocks 2 × (12·50·16,384 + 2·2,500·128)
    // = 20,940,800; head 49·128·16 = 100,352; σ-MLP 128·128 + 128·128 = 32,768 →
    // 21,688,320 MACs; × 4 = 86,753,280.
    assert!(text.contains("86.75 MFLOP"), "{text}");
    assert!(text.contains("per step (x256)"), "{text}");
    assert!(
        text.contains("optimizer state (adamw: 2 per weight)"),
        "{text}"
    );
    // Its decoder is cheaper than its encoder: no warning.
    assert!(!text.contains("note:"), "{text}");
    // `--batch` replaces the spec's batch, and the run's step count with it:
    // floor(60,000 / 512) = 117 steps per epoch, × 50 epochs = 5,850.
    let text = cost::report(p, Some(512), Dtype::Bf16);
    assert!(text.contains("per step (x512)"), "{text}");
    assert!(text.contains("per run (5850 steps)"), "{text}");
    assert!(text.contains("activations in bf16"), "{text}");

    // The small-ViT trap: an 8×512 decoder after a masked ViT-S/16.
    let p = plan(&mae(224, 16, 384, 12, 6, Some(0.75)));
    let text = cost::report(&p, None, Dtype::F32);
    assert!(
        text.contains("note: the decoders cost more than the encoders"),
        "{text}"
    );
}
