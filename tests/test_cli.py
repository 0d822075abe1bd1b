import dataclasses
import gzip
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zylax import archive, baseline, cli, data, modelfile, nets, registry, train
from zylax.transforms import tree as ztree


def _run(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "zylax.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300, cwd=cwd)


@pytest.fixture
def in_process(monkeypatch, capsys):
    """``run(*args)`` -> ``(exit code, stdout, stderr)`` of ``cli.main`` in this process, from
    the test's folder as ``_run(..., cwd=tmp_path)`` (the entry point's own exits stay with
    the subprocess tests); ``my_models`` is imported afresh each time, as a new process
    would, and forgotten after the test."""
    def run(*args, cwd):
        monkeypatch.chdir(cwd)
        sys.modules.pop("my_models", None)
        try:
            cli.main(list(args))
            code = 0
        except SystemExit as stop:
            code = stop.code
        out, err = capsys.readouterr()
        return code, out, err
    yield run
    sys.modules.pop("my_models", None)


def test_train_smoke_run_writes_a_file_that_evaluate_scores_alike(tmp_path, capsys):
    cli.main(["train", "--net", "lenet300", "--epochs", "1", "--max-steps", "30",
              "--learning-rate", "2e-3", "--out", str(tmp_path), "--quiet",
              "--max-test-examples", "500"])
    out = capsys.readouterr().out
    assert "test accuracy 0." in out and f"checkpoint: {tmp_path}" in out
    assert "recipe: Recipe(epochs=1, batch_size=128, learning_rate=0.002," in out
    assert (tmp_path / "checkpoints" / "30").is_dir()
    trained = out.split("test accuracy ")[1].split()[0]
    for flag in ("--max-examples", "--max-test-examples"):  # train's spelling works too
        cli.main(["evaluate", str(tmp_path / "model.zyl"), flag, "500"])
        assert f"test accuracy {trained}" in capsys.readouterr().out

    # the same folder again resumes, and says so; another model there is refused in one line
    cli.main(["train", "--net", "lenet300", "--epochs", "1", "--max-steps", "30",
              "--out", str(tmp_path), "--quiet", "--max-test-examples", "500"])
    assert f"resuming from step 30 of the checkpoint in {tmp_path}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:
        cli.main(["train", "--net", "lenet5", "--max-steps", "1", "--out", str(tmp_path)])
    assert refused.value.code == 1
    assert "holds a checkpoint (step 30) of another model" in capsys.readouterr().err

    # the trained file is the baseline of compress --from: nothing is trained again
    cli.main(["compress", "--from", str(tmp_path / "model.zyl"), "--prune-cycles", "1",
              "--retrain-epochs", "0", "--finetune-epochs", "0", "--max-examples", "1024",
              "--max-test-examples", "500", "--quiet", "--out", str(tmp_path / "small.zyl")])
    out = capsys.readouterr().out
    assert f"dense accuracy: {100 * float(trained):.2f}%" in out
    _, metadata = archive.load(str(tmp_path / "small.zyl"))
    assert metadata["net"] == "lenet300" and metadata["data"] == "fashion_mnist"


def test_train_and_compress_print_a_line_per_epoch_unless_quiet(tmp_path, capsys):
    # the progress bar is a terminal's only; a log file or notebook gets these lines
    cli.main(["train", "--net", "lenet300", "--epochs", "2", "--max-examples", "1024",
              "--max-test-examples", "200", "--out", str(tmp_path)])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if " epoch " in ln]
    assert [ln.split(":")[0] for ln in lines] == ["train epoch 1", "train epoch 2"]
    assert all("examples/s" in ln and float(ln.split("train loss ")[1].split(",")[0]) > 0
               for ln in lines)
    cli.main(["compress", "--from", str(tmp_path / "model.zyl"), "--prune-cycles", "1",
              "--retrain-epochs", "1", "--finetune-epochs", "0", "--max-examples", "1024",
              "--max-test-examples", "200", "--out", str(tmp_path / "small.zyl")])
    assert "prune epoch 1: train loss" in capsys.readouterr().out
    cli.main(["train", "--net", "lenet300", "--epochs", "3", "--max-examples", "1024",
              "--max-test-examples", "200", "--out", str(tmp_path), "--quiet"])
    assert " epoch " not in capsys.readouterr().out


def test_the_epoch_line_is_flushed_at_once_and_dropped_without_stdout(monkeypatch):
    written = []

    class Log:  # a log file: block-buffered, so an unflushed line waits for the exit
        def write(self, text):
            written.append(("write", text))

        def flush(self):
            written.append(("flush", None))

    monkeypatch.setattr(sys, "stdout", Log())
    row = {"epoch": 1, "train_loss": 0.25, "examples_per_s": 63.0}
    train.epoch_logger(quiet=False)(row)
    assert written[0][0] == "write" and written[0][1].startswith("train epoch 1: train loss 0.2500")
    assert written[-1][0] == "flush"
    monkeypatch.setattr(sys, "stdout", None)  # started with stdout closed
    train.epoch_logger(quiet=False)({**row, "stage": "prune 1/3"})


@pytest.mark.parametrize("args,message", [
    (["train", "--net", "vgg"], "unknown net 'vgg'"),
    (["train", "--data", "svhn"], "unknown dataset 'svhn'"),
    (["train", "--learning-rate", "0", "--out", "x"], "--learning-rate must be > 0 and <= 10"),
    (["compress", "--bits", "17"], "--bits '17': bits must lie in [1, 16]"),
    (["compress", "--bits", "4", "5"], "--bits: one value for every layer at most"),
    (["compress", "--bits", ".*conv=four"], "is neither a number nor REGEX=NUMBER"),
    (["compress", "--sparsity", "0.5", "([=0.2"], "--sparsity: bad regex '(['"),
    (["compress", "--index-bits", "0"], "--index-bits must be >= 1"),
    (["compress", "--baseline-epochs", "0"], "--baseline-epochs must be >= 1"),
    (["compress", "--prune-cycles", "-1"], "--prune-cycles must be >= 1"),
    (["compress", "--max-examples", "-5"], "--max-examples must be >= 1"),
    (["compress", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["compress", "--net", "lenet5", "--model", "x:y"], "not both"),
    (["compress", "--model", "no_such_module:factory"],
     "No module named 'no_such_module' (modules are looked up from the current folder"),
    (["compress", "--model", "flax.linen:Conv"], "missing 2 required positional arguments"),
    (["compress", "--max-examples", "5"], "smaller than one batch (128)"),
    (["compress", "--index-bits", "many"], "--index-bits must be an integer, 'auto' or 'ans'"),
    (["compress", "--sparsity", "1.0"], "--sparsity '1.0': sparsity must lie in [0, 1)"),
    (["compress", "--method", "svd", "--sparsity", "0.5"],
     "sparsity sets prune, which svd does not run"),
    (["compress", "--threshold", "0.1"], "threshold sets ternary, which deep does not run"),
    (["compress", "--method", "ttq", "--kl-weight", "2"],
     "kl_weight sets sparse_vd, which ttq does not run"),
    (["compress", "--method", "svd", "--kl-weight", "nan"], "--kl-weight must lie in [0, 1e6]"),
    (["compress", "--stage-epochs", "share"], "--stage-epochs 'share': give METHOD=N"),
    (["compress", "--stage-epochs", "share=-1"], "--stage-epochs 'share=-1': give METHOD=N"),
    (["compress", "--stage-epochs", "vd=3"], "no method 'vd'; known: binary, cast,"),
    (["compress", "--stage-epochs", "share=1", "share=2"], "--stage-epochs: share given twice"),
    (["compress", "--method", "svd", "--stage-epochs", "prune=2"],
     "stage_epochs names prune, which svd does not run"),
    (["compress", "--budget", "20KB", "--stage-epochs", "share=2"], "drop --stage-epochs"),
    (["compress", "--stage-epochs", "share=\u00b2"], "give METHOD=N"),  # a digit to isdigit()
    (["compress", "--stage-epochs", "share=\u0663"], "give METHOD=N"),  # Arabic-Indic three
    (["compress", "--stage-epochs", "share= 3"], "give METHOD=N"),
    (["compress", "--stage-epochs", "share=" + "9" * 5000], "give METHOD=N"),
    (["compress", "--method", "ttq", "--stage-epochs", "ttq=2"],
     "ttq is a chain; name its stages (ternary)"),
    (["compress", "--gradual-epochs", "3", "--stage-epochs", "prune=2"],
     "--gradual-epochs sets prune's epochs; drop prune from --stage-epochs"),
    (["compress", "--method", "share", "--unshared-dtype", "float16", "--stage-epochs",
      "cast=2"], "the unshared_dtype cast retrains with the last stage"),
    (["compress", "--method", "svd+svd"], "sparse_vd: selects no leaf"),  # share took them
    (["compress", "--method", "ttq", "--stochastic"], "stochastic sets binary, which ttq"),
    (["train", "--max-test-examples", "0"], "--max-test-examples must be >= 1"),
    (["train", "--net", "lenet5", "--task", "detection"], "detection needs boxes and masks"),
    (["train", "--net", "deeplabv3_mobilenet_v2"], "segmentation needs boxes and masks"),
    (["compress", "--from", "no_such.zyl"], "--from no_such.zyl: no such file"),
    (["train", "--net", "lenet5", "--recipe", "vgg16"],
     "--recipe 'vgg16' is not a registered net;"),
    (["train", "--net", "lenet5", "--recipe", "MobileNetV2"],
     "--recipe 'MobileNetV2' is not a registered net (did you mean 'mobilenet_v2'?)"),
    (["train", "--net", "lenet_5"], "unknown net 'lenet_5' (did you mean 'lenet5'?)"),
])
def test_bad_arguments_fail_fast_with_one_line(tmp_path, capsys, args, message):
    # in this process (the entry point's own exit codes: the subprocess tests below)
    if "--out" not in args and args[0] == "train":
        args = [*args, "--out", str(tmp_path)]
    elif args[0] == "compress":
        args = [*args, "--out", str(tmp_path / "m.zyl"), "--workdir", str(tmp_path / "w")]
    with pytest.raises(SystemExit) as refused:
        cli.main(args)
    err = capsys.readouterr().err
    assert refused.value.code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "w").exists()  # nothing trained


@pytest.mark.parametrize("args,message", [
    (["compress", "--from", __file__, "--net", "lenet5"], "is the trained model; drop --net"),
    (["compress", "--from", __file__, "--data", "mnist"], "is the trained model; drop --data"),
    (["compress", "--from", os.path.dirname(__file__)], "is a folder, not a .zyl file"),
    (["train", "--net", "lenet5", "--task", "detection", "--data", "fashion_mnist_scenes"],
     "a detection model needs an anchors(image_size) method"),
    (["compress", "--net", "lenet300", "--bits", "4", ".*nosuch/kernel=3", "--max-examples",
      "1024", "--workdir", "{tmp}/w"], "share: bits patterns ['.*nosuch/kernel'] match none of its leaves"),
    (["compress", "--gradual-epochs", "-1"], "--gradual-epochs must be >= 0"),
    (["compress", "--gradual-epochs", "2", "--prune-cycles", "2"],
     "--gradual-epochs replaces the prune/retrain cycles; drop --prune-cycles"),
    (["compress", "--net", "deeplabv3_mobilenet_v2", "--recipe", "mobilenet_v2", "--data",
      "fashion_mnist_scenes", "--workdir", "{tmp}/w"],
     "--recipe mobilenet_v2 pads images to 32x32, but the fashion_mnist_scenes images are 96x96"),
    (["train", "--net", "lenet5", "--max-test-examples", "20000"],
     "--max-test-examples 20000 exceeds the 10,000 examples there are"),
    (["compress", "--tflite", "{tmp}/m.zyl"], "is a path --out or --report writes"),
    (["compress", "--report", "{tmp}/r.json", "--tflite", "{tmp}/r.md"],
     "is a path --out or --report writes"),
])
def test_more_usage_errors_in_process(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as refused:
        cli.main([*(a.replace("{tmp}", str(tmp_path)) for a in args),
                  "--out", str(tmp_path / ("m.zyl" if args[0] == "compress" else "o"))])
    assert refused.value.code == 2 and message in capsys.readouterr().err
    assert not os.listdir(tmp_path)  # nothing written


def test_repeated_stage_epochs_flags_add_up():
    args = cli.build_parser().parse_args(["compress", "--stage-epochs", "sparse_vd=3",
                                          "--stage-epochs", "share=1"])
    assert args.stage_epochs == ["sparse_vd=3", "share=1"]


def test_a_refused_command_leaves_no_folder_and_links_are_resolved(tmp_path, capsys):
    """Output folders are made when a file is written, not by the checks; ``--tflite`` through
    a link to ``--out``'s folder is the same file; a name over the file system's limit is
    refused before any work."""
    os.makedirs(tmp_path / "other" / "real")
    os.symlink(tmp_path / "other" / "real", tmp_path / "lnk")
    refusals = [
        (["--tflite", str(tmp_path / "new" / "m.tflite"), "--from", str(tmp_path / "none.zyl")],
         "no such file"),
        (["--out", str(tmp_path / "lnk" / ".." / "m.zyl"), "--tflite",
          str(tmp_path / "other" / "m.zyl")], "is a path --out or --report writes"),
        (["--tflite", str(tmp_path / ("a" * 300 + ".tflite"))], "File name too long"),
        (["--report", str(tmp_path / "deep" / ("b" * 300) / "r.json")], "File name too long"),
    ]
    for extra, message in refusals:
        with pytest.raises(SystemExit) as refused:
            cli.main(["compress", "--out", str(tmp_path / "m.zyl"), *extra])
        assert refused.value.code == 2 and message in capsys.readouterr().err, extra
    assert sorted(os.listdir(tmp_path)) == ["lnk", "other"]
    # different files that only look alike through the link are accepted
    args = cli.build_parser().parse_args(["compress", "--out", str(tmp_path / "m.zyl"),
                                          "--tflite", str(tmp_path / "lnk" / ".." / "m.zyl")])
    cli.checks.compress_settings(args)


def test_the_report_is_written_when_the_export_fails(tmp_path, monkeypatch, capsys):
    from zylax.cli import commands

    def refused(args, result, test_data):
        raise RuntimeError("the exported model does not load in LiteRT: no")
    written = []
    monkeypatch.setattr(commands, "ship", refused)
    monkeypatch.setattr(commands.report, "write_with_figures",
                        lambda result, path: written.append(path) or [path])
    args = cli.build_parser().parse_args(["compress", "--out", "m.zyl", "--report", "r.json",
                                          "--tflite", "m.tflite"])
    with pytest.raises(RuntimeError, match="does not load"):
        commands.finish(args, None, None)
    assert written == ["r.json"] and "wrote m.zyl, r.json" in capsys.readouterr().out


def test_out_pointing_at_a_directory_is_refused_before_training(tmp_path):
    proc = _run("compress", "--out", str(tmp_path), "--workdir", str(tmp_path / "w"))
    assert proc.returncode == 2 and "is a directory" in proc.stderr
    assert not (tmp_path / "w").exists()


def test_runtime_errors_are_one_line_and_debug_shows_the_traceback(tmp_path):
    bad = tmp_path / "bad.zyl"
    bad.write_bytes(b"ZYLAX\0garbage")
    proc = _run("evaluate", str(bad))
    assert proc.returncode == 1 and "not a zylax file" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert _run("inspect", str(tmp_path / "missing.zyl")).returncode == 1
    debug = _run("evaluate", str(bad), env={"ZYLAX_DEBUG": "1"})
    assert "Traceback" in debug.stderr


def test_compress_a_batchnorm_net_then_evaluate_its_file(tmp_path, capsys):
    out, rep = tmp_path / "m.zyl", tmp_path / "r" / "report.json"
    cli.main(["compress", "--net", "mlp", "--baseline-epochs", "1", "--prune-cycles", "1",
              "--retrain-epochs", "1", "--finetune-epochs", "1", "--max-examples", "2048",
              "--max-test-examples", "1000", "--batch-size", "256", "--out", str(out),
              "--report", str(rep), "--workdir", str(tmp_path / "w"), "--quiet"])
    printed = capsys.readouterr().out
    assert "P+Q+H" in printed and "compressed (the file) accuracy" in printed
    report = json.loads(rep.read_text())
    for key in ("dense_bytes", "file_bytes", "ratio", "dense_accuracy", "compressed_accuracy",
                "layers"):
        assert key in report
    assert report["file_bytes"] == out.stat().st_size
    assert report["decoded_exactly"] is True
    assert any(r["name"].startswith("batch_stats/") for r in report["layers"])
    assert (tmp_path / "r" / "report.md").exists() and (tmp_path / "r" / "report_weights.png").exists()
    # --batch-size is used: 2048 examples / 256 = 8 steps per epoch in the checkpoint
    (baseline,) = (tmp_path / "w").iterdir()
    assert sorted(p.name for p in baseline.iterdir() if p.name.isdigit()) == ["8"]
    cli.main(["evaluate", str(out), "--max-examples", "1000"])
    assert f"test accuracy {report['compressed_accuracy']:.4f}" in capsys.readouterr().out
    cli.main(["inspect", str(out)])
    assert "fc1/kernel" in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:  # a compressed file is no baseline
        cli.main(["compress", "--from", str(out), "--out", str(tmp_path / "again.zyl")])
    assert refused.value.code == 2
    assert "already compressed (shared leaves)" in capsys.readouterr().err


def test_the_baseline_cache_is_keyed_by_every_setting():
    choice = baseline.choose_model("lenet300")
    settings = dict(data="fashion_mnist", seed=0, max_examples=None)
    key = baseline.baseline_key(choice, epochs=20, **settings)
    assert baseline.baseline_key(choice, epochs=19, **settings) != key
    assert baseline.baseline_key(choice, epochs=20, **{**settings, "max_examples": 3000}) != key
    assert baseline.baseline_key(choice, epochs=20, **{**settings, "seed": 1}) != key
    narrow = {"params": {"dense": {"kernel": jax.ShapeDtypeStruct((784, 300), jnp.float32)}}}
    wide = {"params": {"dense": {"kernel": jax.ShapeDtypeStruct((784, 400), jnp.float32)}}}
    keyed = [baseline.baseline_key(choice, epochs=20, variables=v, **settings)
             for v in (narrow, wide, narrow)]
    assert keyed[0] != keyed[1] and keyed[0] == keyed[2]  # a shape change trains a new one
    code = [baseline.baseline_key(choice, epochs=20, code=c, **settings) for c in ("a", "b")]
    assert code[0] != code[1]  # so does an edit of the model's module
    assert baseline.model_code_digest(nets.LeNet5()) != baseline.model_code_digest(
        nets.MobileNetV2()) != ""  # modules of their own


def test_evaluate_uses_the_batch_stats_in_the_file(tmp_path, capsys, fmnist_train, fmnist_test):
    import optax

    model = registry.get("mlp").factory(10)
    preprocess = data.preprocessing("fashion_mnist")
    variables = train.fit(model, optax.adam(1e-3), tuple(a[:2048] for a in fmnist_train),
                          preprocess=preprocess, epochs=1, progress=False).variables
    path = tmp_path / "mlp.zyl"
    archive.save(path, variables, metadata={"net": "mlp", "data": "fashion_mnist",
                                            "num_classes": 10, "preprocess": preprocess.to_dict()})
    cli.main(["evaluate", str(path)])
    expected = train.evaluate(model, variables, *fmnist_test, preprocess=preprocess)["accuracy"]
    assert f"test accuracy {expected:.4f}" in capsys.readouterr().out
    assert expected > 0.6  # the running statistics were used: fresh ones would give ~10%
    loaded, _ = archive.load(path)
    assert ztree.bit_identical(loaded, jax.device_get(variables))


def test_evaluate_refuses_params_that_do_not_fit_the_model(tmp_path, capsys):
    path = tmp_path / "wrong.zyl"
    metadata = {"net": "lenet300", "data": "fashion_mnist", "num_classes": 10}
    archive.save(path, {"ip1": {"kernel": np.zeros((3, 3), np.float32)}},
                 metadata={**metadata, "preprocess": data.Preprocess().to_dict()})
    with pytest.raises(SystemExit) as refused:
        cli.main(["evaluate", str(path)])
    err = capsys.readouterr().err
    assert refused.value.code == 1 and "the stored variables do not fit the model" in err
    assert "ip1/kernel: file float32[3, 3], model float32[784, 300]" in err
    assert len(err.splitlines()) == 1

    archive.save(path, {"ip1": {"kernel": np.zeros((3, 3), np.float32)}}, metadata=metadata)
    with pytest.raises(SystemExit):
        cli.main(["evaluate", str(path)])
    assert "records no preprocessing; save it with metadata=tasks.file_metadata" in (
        capsys.readouterr().err)


USER_MODEL = '''
import flax.linen as nn


class Net(nn.Module):
    """Own names, BatchNorm, no train argument."""
    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        train = self.is_mutable_collection("batch_stats")
        x = nn.Conv(8, (3, 3), strides=2, name="zz_stem")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, name="norm")(x))
        x = nn.Conv(16, (3, 3), strides=2, name="aa_body")(x)
        return nn.Dense(self.num_classes, name="mm_head")(x.reshape((x.shape[0], -1)))
'''


def test_compress_a_user_model_from_the_command_line(tmp_path, in_process):
    """The module is found in the current folder, as ``python -m`` finds it."""
    (tmp_path / "my_models.py").write_text(USER_MODEL)
    out = tmp_path / "net.zyl"
    proc = _run("compress", "--model", "my_models:Net", "--baseline-epochs", "1",
                "--prune-cycles", "1", "--retrain-epochs", "1", "--finetune-epochs", "1",
                "--sparsity", "0.6", "mm_head/kernel=0.2", "--bits", "4", "mm_head.*=6",
                "--index-bits", "auto", "--fold-batch-norm", "--max-examples", "1024",
                "--max-test-examples", "1000", "--out", str(out), "--workdir",
                str(tmp_path / "w"), "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    accuracy = next(line for line in proc.stdout.splitlines()
                    if line.startswith("compressed (the file) accuracy")).split()[-1]
    rows = {row.split()[0]: row.split() for row in proc.stdout.splitlines() if "/kernel" in row}
    assert {row[1] for row in rows.values()} == {"shared"}
    kept = {name: float(row[3]) for name, row in rows.items()}
    assert 35 < kept["aa_body/kernel"] < 45 and 75 < kept["mm_head/kernel"] < 85
    assert {name: row[4] for name, row in rows.items()} == {
        "zz_stem/kernel": "4", "aa_body/kernel": "4", "mm_head/kernel": "6"}
    stats = {row.split()[0]: row.split()[4] for row in proc.stdout.splitlines()
             if row.strip().startswith("batch_stats/")}
    assert stats == {"batch_stats/norm/mean": "0", "batch_stats/norm/var": "0"}  # folded
    # the file records its model as a hint; evaluate runs it only when the user names it
    code, _, err = in_process("evaluate", str(out), cwd=tmp_path)
    assert code == 2 and "pass --model my_models:Net" in err
    assert len(err.strip().splitlines()) == 1
    code, printed, err = in_process("evaluate", str(out), "--model", "my_models:Net",
                                    "--max-examples", "1000", cwd=tmp_path)
    assert code == 0, err
    assert f"test accuracy {float(accuracy.rstrip('%')) / 100:.4f}" in printed
    _, metadata = archive.load(out)
    assert metadata["model"] == "my_models:Net"


def test_the_python_api_takes_the_model_object_and_never_the_recorded_spec(tmp_path):
    model = registry.get("lenet300").factory(10)
    variables = train.init_variables(model, np.zeros((1, 28, 28, 1), np.float32), 0)
    path = tmp_path / "mine.zyl"
    archive.save(path, variables, metadata={
        "model": "os:abort", "data": "fashion_mnist", "num_classes": 10,
        "input_shape": [28, 28, 1], "preprocess": data.Preprocess().to_dict()})
    with pytest.raises(modelfile.ModelNeededError, match="pass --model os:abort"):
        modelfile.load_model_file(path)
    loaded = modelfile.load_model_file(path, model=model)
    assert loaded.model is model and loaded.task.name == "classification"
    assert ztree.bit_identical(loaded.variables, jax.device_get(variables))
    assert modelfile.load_model_file(path, model=lambda n: nets.LeNet300100(num_classes=n)
                                     ).model.num_classes == 10
    with pytest.raises(modelfile.ModelMismatchError, match="conv1/bias: file missing"):
        modelfile.load_model_file(path, model=nets.LeNet5())
    with pytest.raises(TypeError, match="returned a int, not a flax.linen Module"):
        modelfile.load_model_file(path, model=lambda n: n)


def test_save_refuses_an_empty_tree_and_evaluate_a_file_without_params(tmp_path, capsys):
    with pytest.raises(ValueError, match="nothing to save"):
        archive.save(tmp_path / "empty.zyl", {})
    path = tmp_path / "stats.zyl"
    archive.save(path, {"params": {}, "batch_stats": {"m": np.ones(2, np.float32)}},
                 metadata={"net": "lenet300", "data": "fashion_mnist"})
    with pytest.raises(SystemExit) as refused:
        cli.main(["evaluate", str(path)])
    assert refused.value.code == 1
    assert "holds no 'params' collection, so no model" in capsys.readouterr().err


def test_evaluate_a_file_that_names_no_model_is_one_clean_line(tmp_path):
    path = tmp_path / "anon.zyl"
    archive.save(path, {"w": np.ones(3, np.float32)},
                 metadata={"data": "fashion_mnist", "preprocess": data.Preprocess().to_dict()})
    proc = _run("evaluate", str(path))
    assert proc.returncode == 2 and "names no model" in proc.stderr
    assert "pass --model package.module:factory" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_damaged_dataset_file_is_one_line_naming_it(tmp_path):
    import gzip
    import shutil

    source = data.fashion_mnist_dir()
    for name in os.listdir(source):
        shutil.copy(source / name, tmp_path / name)
    (images,) = [p for p in tmp_path.iterdir() if p.name.startswith("train-images")]
    images.write_bytes(images.read_bytes()[:5000] if images.suffix == ".gz"
                       else gzip.compress(images.read_bytes())[:5000])
    proc = _run("train", "--out", str(tmp_path / "o"), env={"ZYLAX_FASHION_MNIST_DIR": str(tmp_path)})
    assert proc.returncode == 1 and images.name in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_evaluate_refuses_tampered_padding_before_allocating(tmp_path):
    model = registry.get("lenet300").factory(10)
    variables = train.init_variables(model, np.zeros((1, 28, 28, 1), np.float32), 0)
    path = tmp_path / "tampered.zyl"
    archive.save(path, variables, metadata={
        "net": "lenet300", "data": "fashion_mnist", "num_classes": 10,
        "preprocess": data.Preprocess(pad_to=4096).to_dict()})
    proc = _run("evaluate", str(path))
    assert proc.returncode == 1 and "pad_to: must be an integer in [28, 56], got 4096" in \
        proc.stderr, proc.stderr


def test_train_init_from_starts_from_the_matching_layers_of_a_file(tmp_path, capsys):
    def accuracy_after(out, *extra):
        cli.main(["train", "--net", "lenet300", "--epochs", "1", "--out", str(tmp_path / out),
                  "--quiet", "--max-test-examples", "1000", *extra])
        printed = capsys.readouterr().out
        return printed, float(printed.split("test accuracy ")[1].split()[0].rstrip(","))

    _, donor = accuracy_after("donor", "--max-steps", "40")
    donor_file = str(tmp_path / "donor" / "model.zyl")
    printed, warm = accuracy_after("warm", "--max-steps", "1", "--init-from", donor_file)
    assert (f"warm start from {donor_file}: 6 leaves, 266,610 of 266,610 parameters; no layer "
            "starts fresh") in printed
    _, cold = accuracy_after("cold", "--max-steps", "1")
    assert warm > cold + 0.1 and warm > donor - 0.1, (cold, warm, donor)

    # a resumed run keeps its checkpoint and says the file is not used
    printed, _ = accuracy_after("warm", "--max-steps", "1", "--init-from", donor_file)
    assert f"--init-from {donor_file} is not used: the run resumes its checkpoint" in printed

    # nothing in common, or no file: one line, no traceback
    for net, source, message in (("lenet5", donor_file, "no layer of the donor matches"),
                                 ("lenet300", str(tmp_path / "none.zyl"), "none.zyl")):
        with pytest.raises(SystemExit) as refused:
            cli.main(["train", "--net", net, "--max-steps", "1", "--quiet",
                      "--out", str(tmp_path / "other"), "--init-from", source])
        assert refused.value.code == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["train", "compress"])
def test_augment_flag_overrides_the_recipe_of_train_and_compress(command):
    parser = cli.build_parser()
    base = [command, "--net", "lenet300", "--out", "unused"]
    assert not registry.get("lenet300").recipe.augment
    assert cli.sources.check_common(parser.parse_args(base + ["--augment"])).recipe.augment
    assert not cli.sources.check_common(parser.parse_args(base)).recipe.augment
    assert not cli.sources.check_common(parser.parse_args(base + ["--no-augment"])).recipe.augment


@pytest.mark.parametrize("command", ["train", "compress"])
def test_recipe_flag_lends_a_registered_nets_recipe_to_any_model(command):
    parser = cli.build_parser()
    model = ["--model", "zylax.nets:LeNet5"]
    own = cli.sources.check_common(parser.parse_args([command, *model, "--out", "unused"])).recipe
    assert own == train.Recipe(epochs=10)
    lent = cli.sources.check_common(parser.parse_args(
        [command, *model, "--recipe", "mobilenet_v2", "--out", "unused"])).recipe
    assert lent == registry.get("mobilenet_v2").recipe and lent.sgd_momentum == 0.9
    net = cli.sources.check_common(parser.parse_args(
        [command, "--net", "lenet5", "--recipe", "sepnet", "--augment", "--out", "unused"]))
    assert net.recipe == dataclasses.replace(registry.get("sepnet").recipe, augment=True)


def test_a_user_model_trains_with_a_lent_recipe_and_its_file_keeps_the_padding(tmp_path,
                                                                                in_process):
    """A module zylax did not define (own names, BatchNorm, no train argument), trained with
    mobilenet_v2's recipe: SGD, 28x28 images padded to 32x32, which the file records."""
    (tmp_path / "my_models.py").write_text(USER_MODEL)
    proc = _run("train", "--model", "my_models:Net", "--recipe", "mobilenet_v2", "--max-steps",
                "5", "--max-examples", "1024", "--max-test-examples", "500", "--quiet",
                "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "recipe of mobilenet_v2: Recipe(epochs=10, batch_size=128, learning_rate=0.05," \
        in proc.stdout and "pad_to=32, sgd_momentum=0.9)" in proc.stdout
    _, metadata = archive.load(tmp_path / "run" / "model.zyl")
    assert metadata["preprocess"]["pad_to"] == 32
    trained = proc.stdout.split("test accuracy ")[1].split()[0]
    code, printed, _ = in_process("evaluate", str(tmp_path / "run" / "model.zyl"),
                                  "--max-examples", "500", "--model", "my_models:Net",
                                  cwd=tmp_path)
    assert code == 0 and f"test accuracy {trained}" in printed

    # another class than the file records: a one-line warning, then the model the user named
    (tmp_path / "my_models.py").write_text(USER_MODEL + "\n\nclass Renamed(Net):\n    pass\n"
                                           "\n\ndef factory():\n    return Net()\n")
    code, printed, err = in_process("evaluate", str(tmp_path / "run" / "model.zyl"),
                                    "--max-examples", "500", "--model", "my_models:Renamed",
                                    cwd=tmp_path)
    assert code == 0 and f"test accuracy {trained}" in printed
    assert err.strip() == (
        f"zylax evaluate: warning: {tmp_path / 'run' / 'model.zyl'} records the model "
        "'my_models:Net'; using --model my_models:Renamed as you named it")
    # a factory that builds the recorded class: no warning
    code, _, err = in_process("evaluate", str(tmp_path / "run" / "model.zyl"),
                              "--max-examples", "500", "--model", "my_models:factory",
                              cwd=tmp_path)
    assert code == 0 and err.strip() == ""

    # compress --from needs the model named too, and then retrains the user's model; with
    # --tflite the file is exported and scored in LiteRT on the same 250 test images
    out, shipped = tmp_path / "compressed.zyl", tmp_path / "phone" / "compressed.tflite"
    args = ["compress", "--from", str(tmp_path / "run" / "model.zyl"), "--prune-cycles", "1",
            "--retrain-epochs", "0", "--finetune-epochs", "0", "--sparsity", "0.5",
            "--bits", "5", "--max-examples", "512", "--max-test-examples", "250", "--quiet",
            "--out", str(out)]
    code, _, err = in_process(*args, cwd=tmp_path)
    assert code == 2 and "pass --model my_models:Net" in err
    assert not out.exists()
    code, printed, err = in_process(*args, "--model", "my_models:Net", "--tflite", str(shipped),
                                    "--report", str(tmp_path / "report.json"), cwd=tmp_path)
    assert code == 0, err
    _, metadata = archive.load(out)
    assert metadata["model"] == "my_models:Net"
    shipped_row = json.loads((tmp_path / "report.json").read_text())["export"]
    assert shipped_row["tflite_bytes"] == shipped.stat().st_size
    assert shipped_row["download_bytes"] == len(gzip.compress(shipped.read_bytes(), 9, mtime=0))
    assert shipped_row["test_examples"] == 250
    litert_accuracy = shipped_row["litert"]["accuracy"]
    from_file = float(printed.split("compressed (the file) accuracy: ")[1].split("%")[0]) / 100
    assert abs(litert_accuracy - from_file) <= 3 / 250  # int8 snapping moves a few images
    assert f"test accuracy {litert_accuracy:.4f} in the interpreter on 250 images" in printed
    assert "LiteRT (" in (tmp_path / "report.md").read_text()


def test_argument_errors_are_one_line_too():
    for args in (["inspect"], ["export", "x.zyl", "--out", "y", "--weights", "int3"],
                 ["compress", "--nope"]):
        proc = _run(*args)
        assert proc.returncode == 2, args
        assert len(proc.stderr.strip().splitlines()) == 1 and "--help" in proc.stderr, args


def test_an_output_that_is_a_fifo_or_empty_is_refused_before_any_work(tmp_path, capsys):
    os.mkfifo(tmp_path / "pipe")
    for out in (str(tmp_path / "pipe"), "", str(tmp_path / "sub") + "/"):
        with pytest.raises(SystemExit) as refused:
            cli.main(["export", "no_such.zyl", "--out", out])
        assert refused.value.code == 2
        assert "--out" in capsys.readouterr().err
    with pytest.raises(ValueError, match="is not a regular file; refusing to replace it"):
        archive.write_atomic(tmp_path / "pipe", b"x")
    assert not (tmp_path / "pipe").is_file()


def test_a_dataset_a_file_names_is_never_downloaded(tmp_path):
    model = registry.get("lenet5").factory(10)
    variables = train.init_variables(model, np.zeros((1, 32, 32, 3), np.float32), 0)
    path = tmp_path / "cifar.zyl"
    archive.save(path, variables, metadata={
        "net": "lenet5", "data": "cifar10", "num_classes": 10, "input_shape": [32, 32, 3],
        "preprocess": data.Preprocess().to_dict()})
    proc = _run("evaluate", str(path), env={"TFDS_DATA_DIR": str(tmp_path / "tfds")})
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "'cifar10' is not on this machine" in proc.stderr
    assert not (tmp_path / "tfds").exists() or not any((tmp_path / "tfds").rglob("*.tfrecord*"))


def test_a_diverging_run_stops_at_the_epoch_with_one_line(tmp_path, fmnist_train):
    import optax

    model = registry.get("lenet300").factory(10)
    images, labels = fmnist_train[0][:512], fmnist_train[1][:512]
    huge = jax.tree.map(lambda w: np.full(np.shape(w), 3e38, np.float32),
                        train.init_variables(model, np.zeros((1, 28, 28, 1), np.float32), 0))
    with pytest.raises(FloatingPointError, match="training diverged: the mean loss of epoch 1"):
        train.fit(model, optax.adam(1e-3), (images, labels), epochs=3, variables=huge,
                  progress=False)


def test_byte_counts_read_as_people_write_them():
    read = cli.checks.byte_count
    assert [read(t) for t in ("20000", "20KB", "20kb", "1.5MB", "2KiB", "1MiB", "300 B", "20KIB",
                              "1.001KB")] == [
        20_000, 20_000, 20_000, 1_500_000, 2048, 1 << 20, 300, 20_480, 1001]


def test_the_help_describes_the_command(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    help_text = capsys.readouterr().out
    assert "train, compress, sensitivity, evaluate, inspect, export" in help_text
    assert "argument parser" not in help_text  # not a module's own docstring


def test_a_lent_recipe_that_pads_too_little_is_refused_before_any_data_loads(tmp_path, capsys,
                                                                             monkeypatch):
    def loaded(*args, **kwargs):
        raise AssertionError("the data loaded before the check")
    monkeypatch.setattr(data, "load", loaded)
    monkeypatch.setattr(data.Dataset, "load", loaded)
    for command in (["train", "--out", str(tmp_path / "o")],
                    ["compress", "--out", str(tmp_path / "m.zyl"), "--workdir",
                     str(tmp_path / "w")]):
        with pytest.raises(SystemExit) as refused:
            cli.main([*command, "--net", "deeplabv3_mobilenet_v2", "--recipe", "mobilenet_v2",
                      "--data", "fashion_mnist_scenes"])
        assert refused.value.code == 2
        assert "pads images to 32x32, but the fashion_mnist_scenes images are 96x96" in \
            capsys.readouterr().err
