#!/usr/bin/env bash
# Sets up a fresh machine for zylax: the real Fashion-MNIST files (Debian's
# dataset-fashion-mnist, installed when running as root), a virtualenv in .venv
# and `pip install -e .[dev,litert]` (litert: TensorFlow and LiteRT for `zylax
# export`). Idempotent: reinstalls only when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."

fmnist_dir="${ZYLAX_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
if [ ! -e "$fmnist_dir/train-images-idx3-ubyte.gz" ] && [ ! -e "$fmnist_dir/train-images-idx3-ubyte" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian package dataset-fashion-mnist" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "setup: Fashion-MNIST not found in $fmnist_dir. Install it with" \
         "'sudo apt-get install dataset-fashion-mnist' or set ZYLAX_FASHION_MNIST_DIR;" \
         "otherwise zylax tries a TFDS download." >&2
  fi
fi

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup: zylax needs Python >= 3.11 ($python is $("$python" --version 2>&1)); set PYTHON=..." >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat .venv/.setup-stamp 2>/dev/null)" != "$stamp" ]; then
  echo "setup: installing zylax and its dependencies into .venv" >&2
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' >&2 || true
  # --no-compile: no bytecode for every file of TensorFlow and JAX up front (a fresh install
  # here took 163 s with it, 68 s without); Python compiles what is imported, once
  .venv/bin/python -m pip install -q --no-compile -e '.[dev,litert]' 2>&1 \
    | grep -v '^WARNING: Location' >&2 || true
  .venv/bin/python -c 'import zylax, jax, flax, optax, orbax.checkpoint, numba' \
    || { echo "setup: installation failed" >&2; exit 1; }
  echo "$stamp" > .venv/.setup-stamp
fi
