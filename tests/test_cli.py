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


def test_compress_evaluate_inspect_tiny(tmp_path, capsys):
    out, rep = tmp_path / "m.zyl", tmp_path / "r" / "report.json"
    cli.main(["compress", "--net", "lenet300", "--baseline-epochs", "1", "--prune-cycles", "1",
              "--retrain-epochs", "1", "--finetune-epochs", "1", "--max-examples", "3000",
              "--out", str(out), "--report", str(rep), "--workdir", str(tmp_path / "w"),
              "--quiet"])
    printed = capsys.readouterr().out
    assert "P+Q+H" in printed and "compressed_accuracy" in printed
    import json
    report = json.loads(rep.read_text())
    for key in ("dense_bytes", "file_bytes", "ratio", "dense_accuracy", "compressed_accuracy",
                "layers"):
        assert key in report
    assert report["file_bytes"] == out.stat().st_size
    assert report["dense_bytes"] == 266_610 * 4
    assert report["decoded_exactly"] is True
    assert (tmp_path / "r" / "report.md").exists() and (tmp_path / "r" / "report_weights.png").exists()
    cli.main(["evaluate", str(out)])
    evaluated = capsys.readouterr().out
    assert f"test accuracy {report['compressed_accuracy']:.4f}" in evaluated
    cli.main(["inspect", str(out)])
    assert "ip1/kernel" in capsys.readouterr().out


def test_evaluate_refuses_a_corrupt_file(tmp_path):
    bad = tmp_path / "bad.zyl"
    bad.write_bytes(b"ZYLAX\0garbage")
    with pytest.raises(SystemExit, match="checksum|not a zylax file"):
        cli.main(["evaluate", str(bad)])


def test_evaluate_uses_the_batch_stats_in_the_file(tmp_path, capsys):
    import jax
    import optax

    from zylax import archive, data, nets, train

    train_data, test_data = data.load("fashion_mnist", "train"), data.load("fashion_mnist", "test")
    model = nets.get("mlp")
    state = train.fit(model, optax.adam(1e-3), tuple(a[:2048] for a in train_data),
                      name="fashion_mnist", epochs=1, progress=False).state
    params, stats = jax.device_get(state.params), jax.device_get(state.batch_stats)
    path = tmp_path / "mlp.zyl"
    archive.save(path, params, batch_stats=stats,
                 metadata={"net": "mlp", "data": "fashion_mnist", "num_classes": 10})
    cli.main(["evaluate", str(path)])
    expected = train.evaluate(model, params, *test_data, name="fashion_mnist",
                              batch_stats=stats)["accuracy"]
    assert f"test accuracy {expected:.4f}" in capsys.readouterr().out
    assert expected > 0.6  # the running statistics were used: fresh ones would give ~10%
