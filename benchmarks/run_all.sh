#!/usr/bin/env bash
# Re-run every benchmark (about 25 min of speed benchmarks + about 1 h of quality runs on 2 cores).
# Needs the demo datasets: scripts/demo.sh prepares Fashion-MNIST; emoji is prepared here.
set -euo pipefail
cd "$(dirname "$0")/.."
udml dataset list --json | python3 -c "import json,sys; sys.exit('emoji' not in json.load(sys.stdin)['datasets'])" \
  || udml dataset prepare emoji --out data/emoji --yes
python3 benchmarks/loss.py
python3 benchmarks/eval_sop.py
python3 benchmarks/kmeans.py
python3 benchmarks/pipeline.py --dataset emoji
python3 benchmarks/quality.py --datasets fashion-mnist emoji --seeds 0 1 2
