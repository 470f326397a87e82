#!/usr/bin/env bash
# The standing GPU checks, run on a CUDA machine from the repository root with a binary built
# elsewhere by `cargo build --release --features cuda`. In priority order (a deadline skips
# whatever is left, so the first items are the ones that always come back):
#   1. `canc bench` of specs/can.canspec in f32 and the PyTorch reference of the same model
#      (eager f32, eager bf16 autocast, eager f32 with both views in one call); the f32 bench
#      again with a warm kernel cache, and warm with Burn's ops in place of canc's CubeCL
#      kernels (CANC_CUBE_KERNELS=0; MoCo v3 too, both ways); canc in bf16; once more under
#      CubeCL's per-kernel profile (kernel launches and device time per step);
#   2. every method spec in specs/ trains on CUDA (`canc run --smoke --device cuda`);
#   3. a ViT-S/4 at 32 px (bench/specs/vit_s4_32.canspec) and a ViT-B/16 at 224 px
#      (bench/specs/vit_b16_224.canspec), canc and PyTorch eager, each in f32 and bf16;
#   4. ablations of the warm CAN run: Burn's per-tensor AdamW (CANC_FLAT_ADAMW=0), Burn's
#      autodiff for LayerNorm, attention and GELU (CANC_FUSED_OPS=0), each view's network calls
#      one by one (CANC_BATCH_CALLS=0); the reference's batched-views runs of the two models;
#   5. torch.compile bf16 of the ViT-S/4, CAN and ViT-B/16 models.
# Output (few files, as the device tool returns at most 8): $OUT/results.jsonl (one JSON object
# per run: name, rc, wall ms, the tool's own JSON), $OUT/log.txt, $OUT/machine.txt,
# $OUT/kernels.txt.gz (the kernel profile's raw tables).
# Environment:
#   BIN       the canc binary (default target-cuda/release/canc)
#   DATA      a folder with the Fashion-MNIST IDX .gz files (default: the spec's, the Debian path)
#   DEVICE    cuda (default) or cpu, for a dry run of this script on a machine without a GPU
#   DEADLINE  seconds after which nothing new starts (default 540)
#   STEPS (10), WARMUP (3), B_CAN (256), B_S (256), B_B (128): timed steps, warm-up, batches
#   ONLY      a regex of run names to keep (e.g. 'canc_|torch_can'); SKIP_SMOKE=1
# The machine is bare (no CUDA kernel cache, no Inductor cache), so the limits below include JIT
# compilation: on an H200, torch.compile of the ViT-S/4 model took over 100 s, and a canc built
# with `--features cuda-fusion` over 235 s (BENCHMARKS.md). canc keeps compiled kernels and
# autotune results in $CANC_KERNEL_CACHE (set below to a fresh folder): canc_can_f32_warm
# repeats canc_can_f32 with that cache filled, and the two runs' wall times ("ms") show what
# the cache saves at start-up. canc's bench prints each step's time on stderr, which log.txt
# keeps, so a run cut off shows how far it got.
set -u
BIN=${BIN:-target-cuda/release/canc}
OUT=${OUT:-bench-out}
DEVICE=${DEVICE:-cuda}
DEADLINE=${DEADLINE:-540}
STEPS=${STEPS:-10}
WARMUP=${WARMUP:-3}
PY=${PY:-python3}
mkdir -p "$OUT"
export CANC_KERNEL_CACHE=${CANC_KERNEL_CACHE:-/tmp/gpu_sh_kernel_cache}
rm -rf "$CANC_KERNEL_CACHE"
START=$(date +%s)
SET=()
if [ -n "${DATA:-}" ]; then SET=(--set "data.path=\"$DATA\""); fi
chmod +x "$BIN" 2>/dev/null
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1;
  "$PY" -c 'import torch; print("torch", torch.__version__)' 2>&1; nproc; } > "$OUT/machine.txt"

# rec NAME LIMIT CMD...: runs CMD (which prints one JSON object) under `timeout`, appends
# {"name", "rc", "ms", "result"} to results.jsonl and the stderr tail to log.txt.
rec() {
  local name=$1 limit=$2; shift 2
  if [ -n "${ONLY:-}" ] && ! [[ $name =~ $ONLY ]]; then return; fi
  local left=$((DEADLINE - ($(date +%s) - START)))
  if [ "$left" -lt 15 ]; then echo "skip $name (deadline)" | tee -a "$OUT/log.txt"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t0 out rc
  t0=$(date +%s%N)
  out=$(timeout "$limit" "$@" 2> /tmp/gpu_sh_err)
  rc=$?
  local dt=$(( ($(date +%s%N) - t0) / 1000000 ))
  local result
  result=$(printf '%s\n' "$out" | grep '^{' | tail -1)
  [ -z "$result" ] && result=null
  printf '{"name": "%s", "rc": %d, "ms": %d, "result": %s}\n' "$name" "$rc" "$dt" "$result" \
    >> "$OUT/results.jsonl"
  { echo "== $name rc=$rc ${dt}ms"; tail -c 1500 /tmp/gpu_sh_err; } >> "$OUT/log.txt"
  echo "$name rc=$rc ${dt}ms"
}

canc() { # canc NAME LIMIT SPEC BATCH [extra args]
  local name=$1 limit=$2 spec=$3 batch=$4; shift 4
  rec "$name" "$limit" "$BIN" bench "$spec" --device "$DEVICE" --batch "$batch" --steps "$STEPS" \
    --warmup "$WARMUP" --json "$@"
}
torch() { # torch NAME LIMIT MODEL BATCH MODE DTYPE [extra args, e.g. --batch-views]
  local name=$1 limit=$2 model=$3 batch=$4 mode=$5 dtype=$6; shift 6
  rec "$name" "$limit" "$PY" bench/reference.py --model "$model" --device "$DEVICE" \
    --batch "$batch" --steps "$STEPS" --warmup "$WARMUP" --mode "$mode" --dtype "$dtype" --json "$@"
}

B_CAN=${B_CAN:-256}
canc canc_can_f32 120 specs/can.canspec "$B_CAN" "${SET[@]}"
torch torch_can_eager_f32 45 can "$B_CAN" eager f32
torch torch_can_eager_bf16 45 can "$B_CAN" eager bf16
# canc runs both views through each network in one call (the plan's batched calls); the
# reference does the same with --batch-views, so both ways of writing the step are measured.
torch torch_can_eager_f32_batched 45 can "$B_CAN" eager f32 --batch-views
canc canc_can_f32_warm 120 specs/can.canspec "$B_CAN" "${SET[@]}"
# With Burn's tensor ops in place of canc's own CubeCL kernels (LayerNorm, GELU, softmax,
# heads, biases, losses, flat-buffer layout, AdamW, EMA: 1,379 launches per CAN step against
# 524, counted on wgpu), for what the kernels are worth in time; MoCo v3 (BatchNorm, EMA
# teacher: 2,216 against 537) both ways too.
CANC_CUBE_KERNELS=0 canc canc_can_f32_warm_burn_ops 120 specs/can.canspec "$B_CAN" "${SET[@]}"
canc canc_mocov3_f32_warm 120 specs/mocov3.canspec "$B_CAN" "${SET[@]}"
CANC_CUBE_KERNELS=0 canc canc_mocov3_f32_warm_burn_ops 120 specs/mocov3.canspec "$B_CAN" "${SET[@]}"
canc canc_can_bf16 120 specs/can.canspec "$B_CAN" --set train.precision=bf16 "${SET[@]}"
# Kernel launches per step and device time per kernel (CubeCL times each kernel, so this run's
# step times are not throughput): its JSON's "kernels" field; the raw tables in kernels.txt.gz.
if [ "$DEVICE" != cpu ]; then
  rec canc_can_kernels 90 "$BIN" bench specs/can.canspec --device "$DEVICE" --batch "$B_CAN" \
    --steps 2 --warmup 1 --json --kernel-profile /tmp/gpu_sh_kernels.txt "${SET[@]}"
  [ -f /tmp/gpu_sh_kernels.txt ] && gzip -c /tmp/gpu_sh_kernels.txt > "$OUT/kernels.txt.gz"
fi

# Every method spec trains on CUDA with canc's kernels (finite losses, a resumed run that
# reproduces the first): before the throughput models, as correctness comes first.
if [ -z "${SKIP_SMOKE:-}" ]; then
  for spec in specs/*.canspec; do
    name=$(basename "$spec" .canspec)
    [ -n "${ONLY:-}" ] && ! [[ smoke_$name =~ $ONLY ]] && continue
    left=$((DEADLINE - ($(date +%s) - START)))
    if [ "$left" -lt 20 ]; then echo "skip smoke_$name (deadline)" | tee -a "$OUT/log.txt"; continue; fi
    limit=45; [ "$limit" -gt "$left" ] && limit=$left
    timeout "$limit" "$BIN" run "$spec" --smoke --device "$DEVICE" "${SET[@]}" \
      --out "/tmp/gpu_sh_runs/$name" > /tmp/gpu_sh_smoke 2>&1
    rc=$?
    echo "smoke $name rc=$rc $(tail -1 /tmp/gpu_sh_smoke)" | tee -a "$OUT/log.txt"
    [ "$rc" -ne 0 ] && tail -c 1500 /tmp/gpu_sh_smoke >> "$OUT/log.txt"
  done
fi

# The throughput models: canc's kernels run in f32, so each is measured in f32 and bf16 beside
# PyTorch eager in the same precision.
B_S=${B_S:-256}
canc canc_vit_s4_32_f32 90 bench/specs/vit_s4_32.canspec "$B_S"
torch torch_vit_s4_32_eager_f32 45 vit_s4_32 "$B_S" eager f32
canc canc_vit_s4_32_bf16 120 bench/specs/vit_s4_32.canspec "$B_S" --set train.precision=bf16
torch torch_vit_s4_32_eager_bf16 45 vit_s4_32 "$B_S" eager bf16

B_B=${B_B:-128}
canc canc_vit_b16_224_bf16 150 bench/specs/vit_b16_224.canspec "$B_B" --set train.precision=bf16
torch torch_vit_b16_224_eager_bf16 50 vit_b16_224 "$B_B" eager bf16
canc canc_vit_b16_224_f32 120 bench/specs/vit_b16_224.canspec "$B_B"
torch torch_vit_b16_224_eager_f32 50 vit_b16_224 "$B_B" eager f32

# Ablations of canc's step, each the warm CAN run with one thing switched back: Burn's
# per-tensor AdamW (CANC_FLAT_ADAMW=0; 116 tensors), LayerNorm's, attention's and GELU's
# gradients from Burn's autodiff (CANC_FUSED_OPS=0), each view's network calls one by one
# (CANC_BATCH_CALLS=0).
CANC_FLAT_ADAMW=0 canc canc_can_f32_warm_per_tensor_adamw 120 specs/can.canspec "$B_CAN" "${SET[@]}"
CANC_FUSED_OPS=0 canc canc_can_f32_warm_autodiff_ln_attn 120 specs/can.canspec "$B_CAN" "${SET[@]}"
CANC_BATCH_CALLS=0 canc canc_can_f32_warm_unbatched 120 specs/can.canspec "$B_CAN" "${SET[@]}"
torch torch_vit_s4_32_eager_bf16_batched 45 vit_s4_32 "$B_S" eager bf16 --batch-views
torch torch_vit_b16_224_eager_bf16_batched 50 vit_b16_224 "$B_B" eager bf16 --batch-views

# torch.compile last: on a bare machine its compilation takes minutes.
torch torch_vit_s4_32_compile_bf16 150 vit_s4_32 "$B_S" compile bf16
torch torch_can_compile_bf16 90 can "$B_CAN" compile bf16
torch torch_vit_b16_224_compile_bf16 180 vit_b16_224 "$B_B" compile bf16
echo "total $(( $(date +%s) - START ))s" | tee -a "$OUT/log.txt"
