import os
import subprocess
import sys

import numpy as np

from zylax.binary_ops import pack_signs, xnor_matmul


def test_benchmarks_smoke_run():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--smoke"], cwd=root,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for title in ("k-means: zylax vs sklearn", "Huffman: zylax vs dahuffman", "Binary",
                  "Scaling"):
        assert title in proc.stdout


def test_xnor_matmul_equals_float_product():
    rng = np.random.default_rng(0)
    x = np.where(rng.random((5, 512)) < 0.5, 1.0, -1.0).astype(np.float32)
    w = np.where(rng.random((512, 7)) < 0.5, 1.0, -1.0).astype(np.float32)
    got = xnor_matmul(pack_signs(x), pack_signs(w.T), k=512)
    np.testing.assert_array_equal(np.asarray(got), (x @ w).astype(np.int32))
