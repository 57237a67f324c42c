#!/usr/bin/env bash
# Tune the online phase's learning rate on the validation stream (online_split=val), per protocol.
#
#   bash scripts/tune_online_lr.sh [OUT] [PRESETS] [DELAYS] [LRS]
#
# For each preset, feedback delay and online_lr ("ref" = the reference: the rate warm-up leaves),
# runs seeds 100-103 as one trial group over the validation windows (never the test stream) and
# writes one JSON line per member to OUT/<preset>-d<delay>-lr<lr>.jsonl. A preset written
# "P+revin" is P with the `revin` knob on (instance normalisation of the input window). A file
# that exists is skipped, so the script resumes where it stopped. Summarise with
#   python scripts/summarize_online_lr.py OUT
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/results/online-lr-val}
presets=${2:-"ogd fsnet"}
delays=${3:-"12 0"}
lrs=${4:-"ref 1e-3 1e-4 1e-5 1e-6"}
py=${PYTHON:-.venv/bin/python}
mkdir -p "$out"
for delay in $delays; do
  for preset in $presets; do
    for lr in $lrs; do
      file="$out/$preset-d$delay-lr$lr.jsonl"
      [ -s "$file" ] && continue
      sets=()
      [ "$lr" != ref ] && sets+=(--set "online_lr=$lr")
      [ "${preset%+revin}" != "$preset" ] && sets+=(--set revin=true)
      echo "$(date -u +%FT%T) $preset delay $delay online_lr $lr"
      "$py" -m harness.trial --preset "${preset%+revin}" --seeds 100-103 --set online_split=val \
          --set "feedback_delay=$delay" "${sets[@]}" --threads 1 --json > "$file.part"
      mv "$file.part" "$file"
    done
  done
done
