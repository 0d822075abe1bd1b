#!/usr/bin/env bash
# Sets up (scripts/setup.sh), then runs the main job: Deep Compression of LeNet-300-100
# on real Fashion-MNIST (train, prune/retrain, share, Huffman-code, reload, evaluate).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/zylax compress --net lenet300 --data fashion_mnist --out runs/main/lenet300.zyl --report runs/main/report.json "$@"
