"""``train.fit`` across two JAX processes (multi-host data parallelism on CPU).

Two ``python -c`` workers join one ``jax.distributed`` cluster through a local
coordinator (gloo CPU collectives), one CPU device each. As the README's
multi-host paragraph says, each host feeds its own slice of the global batch:
worker ``i`` trains LeNet-300-100 on the ``i``-th half of a real Fashion-MNIST
prefix and evaluates on the ``i``-th half of a test prefix. Every process must
end with the same parameters (bit for bit), the same training history and the
same global test score, and that score must be the one of the whole test
prefix (both halves), not of the process's own half.
"""

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from zylax import data, nets, train

TRAIN_PREFIX = 4096  # 2048 examples per process: 32 steps of a global batch of 2 x 64
TEST_PREFIX = 2000   # 1000 per process
HOST_BATCH = 64

WORKER = r"""
import hashlib, json, sys

import jax

pid, port, out, seed = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2,
                           process_id=pid, initialization_timeout=120)

import numpy as np
import optax

from zylax import data, nets, train

TRAIN_PREFIX, TEST_PREFIX, HOST_BATCH = (int(v) for v in sys.argv[5:8])
n = jax.process_count()
images, labels = data.load("fashion_mnist", "train")
test_images, test_labels = data.load("fashion_mnist", "test")
# This host's slice: the pid-th contiguous part of each prefix.
share, test_share = TRAIN_PREFIX // n, TEST_PREFIX // n
mine = slice(pid * share, (pid + 1) * share)
test_mine = slice(pid * test_share, (pid + 1) * test_share)
preprocess = data.preprocessing("fashion_mnist")
model = nets.LeNet300100()
result = train.fit(model, optax.adam(1e-3), (images[mine], labels[mine]), epochs=1,
                   batch_size=HOST_BATCH, seed=seed, preprocess=preprocess,
                   eval_data=(test_images[test_mine], test_labels[test_mine]), progress=False)
score = train.evaluate(model, result.state.variables, test_images[test_mine],
                       test_labels[test_mine], preprocess=preprocess, batch_size=500)
variables = result.variables
flat = {jax.tree_util.keystr(p): np.asarray(v)
        for p, v in jax.tree_util.tree_leaves_with_path(variables)}
digest = hashlib.sha256()
for key in sorted(flat):
    digest.update(key.encode())
    digest.update(np.ascontiguousarray(flat[key]).tobytes())
np.savez(f"{out}/params{pid}.npz", **flat)
with open(f"{out}/result{pid}.json", "w") as f:
    json.dump({"process_index": jax.process_index(), "process_count": n,
               "devices": jax.device_count(), "local_devices": jax.local_device_count(),
               "mesh_size": train.data_mesh().size, "step": int(result.state.step),
               "history": result.history, "evaluate": score,
               "sha256": digest.hexdigest()}, f)
jax.distributed.shutdown()
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_two_processes(out_dir, seeds=(0, 0), timeout=300.0) -> list[dict]:
    """Runs WORKER as processes 0 and 1 (``seeds[i]`` is process i's ``fit`` seed).

    Returns each process's result dict with its params under ``"params"``;
    fails with both logs when a process exits non-zero or the pair times out.
    """
    port = _free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    procs, texts = [], []
    with contextlib.ExitStack() as stack:
        logs = [stack.enter_context(open(os.path.join(out_dir, f"log{pid}.txt"), "w+"))
                for pid in range(2)]
        for pid, log in enumerate(logs):
            procs.append(subprocess.Popen(
                [sys.executable, "-c", WORKER, str(pid), str(port), str(out_dir),
                 str(seeds[pid]), str(TRAIN_PREFIX), str(TEST_PREFIX), str(HOST_BATCH)],
                stdout=log, stderr=subprocess.STDOUT, env=env))
        deadline = time.monotonic() + timeout
        try:
            while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
                if any(p.poll() not in (None, 0) for p in procs):
                    # A peer that died leaves the other blocked in a collective: short grace.
                    deadline = min(deadline, time.monotonic() + 15)
                time.sleep(0.2)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        for log in logs:
            log.seek(0)
            texts.append(log.read())
    codes = [p.returncode for p in procs]
    report = "\n".join(f"--- process {i} (exit {c}) ---\n{t[-4000:]}"
                       for i, (c, t) in enumerate(zip(codes, texts)))
    assert codes == [0, 0], f"worker processes failed or timed out:\n{report}"
    results = []
    for pid in range(2):
        with open(os.path.join(out_dir, f"result{pid}.json")) as f:
            result = json.load(f)
        with np.load(os.path.join(out_dir, f"params{pid}.npz")) as npz:
            result["params"] = dict(npz)
        results.append(result)
    return results


def _sha256(flat: dict) -> str:
    digest = hashlib.sha256()
    for key in sorted(flat):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(flat[key]).tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """One two-process ``fit`` run (15-30 s on 2 shared cores), shared by the tests below."""
    return run_two_processes(tmp_path_factory.mktemp("multiprocess"))


@pytest.mark.slow
def test_fit_on_two_processes_ends_identical_with_a_global_score(two_process_run):
    first, second = two_process_run

    # A real two-process cluster: one device per process, the mesh spans both.
    for pid, result in enumerate((first, second)):
        assert result["process_index"] == pid
        assert result["process_count"] == 2
        assert (result["devices"], result["local_devices"], result["mesh_size"]) == (2, 1, 2)
        # Each host's 2048 examples at 64 a step: 32 global steps of 128.
        assert result["step"] == (TRAIN_PREFIX // 2) // HOST_BATCH
        assert result["sha256"] == _sha256(result["params"])  # the file is what fit ended with

    # Identical parameters, bit for bit.
    assert first["sha256"] == second["sha256"], "the processes ended with different params"
    assert first["params"].keys() == second["params"].keys()
    for key in first["params"]:
        np.testing.assert_array_equal(first["params"][key], second["params"][key], err_msg=key)

    # The same (global) training loss and test scores on both processes.
    assert len(first["history"]) == len(second["history"]) == 1
    for key in ("train_loss", "train_accuracy", "test_accuracy", "test_loss"):
        assert first["history"][0][key] == second["history"][0][key], key
    assert first["evaluate"] == second["evaluate"]
    assert first["evaluate"]["accuracy"] == first["history"][0]["test_accuracy"]

    # The global score covers both halves of the test prefix: it is what one process
    # gets from the whole prefix with the trained variables.
    variables = {}
    for key, value in first["params"].items():  # "['params']['ip1']['kernel']"
        *path, leaf = (part.strip("[]'") for part in key.split("]["))
        node = variables
        for name in path:
            node = node.setdefault(name, {})
        node[leaf] = value
    test_images, test_labels = data.load("fashion_mnist", "test")
    whole = train.evaluate(nets.LeNet300100(), variables, test_images[:TEST_PREFIX],
                           test_labels[:TEST_PREFIX], preprocess=data.preprocessing("fashion_mnist"),
                           mesh=train.data_mesh(jax.devices()[:1]))
    assert whole["accuracy"] == pytest.approx(first["evaluate"]["accuracy"], abs=1e-9)
    assert whole["loss"] == pytest.approx(first["evaluate"]["loss"], rel=1e-4)
    # One short epoch of real training, well above chance (0.1).
    assert whole["accuracy"] > 0.6


@pytest.mark.slow
def test_fit_history_train_accuracy_is_a_fraction_on_two_processes(two_process_run):
    """``train_accuracy`` is correct predictions over the examples trained on.

    The train step's ``correct`` is summed over the global batch (both hosts'
    examples), so the epoch's count of examples must be global as well; a count
    of this host's examples alone gives ``process_count`` times the accuracy.
    """
    for result in two_process_run:
        row = result["history"][0]
        assert 0.0 < row["train_accuracy"] <= 1.0, (
            f"train_accuracy {row['train_accuracy']} on {result['process_count']} processes: "
            "fit divides the global batch's correct count by this host's examples")
