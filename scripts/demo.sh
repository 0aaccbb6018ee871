#!/usr/bin/env bash
# The one-command demo: set-up, a real offline dataset, the pretrained start, UDML-SS training on
# CPU, evaluation on classes never seen in training, and one table: start vs UDML-SS.
# Dataset: cross-vendor emoji (the same emoji drawn by Twemoji, OpenMoji and Noto is one class;
# training on the first half of the emoji list, evaluation on the second half).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
./scripts/setup.sh
t1=$(date +%s)
DATA=${DATA:-data/emoji}
RUN=${RUN:-runs/demo}
CONFIG=templates/demo.toml
mkdir -p "$RUN"

udml dataset prepare emoji --out "$DATA" --yes
udml dataset check "$DATA"
udml eval --config "$CONFIG" --backbone efficientnet_lite0 --weights imagenet \
  --dataset "$DATA" --json > "$RUN/start.json"
# the start and the end are scored by the eval lines around it (train.final_eval would repeat them)
udml train --config "$CONFIG" --dataset "$DATA" --out "$RUN" --yes --set train.final_eval=false
udml eval "$RUN/last.pt" --json > "$RUN/udml-ss.json"
udml report "$RUN"
t2=$(date +%s)
python3 scripts/demo_table.py "$RUN/start.json" "$RUN/udml-ss.json"
echo "set-up $((t1 - t0)) s, demo $((t2 - t1)) s, total $((t2 - t0)) s" >&2
echo "report: $RUN/report.html (open it in a browser)" >&2
