"""Per-layer sensitivity (Han's Figure 6) on a real trained model: exact at the dense end,
scored on held-out training data only, and from the command line."""

import json

import flax.linen as nn
import numpy as np
import optax
import pytest

from zylax import archive, cli, data, sensitivity, tasks, train


@pytest.fixture(scope="module")
def trained(lenet300_trained):
    return lenet300_trained


def test_the_dense_end_of_every_curve_is_the_model_as_given(trained):
    model, variables, train_data, prep = trained
    found = sensitivity.sensitivity(model, variables, train_data, preprocess=prep,
                                    sparsities=(0.0, 0.9, 0.99), bits=(2, 8))
    held = sensitivity.held_out(train_data)
    expected = train.evaluate(model, variables, *held, preprocess=prep)["accuracy"]
    assert found.examples == 300 and found.dense == expected
    assert list(found.weights) == ["ip1/kernel", "ip2/kernel", "ip3/kernel"]
    for layer in found.weights:
        assert found.sparsity[layer][0.0] == found.dense  # exactly, not approximately
        assert abs(found.bits[layer][8] - found.dense) <= 0.01  # 256 values: near dense
    assert found.sparsity["ip3/kernel"][0.99] < found.dense - 0.2  # the 1,000-weight output
    assert found.sparsity["ip1/kernel"][0.9] > found.sparsity["ip3/kernel"][0.9]  # Han's Fig. 6
    assert found.bits["ip3/kernel"][2] < found.bits["ip3/kernel"][8]


def test_each_form_scores_the_model_with_that_layer_quantized_as_its_method_starts(trained):
    model, variables, train_data, prep = trained
    found = sensitivity.sensitivity(model, variables, train_data, preprocess=prep,
                                    include=".*ip2/kernel", sparsities=(0.5,), bits=(2,),
                                    forms=("ternary", "binary"))
    held = sensitivity.held_out(train_data)
    w = variables["params"]["ip2"]["kernel"]
    for form in ("ternary", "binary"):
        variant, stored = sensitivity.form_leaf(w, form)
        assert np.unique(np.asarray(variant)).size <= (3 if form == "ternary" else 2 * 100)
        swapped = {**variables, "params": {**variables["params"], "ip2": {
            **variables["params"]["ip2"], "kernel": variant}}}
        expected = train.evaluate(model, swapped, *held, preprocess=prep)["accuracy"]
        assert found.forms["ip2/kernel"][form] == pytest.approx(expected, abs=1e-9)
        assert type(stored).__name__ == form.capitalize()  # the codec leaf it is stored as
    assert "| ternary | binary |" in found.format_table().splitlines()[2]
    assert found.to_dict()["forms"] == found.forms
    with pytest.raises(ValueError, match="forms may hold"):
        sensitivity.sensitivity(model, variables, train_data, preprocess=prep, forms=("int4",))


def test_it_scores_held_out_training_examples_never_the_test_set(trained, monkeypatch):
    model, variables, train_data, prep = trained
    seen = []
    batches = data.batches

    def spy(images, *args, **kwargs):
        seen.append(images)
        return batches(images, *args, **kwargs)
    monkeypatch.setattr(data, "batches", spy)
    sensitivity.sensitivity(model, variables, train_data, preprocess=prep,
                            include=".*ip3/kernel", sparsities=(0.5,), bits=(3,))
    assert all(np.array_equal(images, train_data[0][-300:]) for images in seen) and seen


def test_other_tasks_score_each_variant_with_their_metric(trained):
    model, variables, train_data, prep = trained

    class Labelled(tasks.Classification):  # any task that is not "classification" by name
        name = "labelled"

    found = sensitivity.sensitivity(model, variables, train_data, preprocess=prep,
                                    task=Labelled(), include=".*ip3/kernel",
                                    sparsities=(0.0, 0.99), bits=(1,))
    assert found.sparsity["ip3/kernel"][0.0] == found.dense
    assert found.sparsity["ip3/kernel"][0.99] < found.dense


def test_a_selection_of_no_kernel_is_refused(trained):
    model, variables, train_data, prep = trained
    with pytest.raises(ValueError, match="selects no params leaf"):
        sensitivity.sensitivity(model, variables, train_data, include=".*bias")


def test_the_command_writes_the_table_json_and_figure(trained, tmp_path, capsys):
    model, variables, train_data, prep = trained
    path = tmp_path / "model.zyl"
    archive.save(path, variables, metadata=tasks.file_metadata(
        tasks.Classification(), prep, *train_data, {"net": "lenet300", "data": "fashion_mnist"}))
    out = tmp_path / "sens.json"
    cli.main(["sensitivity", "--from", str(path), "--max-examples", "2000", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "| ip1/kernel | 235,200 |" in printed and "pruned 0.99" in printed
    written = json.loads(out.read_text())
    assert written["examples"] == 200 and set(written["sparsity"]) == {
        "ip1/kernel", "ip2/kernel", "ip3/kernel"}
    assert written["sparsity"]["ip1/kernel"]["0"] == written["dense"]
    assert (tmp_path / "sens.png").stat().st_size > 10_000 and (tmp_path / "sens.md").exists()


def test_the_command_refuses_outputs_over_its_input_and_a_bad_regex_before_any_work(
        trained, tmp_path, capsys):
    model, variables, train_data, prep = trained
    path = tmp_path / "model.zyl"
    archive.save(path, variables, metadata=tasks.file_metadata(
        tasks.Classification(), prep, *train_data, {"net": "lenet300", "data": "fashion_mnist"}))
    before = path.read_bytes()
    for argv, message in [
            (["--out", str(path)], "is the input file"),
            (["--out", str(tmp_path / "model.md")], "the JSON path"),
            (["--out", str(tmp_path / "s.json"), "--include", "("], "--include: bad regex")]:
        with pytest.raises(SystemExit) as refused:
            cli.main(["sensitivity", "--from", str(path), *argv])
        assert refused.value.code == 2 and message in capsys.readouterr().err, argv
    assert path.read_bytes() == before


class UserNet(nn.Module):
    """Own layer names, BatchNorm and a ``training`` flag: a model zylax did not define."""

    @nn.compact
    def __call__(self, x, training: bool = False):
        x = nn.Conv(8, (3, 3), strides=2, name="stem_conv")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not training, name="stem_bn")(x))
        return nn.Dense(10, name="head")(x.reshape((x.shape[0], -1)))


def test_a_users_batchnorm_model_is_scored_in_inference_mode(fmnist_train):
    images, labels = fmnist_train[0][:1000], fmnist_train[1][:1000]
    prep = data.Preprocess.fit(images)
    model = UserNet()
    result = train.fit(model, optax.adam(3e-3), (images, labels), epochs=1, batch_size=100,
                       preprocess=prep, progress=False)
    found = sensitivity.sensitivity(model, result.variables, (images, labels),
                                    preprocess=prep, sparsities=(0.0, 0.99), bits=(1,))
    held = sensitivity.held_out((images, labels))
    assert found.dense == train.evaluate(model, result.variables, *held,
                                         preprocess=prep)["accuracy"]
    assert set(found.weights) == {"stem_conv/kernel", "head/kernel"}
    assert found.sparsity["head/kernel"][0.0] == found.dense > 0.5
    assert found.sparsity["head/kernel"][0.99] < found.dense
