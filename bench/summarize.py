#!/usr/bin/env python3
"""Summarise bench/gpu.sh's output: one line per run of results.jsonl, or with --kernels, the
device time per kernel name of a CubeCL kernel profile (kernels.txt or .gz), largest first.

    python3 bench/summarize.py OUT/results.jsonl
    python3 bench/summarize.py --kernels OUT/kernels.txt.gz
"""
import collections
import gzip
import json
import re
import sys


def runs(path: str) -> None:
    for line in open(path):
        r = json.loads(line)
        x = r.get("result") or {}

        def f(key: str, fmt: str = "{:.1f}") -> str:
            v = x.get(key)
            return "-" if v is None else fmt.format(v)

        mem = x.get("gpu_memory_mib") or x.get("peak_memory_mib")
        print(
            f"{r['name']:40s} rc={r['rc']:3d} wall={r['ms'] / 1000:6.1f}s "
            f"img/s={f('images_per_s', '{:7.0f}')} ms/step={f('ms_per_step_mean')} "
            f"data/fwd/bwd/opt={f('data_ms')}/{f('forward_ms')}/{f('backward_ms')}/"
            f"{f('optimizer_ms')} TFLOP/s={f('achieved_tflops', '{:.2f}')} "
            f"mem_MiB={'-' if mem is None else f'{mem:.0f}'}"
        )


def kernels(path: str) -> None:
    opener = gzip.open if path.endswith(".gz") else open
    unit = {"ns": 1e-3, "µs": 1.0, "ms": 1e3, "s": 1e6}
    total, count = collections.Counter(), collections.Counter()
    for line in opener(path, "rt"):
        parts = [p.strip() for p in line.strip().strip("|").split("|")]
        m = re.fullmatch(r"([\d.]+)(ns|µs|ms|s)", parts[0]) if parts else None
        if not m or len(parts) < 2:
            continue
        name = " | ".join(parts[1:-1] or parts[1:])[:80]
        total[name] += float(m.group(1)) * unit[m.group(2)]
        count[name] += 1
    print(f"{sum(total.values()) / 1e3:.1f} ms of device time in {sum(count.values())} launches")
    for name, us in total.most_common(25):
        print(f"{us / 1e3:9.2f} ms {count[name]:6d}  {name}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--kernels":
        kernels(sys.argv[2])
    elif len(sys.argv) == 2:
        runs(sys.argv[1])
    else:
        sys.exit(__doc__)
