#!/usr/bin/env bash
# The standing GPU checks, run on a CUDA machine from the repository root with a binary built
# elsewhere by `cargo build --release --features cuda`:
#   1. `canc bench` of the CAN spec on the GPU in f32 and in bf16 (`train.precision = bf16`:
#      autocast matrix products, f32 master weights), and the PyTorch reference of the same
#      model (eager f32, eager bf16 autocast, torch.compile bf16) in the same call;
#   2. every method spec in specs/ trains on CUDA (`canc run --smoke --device cuda`).
# Results go to $OUT (default bench-out/). Environment:
#   BIN   the canc binary (default target-cuda/release/canc)
#   DATA  a folder with the Fashion-MNIST IDX .gz files (default: the spec's, the Debian path)
#   SKIP_SMOKE=1 skips step 2; BATCH (default 256), STEPS (default 10).
set -u
BIN=${BIN:-target-cuda/release/canc}
OUT=${OUT:-bench-out}
BATCH=${BATCH:-256}
STEPS=${STEPS:-10}
mkdir -p "$OUT"
SET=()
if [ -n "${DATA:-}" ]; then SET=(--set "data.path=\"$DATA\""); fi
chmod +x "$BIN" 2>/dev/null
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; } > "$OUT/machine.txt" 2>&1

echo "== canc bench CAN, batch $BATCH" | tee -a "$OUT/summary.txt"
timeout "${T_BENCH:-240}" "$BIN" bench specs/can.canspec --device cuda --batch "$BATCH" --steps "$STEPS" --warmup 3 \
  "${SET[@]}" > "$OUT/canc_can.txt" 2> "$OUT/canc_can.err"
echo "rc=$?" >> "$OUT/summary.txt"; cat "$OUT/canc_can.txt" >> "$OUT/summary.txt"

echo "== canc bench CAN bf16, batch $BATCH" | tee -a "$OUT/summary.txt"
timeout "${T_BENCH:-240}" "$BIN" bench specs/can.canspec --device cuda --batch "$BATCH" --steps "$STEPS" --warmup 3 \
  --set train.precision=bf16 "${SET[@]}" > "$OUT/canc_can_bf16.txt" 2> "$OUT/canc_can_bf16.err"
echo "rc=$?" >> "$OUT/summary.txt"; cat "$OUT/canc_can_bf16.txt" >> "$OUT/summary.txt"

for cfg in ${TORCH_CFGS:-"eager:f32" "eager:bf16" "compile:bf16"}; do
  set -- ${cfg/:/ }
  echo "== torch $1 $2, batch $BATCH" | tee -a "$OUT/summary.txt"
  timeout "${T_TORCH:-180}" python3 bench/reference.py --device cuda --batch "$BATCH" --steps "$STEPS" --warmup 3 \
    --mode "$1" --dtype "$2" > "$OUT/torch_$1_$2.txt" 2> "$OUT/torch_$1_$2.err"
  echo "rc=$?" >> "$OUT/summary.txt"; cat "$OUT/torch_$1_$2.txt" >> "$OUT/summary.txt"
done

if [ -z "${SKIP_SMOKE:-}" ]; then
  for spec in specs/*.canspec; do
    name=$(basename "$spec" .canspec)
    timeout "${T_SMOKE:-120}" "$BIN" run "$spec" --smoke --device cuda "${SET[@]}" --out "$OUT/runs/$name" \
      > "$OUT/smoke_$name.log" 2>&1
    echo "smoke $name rc=$? $(tail -1 "$OUT/smoke_$name.log")" | tee -a "$OUT/summary.txt"
    rm -rf "$OUT/runs/$name/checkpoints"
  done
fi
