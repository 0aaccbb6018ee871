#!/usr/bin/env bash
# Re-run every benchmark (about 25 min of speed benchmarks, about 2 h of quality runs and about
# 75 min of copy detection on 2 cores).
# Prepares the three offline datasets the quality benchmark uses where they are not registered yet.
set -euo pipefail
cd "$(dirname "$0")/.."
registered() {
  udml dataset list --json | python3 -c "import json,sys; sys.exit('$1' not in json.load(sys.stdin)['datasets'])"
}
registered emoji || udml dataset prepare emoji --out data/emoji --yes
registered fashion-mnist || udml dataset prepare fashion-mnist --out data/fashion-mnist --limit 6000 --yes
if ! registered icons; then  # the icon themes are Debian packages the tests do not need
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get install -y -qq --no-install-recommends adwaita-icon-theme gnome-icon-theme \
    mate-icon-theme oxygen-icon-theme elementary-xfce-icon-theme tango-icon-theme >/dev/null
  udml dataset prepare icons --out data/icons --yes
fi
if ! registered glyphs; then  # a shape-identity probe: DejaVu styles (fonts-dejavu-core, -extra)
  python3 benchmarks/glyphs.py --out data/glyphs
  udml dataset add glyphs data/glyphs --yes
fi
python3 benchmarks/baselines.py --datasets emoji fashion-mnist icons glyphs
python3 benchmarks/whitening.py --datasets icons emoji fashion-mnist
python3 benchmarks/loss.py
python3 benchmarks/channels_last.py
python3 benchmarks/serve.py   # Debian chromium + chromium-driver (scripts/setup.sh)
python3 benchmarks/eval_sop.py
python3 benchmarks/kmeans.py
python3 benchmarks/pipeline.py --dataset emoji
python3 benchmarks/quality.py --datasets fashion-mnist emoji icons --seeds 0 1 2
python3 benchmarks/quality.py --datasets glyphs --seeds 0 1 2 --modes INV --template photos \
  --set train.eval_step=5 --name glyphs-photos
python3 benchmarks/quality.py --datasets glyphs --seeds 0 1 2 --modes UDML-SS --template drawings \
  --set train.eval_step=10 --name glyphs-drawings
# copy detection (mate-backgrounds + ukui-wallpapers from scripts/setup.sh; imagededup and imagehash:
# pip install -e '.[bench]'): about 45 min with the copies recipe's training, then 6 + 25 min
python3 benchmarks/copies.py --variants last copies
python3 benchmarks/calibration_draws.py
python3 benchmarks/calibration_cost.py --sizes 2000 10000
