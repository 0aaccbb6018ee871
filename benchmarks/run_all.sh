#!/usr/bin/env bash
# Re-run every benchmark (about 25 min of speed benchmarks + about 2 h of quality runs on 2 cores).
# Prepares the two offline datasets the quality benchmark uses where they are not registered yet.
set -euo pipefail
cd "$(dirname "$0")/.."
registered() {
  udml dataset list --json | python3 -c "import json,sys; sys.exit('$1' not in json.load(sys.stdin)['datasets'])"
}
registered emoji || udml dataset prepare emoji --out data/emoji --yes
registered fashion-mnist || udml dataset prepare fashion-mnist --out data/fashion-mnist --limit 6000 --yes
python3 benchmarks/loss.py
python3 benchmarks/eval_sop.py
python3 benchmarks/kmeans.py
python3 benchmarks/pipeline.py --dataset emoji
python3 benchmarks/quality.py --datasets fashion-mnist emoji --seeds 0 1 2
