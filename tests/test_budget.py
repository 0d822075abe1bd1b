"""Budget allocation: the knapsack finds the true optimum, the codecs' size model predicts the
written file, and ``zylax compress --budget`` writes a file under its budget on real data."""

import dataclasses
import itertools
import json
import os
import re

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zylax import archive, budget, cli, compress, data, export, sensitivity, tasks
from zylax.transforms import tree as ztree


def _brute_force(options, *, budget_bytes=None, max_drop=None, fixed=0):
    """The best choice by trying every combination."""
    names = list(options)
    best = None
    for combo in itertools.product(*(options[n] for n in names)):
        size = fixed + sum(o.bytes for o in combo)
        drop = sum(o.drop for o in combo)
        if budget_bytes is not None and size <= budget_bytes:
            key = (round(drop + budget.TIE_WEIGHT * sum(o.error for o in combo), 12),)
        elif max_drop is not None and drop <= max_drop + 1e-12:
            key = (size, round(drop, 9))
        else:
            continue
        best = key if best is None or key < best else best
    return best


layers = st.lists(st.lists(st.tuples(st.integers(1, 500), st.integers(0, 40), st.integers(0, 9)),
                           min_size=1, max_size=4), min_size=1, max_size=4)
"""Layers of options ``(bytes, drop in quarter points, error in tenths)``: many equal drops,
which the errors order."""


@settings(max_examples=60, deadline=None)
@given(layers, st.integers(0, 100), st.integers(0, 1500))
def test_the_allocator_finds_the_optimum_within_the_budget(groups, fixed, room):
    options = {f"l{i}": [budget.Option(0.5, 4, b, d / 4, e / 10) for b, d, e in group]
               for i, group in enumerate(groups)}
    limit = fixed + room
    # costs are whole bytes and the budget below the resolution: the rounding is exact
    chosen = budget.allocate(options, budget=limit, fixed_bytes=fixed)
    expected = _brute_force(options, budget_bytes=limit, fixed=fixed)
    if expected is None:
        assert chosen is None
        return
    size = fixed + sum(o.bytes for o in chosen.values())
    assert size <= limit
    objective = sum(o.drop + budget.TIE_WEIGHT * o.error for o in chosen.values())
    assert round(objective, 12) == expected[0]


@settings(max_examples=60, deadline=None)
@given(layers, st.integers(0, 80))
def test_the_allocator_finds_the_smallest_choice_within_the_drop(groups, quarter_points):
    options = {f"l{i}": [budget.Option(0.5, 4, b, d / 4, e / 10) for b, d, e in group]
               for i, group in enumerate(groups)}
    max_drop = quarter_points / 4
    # one step a quarter point: the rounding is exact
    chosen = budget.allocate(options, max_drop=max_drop, resolution=max(quarter_points, 1))
    expected = _brute_force(options, max_drop=max_drop)
    if expected is None:
        assert chosen is None
        return
    drop = sum(o.drop for o in chosen.values())
    assert drop <= max_drop + 1e-9
    assert sum(o.bytes for o in chosen.values()) == expected[0]


def test_rounding_costs_up_never_exceeds_a_large_budget():
    rng = np.random.default_rng(0)
    options = {f"l{i}": [budget.Option(0.0, 4, int(b), float(d)) for b, d in
                         zip(rng.integers(10_000, 500_000, 6), rng.random(6) * 5)]
               for i in range(5)}
    for limit in (100_000, 700_000, 1_300_000):
        chosen = budget.allocate(options, budget=limit, fixed_bytes=1234)
        assert chosen is None or 1234 + sum(o.bytes for o in chosen.values()) <= limit


def test_budget_or_max_drop_exactly_one():
    with pytest.raises(ValueError, match="budget or max_drop"):
        budget.allocate({}, budget=10, max_drop=1.0)


def test_the_allocator_refuses_what_it_cannot_price():
    good = {"a": [budget.Option(0.0, None, 0, 0.0), budget.Option(0.5, 4, 10, 1.0)]}
    assert budget.allocate(good, budget=5)["a"].bytes == 0  # a free option is a choice
    for bad, message in [({"a": []}, "no option"),
                         ({"a": [budget.Option(0.5, 4, 10, float("nan"))]}, "finite drop"),
                         ({"a": [budget.Option(0.5, 4, -1, 0.0)]}, "bytes >= 0"),
                         ({"a": [budget.Option(0.5, 4, 1, 0.0, -1.0)]}, "error >= 0")]:
        with pytest.raises(ValueError, match=message):
            budget.allocate(bad, budget=100)
    with pytest.raises(ValueError, match="finite number of bytes"):
        budget.allocate(good, budget=float("inf"))
    with pytest.raises(ValueError, match="finite number of points"):
        budget.allocate(good, max_drop=float("nan"))
    for resolution in (0, 1.5, budget.MAX_RESOLUTION + 1):
        with pytest.raises(ValueError, match="resolution"):
            budget.allocate(good, budget=100, resolution=resolution)


@pytest.fixture(scope="module")
def trained(lenet300_trained):
    return lenet300_trained


GRID = dict(sparsities=(0.0, 0.8, 0.9, 0.95), bits=(2, 3, 5))
"""A small grid of settings: the curves measured once for the tests that plan from them."""


@pytest.fixture(scope="module")
def curves(trained):
    """LeNet-300-100's curves on ``GRID``, with the ternary and binary forms scored."""
    model, variables, train_data, prep = trained
    return sensitivity.sensitivity(model, variables, train_data, preprocess=prep,
                                   forms=("ternary", "binary"), **GRID)


def test_each_option_costs_what_the_archive_writes_for_it(trained):
    model, variables, train_data, prep = trained
    w = variables["params"]["ip2"]["kernel"]
    leaf = budget.shared_leaf(w, 0.8, 3)
    assert np.mean(np.asarray(leaf.indices) == 8) == pytest.approx(0.8, abs=1e-3)  # pruned
    alone = len(archive.to_bytes({"params": {"a": leaf}}))
    empty = len(archive.to_bytes({"params": {"a": np.zeros(1, np.float32)}}))
    measured = alone - empty + archive.leaf_bytes(np.zeros(1, np.float32))
    assert abs(archive.leaf_bytes(leaf) - measured) <= 0.01 * measured  # header compression


def test_the_predicted_size_is_the_written_size_within_one_percent(trained, fmnist_test,
                                                                   tmp_path):
    model, variables, train_data, prep = trained
    test_data = (fmnist_test[0][:500], fmnist_test[1][:500])
    metadata = tasks.file_metadata(tasks.Classification(), prep, *train_data,
                                   compress.model_hint(model))
    for limit, index_bits in ((30_000, "ans"), (90_000, "auto")):
        plan = budget.plan(model, variables, train_data, budget=limit, preprocess=prep,
                           metadata=metadata, sparsities=(0.0, 0.8, 0.9, 0.95),
                           bits=(2, 3, 5), index_bits=index_bits)
        assert plan.predicted_bytes <= limit * (1 - budget.MARGIN)
        chain = plan.methods(epochs=0)  # no retraining: exactly what was predicted
        last = chain[-1].members if hasattr(chain[-1], "members") else (chain[-1],)
        assert [m.index_bits for m in last if m.name == "share"] == [index_bits]
        out = tmp_path / f"{limit}.zyl"
        result = compress.run(model, variables, train_data, test_data, chain, out=str(out),
                              preprocess=prep, progress=False,
                              retrain=compress.Retrain(learning_rate=1e-3))
        written = os.path.getsize(out)
        assert abs(written - plan.predicted_bytes) <= 0.01 * written, (written, plan)
        assert result.report["decoded_exactly"]
        chosen = {n: (o.sparsity, o.bits) for n, o in plan.choice.items()}
        assert any(bits is not None for _, bits in chosen.values()), chosen


def test_ternary_and_binary_layers_are_priced_and_written_as_planned(trained, curves,
                                                                     fmnist_test, tmp_path):
    """A plan storing ip2 ternary and ip3 binary (and ip1 pruned and shared): the chain
    writes those codecs, the options' bytes are what the file holds, their drops the
    curves' forms."""
    model, variables, train_data, prep = trained
    params = {n: np.asarray(w) for n, w in ztree.named_leaves(variables["params"]).items()}
    options = {n: {o.form: o for o in budget.form_options(params[n], curves, n)}
               for n in curves.weights}
    assert all(set(found) == {"ternary", "binary"} for found in options.values())
    ternary, binary = options["ip2/kernel"]["ternary"], options["ip3/kernel"]["binary"]
    assert ternary.drop == pytest.approx(max(0.0, 100 * (curves.dense - curves.forms[
        "ip2/kernel"]["ternary"])))
    shared = [o for o in budget.shared_options(params["ip1/kernel"], curves, "ip1/kernel",
                                                sparsities=(0.9,), bits=(3,))]
    metadata = tasks.file_metadata(tasks.Classification(), prep, *train_data,
                                   compress.model_hint(model))
    choice = {"ip1/kernel": shared[0], "ip2/kernel": ternary, "ip3/kernel": binary}
    fixed = budget._fixed_bytes(variables, set(choice), None, metadata)
    plan = budget.Plan(choice, None, fixed, curves.metric, curves.dense, 0.0, budget=10 ** 6,
                       curves=curves)
    assert "| ip2/kernel | ternary |" in plan.format_table()
    out = tmp_path / "forms.zyl"
    result = compress.run(model, variables, train_data, (fmnist_test[0][:500],
                                                         fmnist_test[1][:500]),
                          plan.methods(epochs=0), out=str(out), preprocess=prep,
                          progress=False, retrain=compress.Retrain(learning_rate=1e-3))
    stored = {row["name"]: row["method"] for row in result.report["layers"]}
    assert (stored["ip1/kernel"], stored["ip2/kernel"], stored["ip3/kernel"]) == (
        "shared", "ternary", "binary")
    written = os.path.getsize(out)
    assert abs(written - plan.predicted_bytes) <= 0.01 * written, (written, plan)


def test_whole_layer_forms_are_offered_only_when_asked_for(trained, curves):
    """Curves in which binary loses nothing: the plan takes it for the big layers only with
    ``forms``; without, the same curves give pruning and sharing."""
    model, variables, train_data, prep = trained
    grid = dict(**GRID, preprocess=prep)
    lossless = dataclasses.replace(curves, forms={
        n: {"binary": curves.dense, "ternary": 0.0} for n in curves.weights})
    plain = budget.plan(model, variables, train_data, budget=40_000, curves=lossless, **grid)
    assert all(o.form is None for o in plain.choice.values())
    offered = budget.plan(model, variables, train_data, budget=40_000, curves=lossless,
                          forms=("binary", "ternary"), **grid)
    assert offered.choice["ip1/kernel"].form == "binary"  # 29 KB, no drop: the best of all
    assert offered.to_dict()["forms"] == ["binary", "ternary"] and plain.forms == ()
    assert "whole-layer forms offered: binary, ternary; chosen for ip1/kernel" in \
        offered.format_table()
    assert "whole-layer forms" not in plain.format_table()
    assert all(o.form != "ternary" for o in offered.choice.values())  # scored as useless
    assert "binary" in offered.methods()[-1].name.split("+")
    with pytest.raises(ValueError, match="forms may hold"):
        budget.plan(model, variables, train_data, budget=40_000, curves=lossless,
                    forms=("int4",), **grid)


def test_a_larger_budget_never_predicts_a_larger_drop(trained, curves):
    model, variables, train_data, prep = trained
    grid = dict(**GRID, preprocess=prep)
    first = budget.plan(model, variables, train_data, budget=25_000, curves=curves, **grid)
    second = budget.plan(model, variables, train_data, budget=120_000, curves=first.curves,
                         **grid)
    assert second.predicted_drop <= first.predicted_drop
    by_drop = budget.plan(model, variables, train_data, max_drop=second.predicted_drop,
                          curves=first.curves, **grid)
    assert by_drop.predicted_drop <= second.predicted_drop + 1e-9
    assert by_drop.predicted_bytes <= second.predicted_bytes
    with pytest.raises(ValueError, match="smallest file these options make"):
        budget.plan(model, variables, train_data, budget=2_000, curves=first.curves, **grid)


def test_the_command_writes_a_file_under_a_tiny_budget_and_its_report(trained, tmp_path,
                                                                      capsys):
    pytest.importorskip("ai_edge_litert", reason="--tflite needs zylax[litert]")
    model, variables, train_data, prep = trained
    path = tmp_path / "model.zyl"
    archive.save(path, variables, metadata=tasks.file_metadata(
        tasks.Classification(), prep, *train_data, {"net": "lenet300", "data": "fashion_mnist"}))
    out, rep, phone = tmp_path / "small.zyl", tmp_path / "small.json", tmp_path / "small.tflite"
    cli.main(["compress", "--from", str(path), "--budget", "16KB",  # ANS-coded masks: default
              "--max-examples", "2000", "--finetune-epochs", "0",  # the plan as measured
              "--max-test-examples", "1000", "--quiet",
              "--out", str(out), "--report", str(rep), "--tflite", str(phone)])
    printed = capsys.readouterr().out
    download = json.loads(rep.read_text())["export"]["download_bytes"]
    over = f"the download is over --budget 16,000 B, which caps the .zyl file: for a " \
        f"download under it, run again with about --budget " \
        f"{16_000 * out.stat().st_size // download:,}"
    assert download > 16_000 and over in printed  # the graph and gzip add about a fifth
    assert 0 < out.stat().st_size <= 16_000  # 1.07 MB of float weights in 16 KB
    written = json.loads(rep.read_text())["budget"]
    assert written["written_bytes"] == out.stat().st_size and written["budget"] == 16_000
    assert set(written["layers"]) == {"ip1/kernel", "ip2/kernel", "ip3/kernel"}
    assert written["index_bits"] == "ans"
    assert "ans" in {e.get("form") for e in archive.read_header(out)["leaves"]}
    assert "budget 16,000 B: predicted" in printed and "| **predicted file** |" in printed


def test_bad_plans_are_refused_before_any_curve_is_measured(trained, monkeypatch):
    model, variables, train_data, prep = trained

    def measured(*args, **kwargs):
        raise AssertionError("measured the curves first")
    monkeypatch.setattr(budget.sensitivity, "sensitivity", measured)
    for kwargs, message in [(dict(budget=float("nan")), "whole number"),
                            (dict(budget=10_000, margin=-1), "margin"),
                            (dict(budget=10_000, bits=()), "bits"),
                            (dict(budget=10_000, sparsities=(1.0,)), "sparsities"),
                            (dict(budget=900), "takes 1,")]:  # 410 biases, the header
        with pytest.raises(ValueError, match=message):
            budget.plan(model, variables, train_data, preprocess=prep, **kwargs)


def test_a_file_still_over_budget_is_removed_and_said(trained, tmp_path, monkeypatch):
    model, variables, train_data, prep = trained
    out = tmp_path / "m.zyl"
    plans = []

    class Stub:
        curves = None

        def methods(self, epochs):
            return ["stub"]

        def to_dict(self):
            return {}

    def plan(*args, budget, **kwargs):
        plans.append(budget)
        return Stub()

    def run(*args, out, **kwargs):
        out_bytes = 2 * plans[0]  # retraining grew the codes past every plan
        open(out, "wb").write(b"x" * out_bytes)
        return compress.Result(variables=None, report={"file_bytes": out_bytes},
                               stored=None, snapshots=None)
    monkeypatch.setattr(budget, "plan", plan)
    monkeypatch.setattr(budget.compress, "run", run)
    with pytest.raises(RuntimeError, match="over the budget of 10,000 after 2 plans"):
        budget.run(model, variables, train_data, train_data, out=str(out), budget=10_000)
    assert plans == [10_000, 5_000] and not out.exists()

    def run_then_fail(*args, out, **kwargs):
        if os.path.exists(out):
            raise KeyboardInterrupt  # the second run stopped: its file never replaced the first
        return run(*args, out=out, **kwargs)
    plans.clear()
    monkeypatch.setattr(budget.compress, "run", run_then_fail)
    with pytest.raises(KeyboardInterrupt):
        budget.run(model, variables, train_data, train_data, out=str(out), budget=10_000)
    assert not out.exists()  # the over-budget file of the first run is not left behind
    with pytest.raises(ValueError, match="tries"):
        budget.run(model, variables, train_data, train_data, out=str(out), budget=10, tries=0)


@pytest.mark.parametrize("argv, message", [
    (["--budget", "20 parsecs"], "give bytes"),
    (["--budget", "0"], "between 100 bytes"),
    (["--budget", "20KB", "--retrain-epochs", "0"], "drop --retrain-epochs"),
    (["--budget", "20KB", "--gradual-epochs", "0"], "drop --gradual-epochs"),
    (["--budget", "20KB", "--stochastic"], "drop --stochastic"),
    (["--budget", "20KB", "--report", "same.zyl", "--out", "same.zyl"], "the --out file"),
    (["--budget", "20KB", "--report", "r.json", "--out", "r.md"], "writes r.md, the --out"),
    (["--report", "r.json", "--out", "r_kept.png"], "writes r_kept.png, the --out"),
    (["--budget", "20KB", "--max-drop", "1"], "not both"),
    (["--budget", "2000000MB"], "10\\^12 bytes"),
    (["--max-drop", "-1"], r"\[0, 100\]"),
    (["--budget", "20KB", "--method", "ttq"], "drop --method"),
    (["--max-drop", "0.5", "--sparsity", "0.9", "--bits", "4"], "drop --sparsity, --bits"),
    (["--budget", "20KB", "--index-bits", "5"], "may be 'auto' or 'ans'"),
    (["--forms", "binary"], "--forms offers options to --budget or --max-drop; give one"),
])
def test_bad_budgets_are_usage_errors(argv, message, tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as exit_info:
        monkeypatch.chdir(tmp_path)
        cli.main(["compress", "--net", "lenet300", "--out", "m.zyl", *argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert re.search(message, err), err



class _UsersNet(nn.Module):
    """A model zylax did not define: its own layer names, BatchNorm, an ``is_training`` flag."""

    @nn.compact
    def __call__(self, x, is_training: bool = False):
        x = nn.Conv(8, (3, 3), strides=2, name="stem")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not is_training, name="stem_norm")(x))
        x = nn.relu(nn.Dense(32, name="features")(x.reshape((x.shape[0], -1))))
        return nn.Dense(10, name="logits")(x)


def test_a_users_batchnorm_model_fits_its_budget_and_keeps_its_accuracy(fmnist_train,
                                                                        fmnist_test, tmp_path):
    images, labels = fmnist_train[0][:4000], fmnist_train[1][:4000]
    test_data = (fmnist_test[0][:2000], fmnist_test[1][:2000])
    prep = data.Preprocess.fit(images)
    model = _UsersNet()
    variables = model.init(jax.random.key(0), prep(images[:1]))
    tx = optax.adam(1e-3)

    @jax.jit
    def step(variables, opt_state, x, y):  # the user's own loop
        def loss(params):
            logits, updates = model.apply({**variables, "params": params}, x, is_training=True,
                                          mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates
        grads, updates = jax.grad(loss, has_aux=True)(variables["params"])
        grads, opt_state = tx.update(grads, opt_state)
        return {**updates, "params": optax.apply_updates(variables["params"], grads)}, opt_state

    opt_state = tx.init(variables["params"])
    for _ in range(2):
        for i in range(0, len(images), 100):
            variables, opt_state = step(variables, opt_state, prep(images[i:i + 100]),
                                        labels[i:i + 100])
    out = tmp_path / "users.zyl"
    found, result = budget.run(model, variables, (images, labels), test_data, out=str(out),
                               budget=20_000, preprocess=prep, progress=False)
    assert out.stat().st_size <= 20_000 < archive.leaf_bytes(
        np.asarray(variables["params"]["features"]["kernel"]))  # 200 KB of float weights
    assert set(found.choice) == {"stem/kernel", "features/kernel", "logits/kernel"}
    assert set(result.variables) == {"params", "batch_stats"}  # its statistics stored too
    rep = result.report
    assert rep["compressed_accuracy"] >= rep["dense_accuracy"] - 0.02, rep["budget"]
    # ...and ships: the file exported for phones through the public API (BatchNorm folded,
    # each kernel in its smallest form), scored in LiteRT on those very kernels
    pytest.importorskip("ai_edge_litert", reason="the export needs zylax[litert]")
    loaded, _ = archive.load(out)
    methods = export.stored_methods(archive.read_header(out))
    shipped, scored = export.ship(model, loaded, *test_data, task=tasks.Classification(),
                                  preprocess=prep, out=str(tmp_path / "users.tflite"),
                                  methods=methods)
    dense = export.export(model, loaded, prep(test_data[0][:1]), methods=methods, sparse=False)
    assert shipped.download_bytes <= dense.download_bytes
    assert abs(scored["accuracy"] - rep["compressed_accuracy"]) <= 3 / 2000, shipped.layers
