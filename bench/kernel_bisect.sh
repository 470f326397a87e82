#!/usr/bin/env bash
# Which family of canc's GPU kernels makes training go wrong on a device (a NaN loss, an
# error): runs a short `canc bench` of each spec with all of canc's kernels, with none
# (CANC_CUBE_KERNELS=0), then with each family off in turn (CANC_CUBE_KERNELS_OFF=family) and
# prints one line per run. Run from the repository root on the device machine, with a binary
# built elsewhere by `cargo build --release --features cuda`.
# Environment:
#   BIN       the canc binary (default target-cuda/release/canc)
#   DATA      a folder with the Fashion-MNIST IDX .gz files (default: the spec's)
#   DEVICE    cuda (default), wgpu, or cpu for a dry run
#   SPECS     the specs to train (default: specs/mae.canspec specs/simclr.canspec)
#   BATCH (32), STEPS (8), LIMIT (40 s a run), DEADLINE (200 s: nothing new starts after it)
#   FAMILIES  the families to turn off one at a time (default: all of them)
# Output: stdout and $OUT/bisect.txt.
set -u
BIN=${BIN:-target-cuda/release/canc}
OUT=${OUT:-bench-out}
DEVICE=${DEVICE:-cuda}
SPECS=${SPECS:-specs/mae.canspec specs/simclr.canspec}
BATCH=${BATCH:-32}
STEPS=${STEPS:-8}
LIMIT=${LIMIT:-40}
DEADLINE=${DEADLINE:-200}
FAMILIES=${FAMILIES:-layer_norm batch_norm patch_norm l2norm contrastive patch_error gelu bias softmax heads flat adamw ema}
export CANC_KERNEL_CACHE=${CANC_KERNEL_CACHE:-/tmp/kernel_bisect_cache}
mkdir -p "$OUT"
START=$(date +%s)
SET=()
if [ -n "${DATA:-}" ]; then SET=(--set "data.path=\"$DATA\""); fi
chmod +x "$BIN" 2>/dev/null

# one LABEL VAR=VALUE: each spec's bench with that variable set.
one() {
  local label=$1 setting=$2 spec out rc what
  for spec in $SPECS; do
    if [ $(($(date +%s) - START)) -ge "$DEADLINE" ]; then
      echo "skip $label $spec (deadline)" | tee -a "$OUT/bisect.txt"
      continue
    fi
    out=$(env "$setting" timeout "$LIMIT" "$BIN" bench "$spec" --device "$DEVICE" \
      --batch "$BATCH" --steps "$STEPS" --warmup 1 --json "${SET[@]}" 2>&1)
    rc=$?
    what=$(printf '%s\n' "$out" | grep '^error' | tail -1 | cut -c1-120)
    [ -z "$what" ] && what=$(printf '%s\n' "$out" | grep -o '"images_per_s":[0-9.]*')
    printf '%-14s %-8s rc=%-3d %s\n' "$label" "$(basename "$spec" .canspec)" "$rc" "$what" \
      | tee -a "$OUT/bisect.txt"
  done
}

one all CANC_CUBE_KERNELS=1
one none CANC_CUBE_KERNELS=0
for f in $FAMILIES; do one "-$f" "CANC_CUBE_KERNELS_OFF=$f"; done
echo "total $(($(date +%s) - START))s" | tee -a "$OUT/bisect.txt"
