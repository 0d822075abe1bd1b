#!/usr/bin/env bash
# Sets up (scripts/setup.sh), then runs the main job on real Fashion-MNIST.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/zylax train --net lenet300 --data fashion_mnist --out runs/main "$@"
