"""Hostile files: the loader raises only ``CorruptFileError`` in bounded memory, and no command
imports what a file names, hangs, outgrows the RSS bound or prints more than one line.

CI runs a bounded number of header mutations; ``scripts/fuzz_archive.py`` runs
the long campaign whose figures are in SECURITY.md.
"""

import json
import os
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hostile_files
from zylax import archive, modelfile, report

EXAMPLES = int(os.environ.get("ZYLAX_FUZZ_EXAMPLES", "300"))
RSS_BOUND_MB = 300
VALID = hostile_files.valid_file()


def test_the_valid_file_decodes():
    variables, header = archive.decode_bytes(VALID)
    assert set(variables) == {"params", "batch_stats"} and len(header["leaves"]) == 4


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1))
def test_mutated_headers_decode_or_raise_corrupt_file_error(seed):
    blob = hostile_files.mutated_file(VALID, random.Random(seed))
    try:
        variables, header = archive.decode_bytes(blob)
        modelfile.check_metadata(header["metadata"])
    except archive.CorruptFileError as err:
        assert "\n" not in str(err)
        return
    report.build(header, file_bytes=len(blob), accuracies={})  # what `zylax inspect` prints


CATALOGUE_RUN = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import hostile_files
from zylax import archive
cases = {(cls, name): blob for cls, files in hostile_files.catalogue().items()
         for name, blob in files.items()}
archive.decode_bytes(hostile_files.valid_file())
outcome, rise = {}, 0
for (cls, name), blob in cases.items():
    name = f"{cls}: {name}"
    before = hostile_files.reset_peak_rss()
    try:
        archive.decode_bytes(blob)
        outcome[name] = "accepted"
    except archive.CorruptFileError as err:
        outcome[name] = "refused: " + str(err)
    except BaseException as err:
        outcome[name] = f"escaped {type(err).__name__}: {err}"[:300]
    rise = max(rise, hostile_files.peak_rss() - before)
print(json.dumps({"outcome": outcome, "rss_increase_kb": rise}))
"""


def test_every_crafted_file_is_refused_or_read_in_bounded_memory():
    proc = subprocess.run([sys.executable, "-c", CATALOGUE_RUN, os.path.dirname(__file__)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    bad = {k: v for k, v in result["outcome"].items() if not v.startswith("refused")
           and (k.startswith("loader:") or v != "accepted")}
    assert not bad, bad  # the original catalogue is refused; nothing escapes
    assert all("\n" not in v for v in result["outcome"].values())
    assert result["rss_increase_kb"] < RSS_BOUND_MB * 1024, result["rss_increase_kb"]


def test_reading_a_device_a_fifo_or_a_folder_is_refused_without_waiting(tmp_path):
    with pytest.raises(archive.CorruptFileError, match="not a regular file"):
        archive.load("/dev/zero")
    with pytest.raises(archive.CorruptFileError, match="not a regular file"):
        archive.read_header(tmp_path)
    os.mkfifo(tmp_path / "fifo.zyl")  # opening it would wait for a writer forever
    os.symlink(tmp_path / "fifo.zyl", tmp_path / "link.zyl")
    for path in ("fifo.zyl", "link.zyl"):
        with pytest.raises(archive.CorruptFileError, match="a device, FIFO or socket"):
            archive.load(tmp_path / path)


MEMORY_RUN = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import hostile_files
from zylax import archive
blob = hostile_files.memory_case(sys.argv[2], sys.argv[3], 1 << 21)
header, _ = archive.read_header_bytes(blob, max_decoded_bytes=1 << 40)
declared = archive.decoding_bytes(header["leaves"])
before = hostile_files.reset_peak_rss()
archive.decode_bytes(blob, max_decoded_bytes=1 << 40)
print(json.dumps((hostile_files.peak_rss() - before) * 1024 / declared))
"""


@pytest.mark.parametrize("method,form", [("raw", "sparse"), ("shared", "sparse"),
                                         ("shared", "dense"), ("shared", "ans"),
                                         ("ternary", "sparse"),
                                         ("ternary", "huffman"), ("binary", "packed")])
def test_the_decoding_bound_covers_the_peak_memory_of_every_form(method, form):
    """``archive.decoding_bytes`` is what ``max_decoded_bytes`` bounds: the decoded arrays
    and the largest working set, an upper bound of the peak the decoder reaches (measured
    in a fresh process, whose freed memory cannot hide a peak)."""
    proc = subprocess.run([sys.executable, "-c", MEMORY_RUN, os.path.dirname(__file__), method,
                           form], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 0.2 < json.loads(proc.stdout.splitlines()[-1]) <= 1.0


def test_the_decoded_size_limit_is_a_keyword(tmp_path):
    path = tmp_path / "ok.zyl"
    path.write_bytes(VALID)
    archive.load(path)
    with pytest.raises(archive.CorruptFileError, match="over the limit of 100"):
        archive.load(path, max_decoded_bytes=100)


def test_a_killed_write_leaves_a_temp_file_that_the_next_write_removes(tmp_path):
    code = ("import os, sys; sys.path.insert(0, %r); from zylax import archive; "
            "archive.os.replace = lambda *a: os._exit(9); "
            "archive.write_atomic(%r, b'x' * 1000)") % (os.getcwd(), str(tmp_path / "m.zyl"))
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    archive.write_atomic(tmp_path / "other.zyl", b"y")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.zyl"]


COMMAND_RUN = r"""
import json, os, sys, tempfile
sys.path.insert(0, sys.argv[1])
import hostile_files
from zylax import registry
runs = {}
with tempfile.TemporaryDirectory() as top:
    for command in sys.argv[2:]:
        folder = os.path.join(top, command)
        os.mkdir(folder)
        results = hostile_files.run_command(command, folder)
        imported = (os.path.exists(os.path.join(folder, hostile_files.PLANTED_MARKER))
                    or hostile_files.PLANTED_MODULE in sys.modules)
        runs[command] = {"results": results, "imported": imported}
    registry.import_factory(hostile_files.PLANTED_MODULE + ":factory")  # the control
    importable = os.path.exists(os.path.join(folder, hostile_files.PLANTED_MARKER))
print(json.dumps({"runs": runs, "importable": importable}))
"""


@pytest.fixture(scope="module")
def command_runs():
    """Every command on every catalogued file, in one process (one import, one catalogue)."""
    proc = subprocess.run([sys.executable, "-c", COMMAND_RUN, os.path.dirname(__file__),
                           *sorted(hostile_files.COMMANDS)], capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loader_refuses = {name: _refused_by_the_loader(blob)
                      for files in hostile_files.catalogue().values()
                      for name, blob in files.items()}
    return {**json.loads(proc.stdout.splitlines()[-1]), "loader_refuses": loader_refuses}


def _refused_by_the_loader(blob: bytes) -> bool:
    try:
        archive.decode_bytes(blob)
    except archive.CorruptFileError:
        return True
    return False


@pytest.mark.parametrize("command", sorted(hostile_files.COMMANDS))
def test_no_hostile_file_makes_a_command_import_hang_bloat_or_print_a_traceback(command,
                                                                              command_runs):
    run = command_runs["runs"][command]
    assert not run["imported"] and command_runs["importable"]  # nothing imported it; it could be
    loader_refuses = command_runs["loader_refuses"]
    for name, result in run["results"].items():
        lines = result["stderr"].strip().splitlines()
        if command == "inspect" and not loader_refuses[name]:  # inspect runs no model
            assert result["code"] in (0, 1), (name, result)
        else:
            assert result["code"] in (1, 2), (name, result)
        if result["code"] != 0:
            assert len(lines) == 1 and lines[0].startswith(f"zylax {command}"), (name, result)
            assert "\x1b" not in result["stderr"] and "\x07" not in result["stderr"], name
        assert result["rss_mb"] < RSS_BOUND_MB, (name, result)
