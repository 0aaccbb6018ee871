#!/usr/bin/env bash
# Everything a fresh machine needs: Debian data packages, PyTorch, udml with its dev extras.
# Idempotent: re-running only checks what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

# Real offline data: Fashion-MNIST (IDX files), the Noto colour emoji font, emoji-test.txt;
# Chromium renders the HTML report in tests/test_report.py (headless); chromedriver lets
# tests/test_serve_browser.py drive it (Selenium) through udml serve's page; mate-backgrounds'
# photographs and ukui-wallpapers' renderings are what tests/test_verify.py edits and checks for
# copies (and what benchmarks/copies.py is made of).
apt_pkgs=(dataset-fashion-mnist fonts-noto-color-emoji unicode-data chromium chromium-driver
          mate-backgrounds ukui-wallpapers)
missing=()
for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: apt-get install ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
# On x86_64 Linux these two wheels lie on the build machines' disk (no multi-GB download);
# elsewhere pip picks a torch within pyproject's range.
if [ "$(uname -m)" = x86_64 ] && ! $PY -c "import torch, torchvision" 2>/dev/null; then
  echo "setup: pip install torch==2.14.1 torchvision==0.29.1" >&2
  $PY -m pip install -q torch==2.14.1 torchvision==0.29.1
fi
echo "setup: pip install -e '.[dev]'" >&2
$PY -m pip install -q -e '.[dev]'
echo "setup: done ($(udml --version))" >&2
