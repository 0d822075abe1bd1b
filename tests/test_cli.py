import subprocess
import sys

import pytest

from zylax import cli


def test_train_smoke_run(tmp_path, capsys):
    cli.main(["train", "--net", "lenet300", "--epochs", "1", "--max-steps", "30",
              "--out", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert "test accuracy 0." in out and f"checkpoint: {tmp_path}" in out
    assert (tmp_path / "checkpoints" / "30").is_dir()


@pytest.mark.parametrize("flag,value,message", [("--net", "vgg", "unknown net 'vgg'"),
                                                ("--data", "svhn", "unknown dataset 'svhn'")])
def test_unknown_names_exit_with_a_message(tmp_path, flag, value, message):
    proc = subprocess.run([sys.executable, "-m", "zylax.cli", "train", flag, value, "--out",
                           str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode != 0 and message in proc.stderr
