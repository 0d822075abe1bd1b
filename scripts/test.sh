#!/usr/bin/env bash
# Sets up (scripts/setup.sh), then runs the test suite and executes the notebooks
# at a small setting (ZYLAX_SMALL=1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export ZYLAX_SMALL=1 TF_CPP_MIN_LOG_LEVEL=3
# glibc's huge-page malloc: XLA's CPU steps fault in far fewer pages (zylax/hugepages.py);
# not when ZYLAX_HUGEPAGES=0 or GLIBC_TUNABLES already chooses
if [[ ${ZYLAX_HUGEPAGES:-1} != 0 && ${GLIBC_TUNABLES:-} != *glibc.malloc.hugetlb* ]]; then
  export GLIBC_TUNABLES="${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.malloc.hugetlb=1"
fi
# One fresh persistent compilation cache for this run: tests, CLI subprocesses and
# notebook kernels that compile the same program share it (a run starts cold, so it
# still compiles everything once; nothing is kept between runs).
JAX_COMPILATION_CACHE_DIR="$(mktemp -d)"
export JAX_COMPILATION_CACHE_DIR JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0.2
trap 'rm -rf "$JAX_COMPILATION_CACHE_DIR"' EXIT
# LLVM at -O1 rather than -O2: the suite compiles far more than it runs (about 10% less
# compile time, the same run time), unless XLA_FLAGS already chooses
if [[ ${XLA_FLAGS:-} != *xla_backend_optimization_level* ]]; then
  export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_backend_optimization_level=1"
fi
# Two workers (-n 2), each taking whole files (loadfile: a module's fixtures are built once):
# XLA compiles on one thread, and most of the suite's time is compiling. Files are handed
# out in the order given (--no-loadscope-reorder; xdist's default puts the files with the
# most tests first): the notebooks, the longest single items, first, so that no worker is
# left running one of them alone at the end.
.venv/bin/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --nbmake notebooks tests "$@"
