#!/usr/bin/env bash
# The GPU check of trial groups: one prepared script, about 10 minutes on one GPU (docs/benchmarks.md).
#
#   FSNET_DATA_DIR=/path/to/data OUT=gpu-check bash scripts/gpu_check.sh
#
# 1. env.json: torch, CUDA, the GPU.
# 2. bench_groups.json: member-steps per second of fsnet and ultra at G = 1, 8, 64, 256 against the
#    solo step on the GPU (eager; interleaved, as `python -m harness.bench --group-sizes` does).
# 3. ablate/: a short `harness.ablate` run of Ultra leave-one-out in groups of 8 seeds with
#    --gpus-per-trial 0.25, i.e. 4 groups on the one GPU at once; trials.parquet's device column says
#    where each member ran, and events.jsonl when each group started and ended (the overlap).
# Each step has its own time limit and the script goes on when one fails, so what was measured comes back.
# Needs a Python with a CUDA build of torch and the project's dependencies (PYTHON, default python3).
set -u
PY=${PYTHON:-python3}
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
status=0

"$PY" - > "$OUT/env.json" <<'EOF' || status=1
import json, torch
print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "available": torch.cuda.is_available(),
                  "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}))
EOF
cat "$OUT/env.json"

# 2. the bench (warm-up 1 epoch per runner: G=256 warms 256 members at once)
timeout 330 "$PY" -m harness.bench --device cuda --group-sizes 1 8 64 256 --presets fsnet ultra --steps 300 \
    --epochs 1 --json > "$OUT/bench_groups.json" 2> "$OUT/bench_groups.log" || status=1
tail -n 5 "$OUT/bench_groups.log"

# 3. four groups on one GPU
FSNET_TRIAL_EVENTS="$OUT/events.jsonl" timeout 240 "$PY" -m harness.ablate --space ultra --seeds 8 --group-size 8 \
    --gpus-per-trial 0.25 --cpus-per-trial 1 --max-steps 1000 --epochs 1 --wandb off --results "$OUT/ablate" \
    --experiment gpu-groups > "$OUT/ablate.log" 2>&1 || status=1
tail -n 15 "$OUT/ablate.log"
"$PY" - "$OUT" <<'EOF' || status=1
import json, sys
from pathlib import Path
import pandas as pd
out = Path(sys.argv[1])
trials = pd.read_parquet(out / "ablate" / "gpu-groups" / "trials.parquet")
events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
spans = {}
for e in events:
    if e["event"] in ("start", "end"):
        spans.setdefault(e["trial_id"], {})[e["event"]] = pd.Timestamp(e["time"])
starts = sorted(s["start"] for s in spans.values() if "start" in s)
ends = sorted(s["end"] for s in spans.values() if "end" in s)
most = max(sum(1 for s in spans.values() if s.get("start", t) <= t < s.get("end", t)) for t in starts) if starts else 0
print(json.dumps({"rows": len(trials), "devices": sorted(trials["device"].dropna().unique().tolist()),
                  "status": trials["status"].value_counts().to_dict(), "groups": int(trials["group_id"].nunique()),
                  "most_groups_at_once": most,
                  "mse_mean": float(trials["mse"].mean()), "trial_seconds_max": float(trials["trial_seconds"].max())}))
EOF
exit $status
