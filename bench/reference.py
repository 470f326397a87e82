#!/usr/bin/env python3
"""PyTorch reference of canc's CAN training step, for throughput comparison only.

The model and step are the ones `specs/can.canspec` compiles to (see `canc compile` and
`canc cost`): a ViT encoder (MAE-style, masked patches dropped before the blocks), a
σ-conditioned MAE decoder and an MLP projector, applied to two noisy, 50 %-masked views; loss
0.03 InfoNCE + 0.67 MAE (masked patches, per-patch normalised target) + 0.3 noise prediction
(visible patches); AdamW with decay / no-decay groups. Input images are synthetic (random
tensors); canc's `bench` also augments real images, which costs it about 0.1 % of a step.

Reports images/s and ms/step (mean and median over the timed steps after warm-up) split into
data / forward / backward / optimizer, like `canc bench`. canc never depends on this file.

    python bench/reference.py --batch 64 --steps 5 --warmup 2 --threads 2
    python bench/reference.py --model vit_b16_224 --device cuda --mode compile --dtype bf16
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the encoder, decoder and projector; defaults are `specs/can.canspec`."""

    image: int = 28
    channels: int = 1
    patch: int = 4
    dim: int = 192
    depth: int = 6
    heads: int = 3
    mlp_ratio: float = 4.0
    dec_dim: int = 128
    dec_depth: int = 2
    dec_heads: int = 4
    cond_dim: int = 128
    proj_hidden: int = 192
    proj_out: int = 128
    mask_ratio: float = 0.5
    sigma_max: float = 0.05
    temperature: float = 0.1
    lr: float = 2.5e-4  # scaled by batch / 256 (lr_scaling = linear)
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.05

    @property
    def grid(self) -> int:
        return (self.image // self.patch) ** 2

    @property
    def kept(self) -> int:
        # The compiler's rule: floor(grid · (1 − ratio)) positions stay visible.
        return math.floor(self.grid * (1.0 - self.mask_ratio))

    @property
    def pixels(self) -> int:
        return self.patch * self.patch * self.channels


MODELS = {
    "can": ModelConfig(),
    # ViT-S/4 at 32 px (64 patches) with a 4×256 decoder (8 heads), 3 channels; for GPU runs.
    # `bench/specs/vit_s4_32.canspec` is the same model in canc.
    "vit_s4_32": ModelConfig(
        image=32,
        channels=3,
        patch=4,
        dim=384,
        depth=12,
        heads=6,
        dec_dim=256,
        dec_depth=4,
        dec_heads=8,
        proj_hidden=384,
    ),
    # ViT-B/16 at 224 px with MAE's 8×512 decoder (16 heads), 3 channels; for GPU runs.
    "vit_b16_224": ModelConfig(
        image=224,
        channels=3,
        patch=16,
        dim=768,
        depth=12,
        heads=12,
        dec_dim=512,
        dec_depth=8,
        dec_heads=16,
        proj_hidden=768,
    ),
}


# ---------------------------------------------------------------------------------------------
# Model


def sincos_1d(pos: torch.Tensor, width: int) -> torch.Tensor:
    """MAE's 1-D sin-cos embedding: [sin(pos·ω_k)…, cos(pos·ω_k)…], ω_k = 10000^(−k/(w/2))."""
    half = width // 2
    omega = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float64) / half)
    out = pos.double()[:, None] * omega[None, :]
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_2d(dim: int, side: int, cls: bool) -> torch.Tensor:
    """MAE's get_2d_sincos_pos_embed: [1, cls + side², dim], column half first, CLS row zeros."""
    m = torch.arange(side * side)
    row, col = m // side, m % side
    table = torch.cat([sincos_1d(col, dim // 2), sincos_1d(row, dim // 2)], dim=1)
    if cls:
        table = torch.cat([torch.zeros(1, dim, dtype=table.dtype), table], dim=0)
    return table.float()[None]


def sigma_embedding(sigma: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of σ [B] → [B, dim], ω_k = exp(−ln(10⁴)·k/(h−1)) (canc's pos.rs)."""
    h = dim // 2
    k = torch.arange(h, device=sigma.device, dtype=torch.float32)
    omega = torch.exp(-math.log(10000.0) * k / max(h - 1, 1))
    args = sigma[:, None].float() * omega[None, :]
    parts = [args.sin(), args.cos()]
    if dim % 2:
        parts.append(torch.zeros_like(args[:, :1]))
    return torch.cat(parts, dim=1)


def xavier_linear(d_in: int, d_out: int) -> nn.Linear:
    lin = nn.Linear(d_in, d_out)
    nn.init.xavier_uniform_(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


def patchify(images: torch.Tensor, p: int) -> torch.Tensor:
    """[B, C, H, W] → [B, (H/p)(W/p), p·p·C], pixels in (p1 p2 c) order (MAE)."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


class Block(nn.Module):
    """Pre-norm ViT block (timm): x + attn(ln1 x); x + mlp(ln2 x); exact GELU; LN eps 1e-6."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = xavier_linear(dim, 3 * dim)
        self.proj = xavier_linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = xavier_linear(dim, hidden)
        self.fc2 = xavier_linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.heads
        qkv = self.qkv(self.norm1(x)).reshape(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        x = x + self.proj(o.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class Vit(nn.Module):
    """ViT encoder: Linear patch embedding, fixed sin-cos positions, CLS, masked patches dropped."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.dim
        self.patch = cfg.patch
        self.patch_embed = xavier_linear(cfg.pixels, d)
        self.cls_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.register_buffer("pos", sincos_2d(d, cfg.image // cfg.patch, True), persistent=False)
        hidden = round(d * cfg.mlp_ratio)
        self.blocks = nn.ModuleList(Block(d, cfg.heads, hidden) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d, eps=1e-6)

    def forward(self, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(patchify(images, self.patch)) + self.pos[:, 1:]
        b, _, d = x.shape
        x = torch.gather(x, 1, keep[:, :, None].expand(-1, -1, d))
        cls = (self.cls_token + self.pos[:, :1]).expand(b, -1, -1)
        x = torch.cat([cls, x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


class Decoder(nn.Module):
    """MAE decoder conditioned on σ: embed, mask tokens in the holes, positions, + MLP(emb(σ))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.dec_dim
        self.grid = cfg.grid
        self.cond_dim = cfg.cond_dim
        self.embed = xavier_linear(cfg.dim, d)
        self.mask_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.register_buffer("pos", sincos_2d(d, cfg.image // cfg.patch, True), persistent=False)
        self.cond_fc1 = xavier_linear(cfg.cond_dim, d)
        self.cond_fc2 = xavier_linear(d, d)
        hidden = round(d * cfg.mlp_ratio)
        self.blocks = nn.ModuleList(Block(d, cfg.dec_heads, hidden) for _ in range(cfg.dec_depth))
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.head = xavier_linear(d, cfg.pixels)

    def forward(self, tokens: torch.Tensor, keep: torch.Tensor, sigma: torch.Tensor):
        x = self.embed(tokens)
        b, _, d = x.shape
        full = self.mask_token.expand(b, self.grid, d).to(x.dtype)
        full = full.scatter(1, keep[:, :, None].expand(-1, -1, d), x[:, 1:])
        x = torch.cat([x[:, :1], full], dim=1) + self.pos
        cond = self.cond_fc2(F.gelu(self.cond_fc1(sigma_embedding(sigma, self.cond_dim))))
        x = x + cond[:, None, :]
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x)[:, 1:])


class Projector(nn.Module):
    """2-layer MLP, ReLU, PyTorch's default Linear initialisation (canc's `mlp`)."""

    def __init__(self, d_in: int, hidden: int, out: int):
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class Can(nn.Module):
    def __init__(self, cfg: ModelConfig, batch_views: bool = False):
        super().__init__()
        self.cfg = cfg
        self.batch_views = batch_views
        self.encoder = Vit(cfg)
        self.decoder = Decoder(cfg)
        self.projector = Projector(cfg.dim, cfg.proj_hidden, cfg.proj_out)

    def forward(self, x1, x2, noise1, noise2, sigma1, sigma2, keep1, keep2, masked1, masked2):
        """The loss of one step (canc's plan for can.canspec, step by step)."""
        cfg = self.cfg
        ys, zs = [], []
        if self.batch_views:
            # Both views through each network in one call (canc's batched calls).
            keep = torch.cat([keep1, keep2])
            h = self.encoder(torch.cat([x1 + noise1, x2 + noise2]), keep)
            zs = list(self.projector(h.mean(dim=1)).chunk(2))
            ys = list(self.decoder(h, keep, torch.cat([sigma1, sigma2])).chunk(2))
        else:
            for x, noise, sigma, keep in ((x1, noise1, sigma1, keep1), (x2, noise2, sigma2, keep2)):
                h = self.encoder(x + noise, keep)
                zs.append(self.projector(h.mean(dim=1)))  # pool mode = mean_all (CLS included)
                ys.append(self.decoder(h, keep, sigma))
        nce = infonce(zs[0].float(), zs[1].float(), cfg.temperature)
        mae = 0.5 * sum(
            masked_mse(y.float(), patch_norm(patchify(x, cfg.patch)), m)
            for y, x, m in ((ys[0], x1, masked1), (ys[1], x2, masked2))
        )
        denoise = 0.5 * sum(
            masked_mse(y.float(), patchify(n, cfg.patch), 1.0 - m)
            for y, n, m in ((ys[0], noise1, masked1), (ys[1], noise2, masked2))
        )
        return 0.03 * nce + 0.67 * mae + 0.3 * denoise


def infonce(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """NT-Xent over 2N rows, mean over anchors; self-similarity masked with a finite logit."""
    n = a.shape[0]
    z = F.normalize(torch.cat([a, b], dim=0), dim=1, eps=1e-12)
    logits = z @ z.t() / tau
    eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(eye, -(1.0 / tau + 1.0e4))
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return -F.log_softmax(logits, dim=1).gather(1, positive[:, None]).mean()


def patch_norm(p: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    mean = p.mean(dim=-1, keepdim=True)
    var = p.var(dim=-1, keepdim=True)  # unbiased, as MAE's norm_pix_loss
    return (p - mean) / (var + eps).sqrt()


def masked_mse(pred: torch.Tensor, target: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
    per_patch = ((pred - target) ** 2).mean(dim=-1)
    return (per_patch * select).sum() / select.sum().clamp_min(torch.finfo(torch.float32).tiny)


def param_groups(model: Can, weight_decay: float):
    """MAE's rule (and canc's): no weight decay for 1-D tensors (biases, norms) and tokens."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith("_token") else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def param_counts(model: Can) -> dict[str, dict[str, int]]:
    out = {}
    for net in ("encoder", "decoder", "projector"):
        d = n = 0
        for name, p in getattr(model, net).named_parameters():
            if p.ndim <= 1 or name.endswith("_token"):
                n += p.numel()
            else:
                d += p.numel()
        out[net] = {"decay": d, "no_decay": n, "total": d + n}
    return out


def train_flops_per_image(cfg: ModelConfig, batch: int) -> float:
    """canc cost's model FLOPs: 2 × multiply-adds of the matrix products, masked tokens skipped,
    backward = 2 × forward; two views. Elementwise ops are not counted (canc counts the InfoNCE
    matmul too, under 0.1 % of the total)."""
    d, dd, n, g = cfg.dim, cfg.dec_dim, cfg.kept + 1, cfg.grid
    hid, dhid = round(d * cfg.mlp_ratio), round(dd * cfg.mlp_ratio)
    enc = cfg.depth * ((4 * d * d + 2 * d * hid) * n + 2 * n * n * d) + cfg.kept * cfg.pixels * d
    gd = g + 1
    dec = cfg.dec_depth * ((4 * dd * dd + 2 * dd * dhid) * gd + 2 * gd * gd * dd)
    dec += n * d * dd + g * dd * cfg.pixels + cfg.cond_dim * dd + dd * dd
    proj = d * cfg.proj_hidden + cfg.proj_hidden * cfg.proj_out
    nce = 4 * batch * cfg.proj_out  # (2B)² · out MACs per step, per image
    macs = 2 * (enc + dec + proj) + nce
    return 2.0 * macs * 3.0


# ---------------------------------------------------------------------------------------------
# Benchmark


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_batch(cfg: ModelConfig, batch: int, device: torch.device, gen: torch.Generator):
    """Two synthetic views, their noise (σ ~ U(0, σ_max) per image) and random masks."""
    shape = (batch, cfg.channels, cfg.image, cfg.image)
    out = {}
    for v in ("1", "2"):
        out["x" + v] = torch.randn(shape, generator=gen).to(device, non_blocking=True)
        sigma = torch.rand(batch, generator=gen) * cfg.sigma_max
        eps = torch.randn(shape, generator=gen)
        out["noise" + v] = (sigma[:, None, None, None] * eps).to(device, non_blocking=True)
        out["sigma" + v] = sigma.to(device, non_blocking=True)
        order = torch.rand(batch, cfg.grid, generator=gen).argsort(dim=1)
        keep = order[:, : cfg.kept].sort(dim=1).values
        masked = torch.ones(batch, cfg.grid).scatter_(1, keep, 0.0)
        out["keep" + v] = keep.to(device, non_blocking=True)
        out["masked" + v] = masked.to(device, non_blocking=True)
    return out


def run(args: argparse.Namespace) -> dict:
    cfg = MODELS[args.model]
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = Can(cfg, args.batch_views).to(device)
    counts = param_counts(model)
    opt = torch.optim.AdamW(
        param_groups(model, cfg.weight_decay),
        lr=cfg.lr * args.batch / 256,
        betas=cfg.betas,
        eps=1e-8,
        fused=device.type == "cuda" or None,
    )
    loss_fn = model
    if args.mode == "compile":
        loss_fn = torch.compile(model)
    amp_dtype = torch.bfloat16 if args.dtype == "bf16" else None

    def step() -> dict:
        t0 = time.perf_counter()
        b = make_batch(cfg, args.batch, device, gen)
        sync(device)
        t1 = time.perf_counter()
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = loss_fn(**b)
        sync(device)
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sync(device)
        t3 = time.perf_counter()
        opt.step()
        sync(device)
        t4 = time.perf_counter()
        return {
            "seconds": t4 - t0,
            "data": t1 - t0,
            "forward": t2 - t1,
            "backward": t3 - t2,
            "optimizer": t4 - t3,
            "loss": float(loss.detach()),
        }

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        step()
    logs = [step() for _ in range(args.steps)]
    n = len(logs)
    secs = sorted(l["seconds"] for l in logs)
    mean = sum(secs) / n
    flops = train_flops_per_image(cfg, args.batch) * args.batch
    result = {
        "model": args.model,
        "device": str(device),
        "mode": args.mode,
        "dtype": args.dtype,
        "batch_views": args.batch_views,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "ms_per_step_mean": mean * 1e3,
        "ms_per_step_median": secs[n // 2] * 1e3,
        "images_per_s": args.batch / mean,
        **{f"{k}_ms": sum(l[k] for l in logs) / n * 1e3 for k in ("data", "forward", "backward", "optimizer")},
        "train_flop_per_step": flops,
        "achieved_tflops": flops / mean / 1e12,
        "last_loss": logs[-1]["loss"],
        "params": counts,
    }
    if device.type == "cuda":
        result["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def canc_param_counts(canc: str, spec: str) -> dict[str, dict[str, int]]:
    """Per-network (decay, no_decay) counts from `canc compile SPEC`'s plan (RON text)."""
    text = subprocess.run([canc, "compile", spec], check=True, capture_output=True, text=True).stdout
    pat = re.compile(r'name: "(\w+)",\s*kind: \w+,.*?params: \(\s*decay: (\d+),\s*no_decay: (\d+)', re.S)
    return {m[1]: {"decay": int(m[2]), "no_decay": int(m[3]), "total": int(m[2]) + int(m[3])}
            for m in pat.finditer(text)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="can")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--mode", choices=["eager", "compile"], default="eager")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32", help="bf16: autocast")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--batch-views",
        action="store_true",
        help="run both views through each network in one call, as canc's batched calls do",
    )
    ap.add_argument("--json", action="store_true", help="one JSON object instead of text")
    ap.add_argument(
        "--check-canc",
        metavar="CANC",
        help="compare parameter counts with `CANC compile --spec` (can model only); exit 1 if they differ",
    )
    ap.add_argument("--spec", default="specs/can.canspec", help="spec for --check-canc")
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error("--steps must be at least 1")

    if args.check_canc:
        want = canc_param_counts(args.check_canc, args.spec)
        got = param_counts(Can(MODELS[args.model]))
        ok = True
        for net, g in got.items():
            w = want.get(net)
            same = w == g
            ok &= same
            print(f"{net:<10} reference {g}  canc {w}  {'ok' if same else 'DIFFERENT'}")
        return 0 if ok else 1

    r = run(args)
    if args.json:
        print(json.dumps(r))
        return 0
    print(
        f"reference `{r['model']}` on {r['device']} ({r['threads']} threads, torch {r['torch']}, "
        f"{r['mode']}, {r['dtype']}{', views batched' if r['batch_views'] else ''}): batch {r['batch']}, {r['steps']} timed steps after "
        f"{r['warmup']} warm-up"
    )
    print(f"  {r['images_per_s']:.1f} images/s   {r['ms_per_step_mean']:.1f} ms/step mean, "
          f"{r['ms_per_step_median']:.1f} median")
    for k in ("data", "forward", "backward", "optimizer"):
        v = r[f"{k}_ms"]
        print(f"  {k:<10} {v:>9.1f} ms  {100 * v / r['ms_per_step_mean']:>5.1f}%")
    print(f"  model FLOPs {r['train_flop_per_step'] / 1e9:.2f} GFLOP/step (canc cost's formula), "
          f"achieved {r['achieved_tflops'] * 1e3:.1f} GFLOP/s")
    if "peak_memory_mib" in r:
        print(f"  peak memory {r['peak_memory_mib']:.0f} MiB")
    for net, c in r["params"].items():
        print(f"  params {net:<10} {c['total']:>10,} (decay {c['decay']:,}, no decay {c['no_decay']:,})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
