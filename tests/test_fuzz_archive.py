"""The loader on hostile files: only ``CorruptFileError``, in bounded memory (issue: untrusted files).

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
from zylax import archive, report

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
    except archive.CorruptFileError as err:
        assert "\n" not in str(err)
        return
    report.build(header, file_bytes=len(blob), accuracies={})  # what `zylax inspect` prints


CATALOGUE_RUN = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[1])
import hostile_files
from zylax import archive
cases = hostile_files.catalogue()
archive.decode_bytes(hostile_files.valid_file())
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
outcome = {}
for name, blob in cases.items():
    try:
        archive.decode_bytes(blob)
        outcome[name] = "accepted"
    except archive.CorruptFileError as err:
        outcome[name] = "refused: " + str(err)
    except BaseException as err:
        outcome[name] = f"escaped {type(err).__name__}: {err}"[:300]
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"outcome": outcome, "rss_increase_kb": after - before}))
"""


def test_every_crafted_file_is_refused_in_bounded_memory():
    proc = subprocess.run([sys.executable, "-c", CATALOGUE_RUN, os.path.dirname(__file__)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    bad = {k: v for k, v in result["outcome"].items() if not v.startswith("refused")}
    assert not bad, bad
    assert all("\n" not in v for v in result["outcome"].values())
    assert result["rss_increase_kb"] < RSS_BOUND_MB * 1024, result["rss_increase_kb"]


def test_reading_a_device_or_a_folder_is_refused(tmp_path):
    with pytest.raises(archive.CorruptFileError, match="not a regular file"):
        archive.load("/dev/zero")
    with pytest.raises(archive.CorruptFileError, match="not a regular file"):
        archive.read_header(tmp_path)


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
