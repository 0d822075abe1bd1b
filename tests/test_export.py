"""``zylax.export``: LiteRT files of tiny models, checked against JAX and read back exactly."""

import gzip
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zylax import archive, cli, codecs, export, nets
from zylax.containers import Binary, Cast, Pattern, Shared, Ternary
from zylax.nets import TapConv

litert = pytest.importorskip("ai_edge_litert.interpreter", reason="needs zylax[litert]")
pytest.importorskip("tensorflow", reason="needs zylax[litert]")
from ai_edge_litert import schema_py_generated as schema  # noqa: E402
from ai_edge_litert.tools import flatbuffer_utils  # noqa: E402

TOLERANCE = {"float32": 1e-5, "float16": 2e-3, "auto": 1.5e-2, "int8": 1.5e-2, "int4": 0.2}
"""Max |LiteRT - JAX| per weights mode, relative to the largest |logit| of the batch."""
_AXIS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0}


class Compressed(nn.Module):
    """No BatchNorm, so every stored kernel reaches the graph unchanged."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), strides=2, name="bin")(x))  # 1 input channel: depthwise
        x = nn.relu(nn.Conv(8, (3, 3), feature_group_count=8, name="dw")(x))
        x = nn.relu(nn.Conv(16, (3, 3), strides=2, name="pat")(x))
        x = nn.relu(nn.Conv(16, (3, 3), name="ter")(x))
        x = nn.relu(nn.Dense(32, name="bnn")(x.reshape((x.shape[0], -1))))
        return nn.Dense(10, name="fc")(x)


class WithTrain(nn.Module):
    """A user model with BatchNorm after a conv and a dense layer, and a ``train`` argument."""

    @nn.compact
    def __call__(self, x, train: bool = True):
        norm = lambda name: nn.BatchNorm(use_running_average=not train, name=name)  # noqa: E731
        x = nn.relu(norm("norm1")(nn.Conv(8, (3, 3), strides=2, name="conv1")(x)))
        x = nn.relu(norm("norm2")(nn.Conv(16, (3, 3), strides=2, use_bias=False,
                                          name="conv2")(x)))
        x = nn.relu(norm("norm3")(nn.Dense(32, use_bias=False, name="fc1")(
            x.reshape((x.shape[0], -1)))))
        return nn.Dense(10, name="fc2")(x)


class WithoutTrain(nn.Module):
    """BatchNorm in training mode exactly when ``batch_stats`` is mutable (the README idiom)."""

    @nn.compact
    def __call__(self, x):
        training = self.is_mutable_collection("batch_stats")
        x = nn.Conv(8, (3, 3), strides=2, name="features")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not training, name="norm")(x))
        x = TapConv(8, (3, 3), feature_group_count=8, name="depthwise")(x)
        return nn.Dense(10, name="classifier")(x.reshape((x.shape[0], -1)))


def _inputs(n=2, side=16, seed=1):
    return np.random.default_rng(seed).normal(size=(n, side, side, 1)).astype(np.float32)


def _signs(rng, shape):
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(np.float32)


@pytest.fixture(scope="module")
def compressed():
    """``(model, variables with codec containers, dense variables)``."""
    model = Compressed()
    params = jax.tree.map(np.asarray, dict(model.init(jax.random.key(0), _inputs(1))["params"]))
    rng = np.random.default_rng(0)
    shape = lambda name: params[name]["kernel"].shape  # noqa: E731
    leaves = {
        "bin": Binary(_signs(rng, shape("bin")), rng.uniform(0.1, 1, 8).astype(np.float32)),
        "pat": Pattern(rng.uniform(0.1, 1, 16).astype(np.float32), _signs(rng, shape("pat"))),
        "ter": Ternary(rng.integers(-1, 2, shape("ter")), np.float32(0.3), np.float32(0.17)),
        "bnn": Binary(_signs(rng, shape("bnn")), np.asarray(0.05, np.float32)),
        "fc": Shared(np.sort(rng.normal(0, 0.2, 16)).astype(np.float32),  # 16: pruned
                     rng.integers(0, 17, shape("fc")))}
    for name, leaf in leaves.items():
        params[name] = {**params[name], "kernel": leaf}
    variables = {"params": params}
    return model, variables, jax.tree.map(codecs.dense, variables)


def _batchnorm_variables(model, x):
    """``model.init`` with random BatchNorm statistics, scales and shifts (so folding matters)."""
    variables = jax.tree.map(np.asarray, dict(model.init(jax.random.key(0), x, **(
        {"train": False} if isinstance(model, WithTrain) else {}))))
    rng = np.random.default_rng(2)
    jitter = lambda a, low, high: rng.uniform(low, high, a.shape).astype(np.float32)  # noqa: E731
    params = {k: ({**v, "scale": jitter(v["scale"], -2, 2), "bias": jitter(v["bias"], -1, 1)}
                  if "scale" in v else v) for k, v in variables["params"].items()}
    stats = jax.tree.map(lambda a: jitter(a, 0.2, 3), variables["batch_stats"])
    return {"params": params, "batch_stats": stats}


def _run(tflite, x, *, preserve=False):
    """The interpreter after one invoke on ``x`` (the default one, or reference kernels only)."""
    kind = litert.OpResolverType
    interpreter = litert.Interpreter(
        model_content=tflite, experimental_preserve_all_tensors=preserve,
        experimental_op_resolver_type=kind.BUILTIN_WITHOUT_DEFAULT_DELEGATES if preserve
        else kind.AUTO)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter


def _logits(tflite, x):
    interpreter = _run(tflite, x)
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _graph(tflite):
    graph = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if k.isupper()}
    ops = [(names[max(graph.operatorCodes[op.opcodeIndex].builtinCode,
                      graph.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode)], op)
           for op in graph.subgraphs[0].operators]
    return graph.subgraphs[0], ops


def _stored_kernels(tflite, x):
    """``{leaf path: (kernel the op reads, kernel from the stored ints x scales)}``, both in
    the leaf's layout, read from the interpreter (reference kernels, every tensor kept)."""
    interpreter = _run(tflite, x, preserve=True)
    subgraph, ops = _graph(tflite)
    producer = {op.outputs[0]: (name, op) for name, op in ops}
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    found = {}
    for name, op in ops:
        if name not in _AXIS or op.inputs[1] not in producer:
            continue
        axis, kernel = _AXIS[name], op.inputs[1]
        source, made_by = producer[kernel]
        quantized = [made_by.inputs[0]] if source == "DEQUANTIZE" else \
            [producer[i][1].inputs[0] for i in made_by.inputs]
        stored = sum(_dequantized(interpreter.get_tensor(i), details[i], axis)
                     for i in quantized)
        label = details[quantized[0]]["name"].removeprefix("zylax/")
        path = label.removesuffix("/pos").removesuffix("/neg").rsplit("/", 1)[0]
        found[path] = tuple(np.moveaxis(a, axis, -1) for a in
                            (interpreter.get_tensor(kernel), stored))
        assert subgraph.tensors[kernel].type == schema.TensorType.FLOAT32
    return found


def _dequantized(q, detail, axis):
    """``q * scale`` per channel from the tensor's quantization parameters (float16: as is)."""
    params = detail["quantization_parameters"]
    if not params["scales"].size:
        return q.astype(np.float32)
    assert params["quantized_dimension"] == axis and not params["zero_points"].any()
    shape = [-1 if i == axis else 1 for i in range(q.ndim)]
    return q.astype(np.float32) * params["scales"].astype(np.float32).reshape(shape)


@pytest.mark.parametrize("weights", export.WEIGHTS)
def test_every_weights_mode_runs_and_matches_jax(compressed, weights):
    model, variables, dense = compressed
    x = _inputs(3)
    result = export.export(model, variables, x, weights=weights, batch=3)
    assert result.input_shape == (3, 16, 16, 1)
    expected = np.asarray(model.apply(dense, x))
    diff = np.abs(_logits(result.tflite, x) - expected).max()
    assert diff <= TOLERANCE[weights] * np.abs(expected).max(), (weights, diff)
    assert result.max_output_diff <= TOLERANCE[weights] * np.abs(expected).max()
    sizes = {w: len(export.to_tflite(model, variables, x[:1], weights=w))
             for w in ("float32", weights)}
    assert sizes[weights] <= sizes["float32"]


@pytest.mark.parametrize("weights,bits", [("auto", "int2"), ("int8", "int8"), ("int4", "int4")])
def test_binary_pattern_ternary_kernels_read_back_exactly(compressed, weights, bits):
    model, variables, dense = compressed
    x = _inputs(1)
    result = export.export(model, variables, x, weights=weights)
    stored = _stored_kernels(result.tflite, x)
    for path in ("bin/kernel", "pat/kernel", "ter/kernel", "bnn/kernel"):
        leaf = codecs.dense(variables["params"][path.split("/")[0]]["kernel"])
        read, from_ints = (a.reshape(leaf.shape) for a in stored[path])
        assert np.array_equal(read, leaf) and np.array_equal(from_ints, leaf), path  # 0 error
        assert result.layers[path].max_error == 0.0
    assert result.layers["ter/kernel"].storage == f"{bits}+{bits}"  # w_pos != w_neg: P + N
    assert {result.layers[p].storage for p in ("bin/kernel", "pat/kernel", "bnn/kernel")} == \
        {bits}
    shared = codecs.dense(variables["params"]["fc"]["kernel"])
    read = stored["fc/kernel"][0].reshape(shared.shape)
    error = np.abs(read - shared).max()
    assert error == pytest.approx(result.layers["fc/kernel"].max_error, abs=1e-7)
    assert 0 < error <= np.abs(shared).max() / (127 if bits != "int4" else 7)


def test_a_shared_kernel_is_one_scale_and_at_most_its_codebook_of_bytes(compressed):
    """One scale for the tensor keeps the k codebook values k distinct int8 bytes, which a
    download's gzip codes in about log2(k) bits."""
    model, variables, _ = compressed
    result = export.export(model, variables, _inputs(1))
    interpreter = _run(result.tflite, _inputs(1), preserve=True)
    detail = next(d for d in interpreter.get_tensor_details()
                  if d["name"] == "zylax/fc/kernel/int8")
    q = interpreter.get_tensor(detail["index"])
    assert np.unique(detail["quantization_parameters"]["scales"]).size == 1 < q.shape[-1]
    codebook = variables["params"]["fc"]["kernel"].codebook
    assert 1 < np.unique(q).size <= codebook.size + 1  # + the pruned zero


def test_auto_keeps_raw_kernels_float32_and_snaps_shared_ones_to_int8(compressed):
    model, variables, _ = compressed
    layers = export.export(model, variables, _inputs(1)).layers
    assert layers["dw/kernel"].storage == "float32" and layers["dw/kernel"].max_error == 0
    assert layers["fc/kernel"].storage == "int8" and layers["fc/kernel"].method == "shared"
    assert layers["bin/kernel"].ops == ("DEPTHWISE_CONV_2D",)
    assert layers["bin/kernel"].bytes == 18  # 72 weights, 2 bits each
    table = export.format_layers(layers)
    assert "0 (exact)" in table and "int2+int2" in table


@pytest.mark.parametrize("model_cls", [WithTrain, WithoutTrain])
def test_batchnorm_is_folded_and_matches_inference_mode(model_cls):
    model, x = model_cls(), _inputs(2)
    variables = _batchnorm_variables(model, x)
    tflite = export.to_tflite(model, variables, x, weights="float32", batch=2)
    ops = export.op_names(tflite)
    assert not {"MUL", "ADD", "SUB", "RSQRT", "SQRT", "DIV"} & set(ops), ops
    assert "STRIDED_SLICE" not in ops  # TapConv runs as one DEPTHWISE_CONV_2D
    kwargs = {"train": False} if model_cls is WithTrain else {}
    expected = np.asarray(model.apply(variables, x, **kwargs))
    assert np.abs(_logits(tflite, x) - expected).max() <= 1e-5 * np.abs(expected).max()


def test_binary_kernels_stay_exact_after_batchnorm_folding():
    model, x = WithTrain(), _inputs(1)
    variables = _batchnorm_variables(model, x)
    rng = np.random.default_rng(3)
    kernel = variables["params"]["conv2"]["kernel"]
    variables["params"]["conv2"] = {"kernel": Binary(_signs(rng, kernel.shape),
                                                     rng.uniform(0.1, 1, 16).astype(np.float32))}
    result = export.export(model, variables, x)
    row = result.layers["conv2/kernel"]
    assert (row.method, row.storage, row.max_error) == ("binary", "int2", 0.0)
    assert "MUL" not in export.op_names(result.tflite)
    expected = np.asarray(model.apply(jax.tree.map(codecs.dense, variables), x, train=False))
    assert result.max_output_diff <= 1e-5 * np.abs(expected).max()


class Pruned(nn.Module):
    """Two convs and a dense layer; the user pruned the second conv and the dense layer."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(16, (3, 3), strides=2, name="stem")(x))
        x = nn.relu(nn.Conv(64, (5, 5), strides=2, name="conv")(x))
        return nn.Dense(100, name="fc")(x.reshape((x.shape[0], -1)))


@pytest.fixture(scope="module")
def pruned():
    """``(model, variables)``: conv kept float32 with 4% kept, fc shared (32 values) with 3%."""
    model, rng = Pruned(), np.random.default_rng(4)
    params = jax.tree.map(np.asarray, dict(model.init(jax.random.key(0), _inputs(1))["params"]))
    conv = params["conv"]["kernel"]
    params["conv"] = {**params["conv"], "kernel": np.where(
        rng.random(conv.shape) < 0.04, rng.normal(0, 0.3, conv.shape), 0).astype(np.float32)}
    shape = params["fc"]["kernel"].shape
    indices = np.where(rng.random(shape) < 0.03, rng.integers(0, 32, shape), 32)
    indices[:, -1] = 32  # a dead unit: gaps longer than a uint8 holds
    params["fc"] = {**params["fc"], "kernel": Shared(
        np.sort(rng.normal(0, 0.1, 32)).astype(np.float32), indices)}
    return model, {"params": params}


def _op_kernels(tflite, x):
    """``{kernel tensor name: the kernel its conv or dense op reads}`` after one invoke."""
    interpreter = _run(tflite, x, preserve=True)
    subgraph, ops = _graph(tflite)
    return {subgraph.tensors[op.inputs[1]].name: interpreter.get_tensor(op.inputs[1])
            for name, op in ops if name in _AXIS}


def test_a_pruned_kernel_ships_as_values_and_gaps_read_back_exactly(pruned):
    """Sparse and dense exports hold the same kernel values (the op reads equal arrays), give
    the same logits, and the sparse file downloads smaller."""
    model, variables = pruned
    x = _inputs(1)
    sparse = export.export(model, variables, x)
    dense = export.export(model, variables, x, sparse=False)
    assert sparse.layers["fc/kernel"].storage == "int8 sparse"
    assert sparse.layers["conv/kernel"].storage == "float32 sparse"
    assert sparse.layers["stem/kernel"].storage == "float32"  # dense: zeros cost nothing
    assert {row.storage for row in dense.layers.values()} == {"int8", "float32"}
    assert sparse.layers["fc/kernel"].max_error == dense.layers["fc/kernel"].max_error > 0
    assert {"CAST", "CUMSUM", "SCATTER_ND"} <= set(export.op_names(sparse.tflite))
    read = [_op_kernels(e.tflite, x) for e in (sparse, dense)]
    assert read[0].keys() == read[1].keys() and len(read[0]) == 3
    for name in read[0]:
        assert np.array_equal(read[0][name], read[1][name]), name
    conv = np.moveaxis(np.asarray(variables["params"]["conv"]["kernel"]), -1, 0)
    assert any(np.array_equal(kernel, conv) for kernel in read[0].values())  # float32: exact
    expected = np.asarray(model.apply(jax.tree.map(codecs.dense, variables), x))
    assert np.allclose(_logits(sparse.tflite, x), _logits(dense.tflite, x), rtol=0, atol=1e-5)
    assert sparse.max_output_diff <= 1.5e-2 * np.abs(expected).max()
    assert sparse.download_bytes < dense.download_bytes
    assert sparse.layers["fc/kernel"].bytes < dense.layers["fc/kernel"].bytes / 10  # 3% kept


def test_a_users_pruned_batchnorm_model_ships_sparse_with_batchnorm_folded():
    """A user's model with BatchNorm and a ``train`` flag, its conv2 and fc1 pruned to 5%:
    BatchNorm folds into the pruned kernels, which ship sparse and give dense's logits."""
    model, x = WithTrain(), _inputs(1, side=32)
    variables = _batchnorm_variables(model, x)
    rng = np.random.default_rng(7)
    for name in ("conv2", "fc1"):
        kernel = variables["params"][name]["kernel"]
        variables["params"][name] = {"kernel": np.where(rng.random(kernel.shape) < 0.05,
                                                        kernel, 0).astype(np.float32)}
    sparse, dense = (export.export(model, variables, x, sparse=s) for s in (True, False))
    assert sparse.layers["fc1/kernel"].storage == "float32 sparse"
    assert "MUL" not in export.op_names(dense.tflite)  # folded, not a separate op
    assert np.allclose(_logits(sparse.tflite, x), _logits(dense.tflite, x), rtol=0, atol=1e-5)
    expected = np.asarray(model.apply(variables, x, train=False))
    assert sparse.max_output_diff <= 1e-5 * np.abs(expected).max()
    assert sparse.download_bytes < dense.download_bytes


@pytest.mark.parametrize("weights", ["int8", "int4", "float16"])
def test_sparse_kernels_in_every_storage_equal_the_dense_ones(pruned, weights):
    """Per-channel int8 and int4 scales (a MUL after the scatter) and float16 values: the
    kernels the ops read equal the dense export's."""
    model, variables = pruned
    x = _inputs(1)
    sparse = export.export(model, variables, x, weights=weights)
    dense = export.export(model, variables, x, weights=weights, sparse=False)
    assert sparse.layers["fc/kernel"].storage == f"{weights} sparse"  # 3% kept
    assert sparse.layers["conv/kernel"].storage in (weights, f"{weights} sparse")  # 4% kept
    assert sparse.layers["stem/kernel"].storage == dense.layers["stem/kernel"].storage == weights
    read = [_op_kernels(e.tflite, x) for e in (sparse, dense)]
    assert read[0].keys() == read[1].keys() and len(read[0]) == 3
    for name in read[0]:
        assert np.array_equal(read[0][name], read[1][name]), name
    assert ("MUL" in export.op_names(sparse.tflite)) == (weights != "float16")
    assert sparse.download_bytes < dense.download_bytes


class Wide(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(300, name="fc")(x.reshape((x.shape[0], -1)))


@pytest.mark.parametrize("kept,chosen", [(0.02, "int2 sparse"), (0.2, "palette sparse"),
                                         (0.45, "int2")])
def test_sparse_is_chosen_only_where_the_whole_download_is_smaller(kept, chosen):
    """Ternary codes with one scale and empty output channels: values and gaps need no MUL
    (empty channels' scales do not count); a sparse form is chosen only when it shrinks the
    file, and then the smallest: values and gaps when very sparse, the palette at 20%."""
    model, rng = Wide(), np.random.default_rng(5)
    x = _inputs(1, 28)
    params = jax.tree.map(np.asarray, dict(model.init(jax.random.key(0), x)["params"]))
    codes = np.where(rng.random((784, 300)) < kept, rng.choice([-1, 1], (784, 300)), 0)
    codes[:, :40] = 0  # 40 output channels with no weight
    params["fc"] = {**params["fc"], "kernel": Ternary(codes, np.float32(0.3), np.float32(0.3))}
    variables = {"params": params}
    sparse, dense = (export.export(model, variables, x, sparse=s) for s in (True, False))
    assert sparse.layers["fc/kernel"].storage == chosen
    if chosen == "int2":
        assert sparse.tflite == dense.tflite
    else:
        assert "MUL" not in export.op_names(sparse.tflite)
        assert sparse.download_bytes < dense.download_bytes
    with pytest.raises(ValueError, match="sparse must be True or False"):
        export.export(model, variables, x, sparse="no")


def test_a_pruned_ternary_kernel_with_two_scales_is_one_palette_without_the_add():
    """TTQ's ``w_pos != w_neg`` needs two INT2 tensors and an ADD dense; its palette holds
    both scales in one tensor of three values, exactly, and downloads smaller."""
    model, rng = Wide(), np.random.default_rng(5)
    x = _inputs(1, 28)
    params = jax.tree.map(np.asarray, dict(model.init(jax.random.key(0), x)["params"]))
    codes = np.where(rng.random((784, 300)) < 0.2, rng.choice([-1, 1], (784, 300)), 0)
    params["fc"] = {**params["fc"], "kernel": Ternary(codes, np.float32(0.3), np.float32(0.2))}
    variables = {"params": params}
    sparse, dense = (export.export(model, variables, x, sparse=s) for s in (True, False))
    assert dense.layers["fc/kernel"].storage == "int2+int2" and "ADD" in \
        export.op_names(dense.tflite)
    assert (sparse.layers["fc/kernel"].storage, sparse.layers["fc/kernel"].max_error) == \
        ("palette sparse", 0.0)
    assert "ADD" not in export.op_names(sparse.tflite)
    (kernel,) = _op_kernels(sparse.tflite, x).values()
    assert np.array_equal(kernel, codecs.dense(params["fc"]["kernel"]).T)
    assert sparse.download_bytes < dense.download_bytes
    half = export.export(model, variables, x, weights="float16").layers["fc/kernel"]
    assert half.storage == "float16 palette sparse"  # the values float16 keeps
    assert half.max_error == max(abs(np.float16(w).astype(np.float32) - np.float32(w))
                                 for w in (0.3, 0.2))


def test_float16_cast_leaves_ship_as_float16_and_bfloat16_ones_as_float32():
    """``Cast`` leaves (a ``.zyl`` file's float16 biases and kernels) are stored as float16
    plus DEQUANTIZE where float16 holds them exactly: the ops read the same values."""
    model, x = Pruned(), _inputs(1)
    params = jax.tree.map(np.asarray, dict(model.init(jax.random.key(0), x)["params"]))
    rng = np.random.default_rng(6)
    bias = lambda n: rng.normal(0, 0.1, n).astype(np.float32)  # noqa: E731
    params["stem"] = {**params["stem"], "bias": Cast(bias(16), "float16")}
    params["conv"] = {**params["conv"], "bias": Cast(np.append(bias(63), 1e5), "bfloat16")}
    params["fc"] = {"kernel": Cast(params["fc"]["kernel"], "float16"),
                    "bias": Cast(bias(100), "float16")}
    variables = {"params": params}
    result = export.export(model, variables, x)
    layers = {path: row.storage for path, row in result.layers.items()}
    assert layers["stem/bias"] == layers["fc/bias"] == layers["fc/kernel"] == "float16"
    assert "conv/bias" not in layers  # 1e5 in bfloat16 is past float16's largest, 65504
    expected = np.asarray(model.apply(jax.tree.map(codecs.dense, variables), x))
    assert np.abs(_logits(result.tflite, x) - expected).max() <= 1e-5 * np.abs(expected).max()
    plain = export.export(model, jax.tree.map(codecs.dense, variables), x)  # no cast leaves
    assert not any(row.storage == "float16" for row in plain.layers.values())
    assert result.download_bytes < plain.download_bytes


@pytest.mark.parametrize("kept", [[], [0], [5], [700], [1, 2, 3, 999], list(range(0, 1000, 300))])
def test_sparse_positions_reach_every_non_zero_in_steps_a_uint8_holds(kept):
    q = np.zeros((10, 100), np.int8)
    q.flat[kept] = 3
    gaps, values = export._sparse_form(q)
    positions = np.concatenate([[0], np.cumsum(gaps[:-1, 0].astype(np.int64))])
    assert gaps.dtype == np.uint8 and gaps[-1, 0] == 0 and np.all(gaps[:-1] >= 1)
    assert np.array_equal(np.unique(positions), positions) and positions[-1] < q.size
    rebuilt = np.zeros(q.size, np.int8)
    rebuilt[positions] = values
    assert np.array_equal(rebuilt.reshape(q.shape), q)
    ends = sorted({0, *kept})  # bridged by one zero every 255 positions, no more
    assert values.size == len(ends) + sum((b - a - 1) // export.SPARSE_GAP
                                          for a, b in zip(ends, ends[1:]))


def _few_valued(kept, values, seed=8):
    """A ``Wide`` model whose kernel is shared: ``values`` codebook entries at ``kept``."""
    model, rng = Wide(), np.random.default_rng(seed)
    x = _inputs(1, 28)
    params = jax.tree.map(np.asarray, dict(model.init(jax.random.key(0), x)["params"]))
    indices = np.where(rng.random((784, 300)) < kept, rng.integers(0, values, (784, 300)),
                       values)
    codebook = np.sort(rng.normal(0, 0.1, values)).astype(np.float32)
    params["fc"] = {**params["fc"], "kernel": Shared(codebook, indices)}
    return model, {"params": params}, x


def test_a_few_valued_pruned_kernel_ships_as_an_exact_palette(monkeypatch):
    """A 2-bit shared kernel, 20% kept: its palette form (one byte per kept weight holding
    the gap and the value's index, GATHER_ND from the float32 codebook) is exact where int8
    is not, gives JAX's logits, and downloads smaller than values and gaps or dense int8."""
    model, variables, x = _few_valued(0.2, 4)
    palette = export.export(model, variables, x)
    dense = export.export(model, variables, x, sparse=False)
    row = palette.layers["fc/kernel"]
    assert (row.storage, row.max_error) == ("palette sparse", 0.0)
    assert dense.layers["fc/kernel"].max_error > 0  # int8 cannot hold a k-means codebook
    assert {"FLOOR_DIV", "FLOOR_MOD", "GATHER_ND", "SCATTER_ND"} <= \
        set(export.op_names(palette.tflite))
    (kernel,) = _op_kernels(palette.tflite, x).values()
    assert np.array_equal(kernel, codecs.dense(variables["params"]["fc"]["kernel"]).T)
    expected = np.asarray(model.apply(jax.tree.map(codecs.dense, variables), x))
    assert palette.max_output_diff <= 1e-5 * np.abs(expected).max()
    graph = flatbuffer_utils.read_model_from_bytearray(bytearray(palette.tflite))
    (runtime,) = [bytes(graph.buffers[m.buffer].data).rstrip(b"\0") for m in graph.metadata
                  if m.name == b"min_runtime_version"]
    assert runtime == b"2.4.0"  # CUMSUM's, above the converter's own ops
    lib = export._litert()
    for found in (b"2.4.0-rc1", b"\xff\xfe", None, b"9.0.0"):  # unreadable: replaced
        graph = export._read(lib, palette.tflite)
        (entry,) = [m for m in graph.metadata if m.name == b"min_runtime_version"]
        graph.buffers[entry.buffer].data = None if found is None else np.frombuffer(
            found.ljust(16, b"\0"), np.uint8)
        export._raise_min_runtime_version(lib, graph)
        kept = bytes(graph.buffers[entry.buffer].data).rstrip(b"\0")
        assert kept == (b"9.0.0" if found == b"9.0.0" else b"2.4.0"), found
    graph = export._read(lib, palette.tflite)
    graph.metadata = None  # a converter that writes none: the entry is added
    export._raise_min_runtime_version(lib, graph)
    assert [bytes(graph.buffers[m.buffer].data).rstrip(b"\0") for m in graph.metadata] == \
        [b"2.4.0"]
    monkeypatch.setattr(export, "PALETTE_VALUES", 0)  # no palette: values and gaps
    values = export.export(model, variables, x)
    assert values.layers["fc/kernel"].storage == "int8 sparse"
    assert palette.download_bytes < values.download_bytes < dense.download_bytes


def test_a_files_forms_export_the_same_kernels_at_another_batch():
    """``Exported.forms`` names each weighed kernel's form; ``forms=`` stores those at
    another batch (what scoring a shipped file at batch 100 needs), a form for other kernel
    values falls back to dense, and an unknown form is a ValueError."""
    model, variables, x = _few_valued(0.2, 4)
    shipped = export.export(model, variables, x)
    assert shipped.forms == {"fc/kernel": "palette"}
    assert export.export(model, variables, x, forms={}).tflite == shipped.tflite
    scored = export.export(model, variables, x, batch=3, forms=shipped.forms)
    assert scored.layers["fc/kernel"].storage == "palette sparse" and scored.input_shape[0] == 3
    for form, storage in (("values", "int8 sparse"), ("dense", "int8")):
        forced = export.export(model, variables, x, forms={"fc/kernel": form})
        assert forced.layers["fc/kernel"].storage == storage and forced.forms["fc/kernel"] == form
    many, more, _ = _few_valued(0.2, 100)
    wide = export.export(many, more, x, forms={"fc/kernel": "palette"})
    assert (wide.layers["fc/kernel"].storage, wide.forms) == ("int8", {"fc/kernel": "dense"})
    for bad in ({"fc/kernel": "zip"}, [("fc/kernel", "dense")], {"fc/kernel": ["dense"]}):
        with pytest.raises(ValueError, match="forms must map"):
            export.export(model, variables, x, forms=bad)
    with pytest.raises(ValueError, match="'fc/bias'"):  # no kernel: a typo is not ignored
        export.export(model, variables, x, forms={"fc/bias": "palette"})


@pytest.mark.parametrize("values,kept", [(1, 0.0), (2, 0.01), (4, 0.3), (16, 0.05),
                                         (63, 0.5)])
def test_palette_symbols_decode_to_the_kernel(values, kept):
    """``s // k`` summed exclusively gives each kept position (gaps bridged by zeros every
    ``256 // k - 1`` positions), ``palette[s % k]`` its value; -0.0 comes back +0.0."""
    rng = np.random.default_rng(values)
    codebook = np.linspace(-1, 1, values + 1, dtype=np.float32)
    codebook = codebook[codebook != 0][:values] if values > 1 else np.zeros(1, np.float32)
    kernel = np.where(rng.random((40, 70)) < kept, rng.choice(codebook, (40, 70)), 0)
    kernel = kernel.astype(np.float32)
    kernel[0, 1] = -0.0
    symbols, palette = export._palette_form(kernel)
    k = palette.size
    assert symbols.dtype == np.uint8 and k <= export.PALETTE_VALUES and 0.0 in palette
    wide = symbols[:, 0].astype(np.int64)
    positions = np.concatenate([[0], np.cumsum(wide // k)[:-1]])
    assert np.all(np.diff(positions) >= 1) and positions[-1] < kernel.size
    rebuilt = np.zeros(kernel.size, np.float32)
    rebuilt[positions] = palette[wide % k]
    assert np.array_equal(rebuilt.reshape(kernel.shape), kernel)
    assert not np.signbit(palette[palette == 0]).any()
    many = np.arange(export.PALETTE_VALUES, dtype=np.float32).reshape(8, -1) + 1
    assert export._palette_form(many) is None  # 64 values and 0: no room for gaps


@pytest.mark.parametrize("all_dense", [3050, 2800])
def test_close_calls_are_settled_by_the_whole_files_gzip(all_dense):
    """Each kernel's form is its cheapest estimate; the all-dense file, then each runner-up
    within the margin (not one further), closest first, is written whole and kept only
    where that file gzips smaller."""
    rng, calls = np.random.default_rng(0), []
    estimates = {7: {"dense": 1000, "values": 950, "palette": 1700}, 9: {"dense": 500,
                                                                           "palette": 480}}
    whole = {("values", "palette"): 3000, ("dense", "palette"): 2900,
             ("values", "dense"): 3100, ("dense", "dense"): all_dense}

    def write(forms, costs):
        calls.append(dict(forms))
        costs.update(estimates if not forms else {})
        key = (forms.get(7, "values"), forms.get(9, "palette"))
        return rng.bytes(whole[key]), {"key": key}, dict(zip((7, 9), key))  # incompressible

    tflite, layers, chosen = export._smallest_download(write, {})
    dense = {7: "dense", 9: "dense"}
    if all_dense < 2900:
        assert layers == {"key": ("dense", "dense")} and calls == [{}, dense]
        assert chosen == dense
    else:
        assert layers == {"key": ("dense", "palette")} and len(tflite) == 2900
        assert chosen == {7: "dense", 9: "palette"}
        assert calls == [{}, dense, {7: "values", 9: "dense"}, {7: "dense", 9: "palette"}]


def test_same_inputs_same_bytes(compressed):
    model, variables, _ = compressed
    first = export.to_tflite(model, variables, _inputs(1))
    assert export.to_tflite(model, variables, _inputs(1, seed=5)) == first


def test_a_model_needing_a_non_builtin_op_is_refused_by_name():
    class Sorts(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(4)(jnp.sort(x.reshape((x.shape[0], -1)), axis=-1))

    x = _inputs(1, side=4)
    variables = Sorts().init(jax.random.key(0), x)
    with pytest.raises(RuntimeError, match=r"needs stablehlo\.sort, which no builtin LiteRT op"):
        export.to_tflite(Sorts(), variables, x, weights="float32")


def test_bad_settings_are_value_errors(compressed):
    model, variables, _ = compressed
    with pytest.raises(ValueError, match="weights must be one of"):
        export.to_tflite(model, variables, _inputs(1), weights="int3")
    with pytest.raises(ValueError, match="batch must be a positive integer"):
        export.to_tflite(model, variables, _inputs(1), batch=0)
    with pytest.raises(ValueError, match="'nope/kernel'"):
        export.to_tflite(model, variables, _inputs(1), methods={"nope/kernel": "shared"})


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_import_zylax_export_does_not_import_tensorflow():
    proc = _python("import sys, zylax, zylax.export, zylax.cli; zylax.cli.build_parser(); "
                   "print(sorted(m for m in sys.modules if m.split('.')[0] in "
                   "('tensorflow', 'ai_edge_litert', 'keras')))")
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr


def test_without_the_extra_a_one_line_message_says_what_to_install(tmp_path):
    proc = _python(
        "import sys; sys.modules['tensorflow'] = None\n"
        "import numpy as np, flax.linen as nn, jax\n"
        "from zylax import export\n"
        "x = np.zeros((1, 4, 4, 1), np.float32); m = nn.Dense(2)\n"
        "try:\n"
        "    export.to_tflite(m, m.init(jax.random.key(0), x), x)\n"
        "except RuntimeError as err:\n"
        "    print(err)\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines() == [
        "exporting to LiteRT needs the litert extra (tensorflow is missing): "
        "pip install 'zylax[litert]'"]


def test_without_the_extra_compress_tflite_is_refused_before_any_work(tmp_path):
    """``export.check_extra`` imports nothing; ``zylax compress --tflite`` refuses at once."""
    proc = _python(
        "import sys; sys.modules['tensorflow'] = None\n"
        "from zylax import cli\n"
        f"cli.main(['compress', '--net', 'lenet300', '--out', {str(tmp_path / 'm.zyl')!r}, "
        f"'--tflite', {str(tmp_path / 'm.tflite')!r}])\n")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "zylax compress: exporting to LiteRT needs the litert extra (tensorflow is missing): "
        "pip install 'zylax[litert]'"]
    assert os.listdir(tmp_path) == []


def test_score_counts_every_image_once_and_agrees_with_jax():
    """7 images in batches of 3: the last batch is padded and its padding dropped; float32
    weights give the interpreter the argmax JAX gives."""
    from zylax import tasks

    model = Compressed()
    images = np.random.default_rng(3).integers(0, 256, (7, 16, 16, 1), np.uint8)
    preprocess = lambda im: (np.asarray(im, np.float32) - 128.0) / 64.0  # noqa: E731
    variables = model.init(jax.random.key(2), preprocess(images[:1]))
    logits = np.asarray(model.apply(variables, preprocess(images)))
    labels = np.argmax(logits, -1)
    labels[[1, 6]] = (labels[[1, 6]] + 1) % 10  # two wrong: accuracy 5/7
    task = tasks.Classification()
    found = export.score(model, variables, task, images, labels, preprocess=preprocess,
                         weights="float32", batch=3)
    assert found == {"accuracy": pytest.approx(5 / 7)}
    assert found["accuracy"] == task.evaluate(model, variables, images, labels,
                                              preprocess=preprocess)["accuracy"]


@pytest.fixture()
def lenet_file(tmp_path):
    """A LeNet-300-100 ``.zyl`` file: a shared layer, the metadata ``zylax compress`` writes."""
    shape = (784, 300)
    return _lenet300_file(tmp_path / "lenet300.zyl",
                          np.random.default_rng(0).integers(0, 33, shape))


def _lenet300_file(path, indices):
    """Writes a LeNet-300-100 ``.zyl`` file whose ip1 is shared (32 values, ``indices``)."""
    from zylax import registry

    model = registry.get("lenet300").factory(10)
    params = jax.tree.map(np.asarray, dict(model.init(jax.random.key(0), _inputs(1, 28))["params"]))
    params["ip1"] = {**params["ip1"], "kernel": Shared(
        np.linspace(-0.1, 0.1, 32, dtype=np.float32), indices)}
    archive.save(path, {"params": params}, metadata={
        "net": "lenet300", "num_classes": 10, "data": "fashion_mnist", "input_shape": [28, 28, 1],
        "preprocess": {"mean": [0.286], "std": [0.353], "pad_to": None}})
    return path


def test_cli_export_writes_a_file_the_interpreter_runs(lenet_file, tmp_path, capsys):
    out = tmp_path / "sub" / "lenet300.tflite"
    cli.main(["export", str(lenet_file), "--out", str(out), "--batch", "2"])
    printed = capsys.readouterr().out
    assert "ip1/kernel  shared   int8" in printed and f"wrote {out}" in printed
    assert _logits(out.read_bytes(), _inputs(2, 28)).shape == (2, 10)
    shipped = len(gzip.compress(out.read_bytes(), compresslevel=9, mtime=0))
    assert shipped < out.stat().st_size  # the float32 layers and int8 ip1 compress
    assert f"download (gzip -9 of the .tflite): {shipped:,} bytes" in printed
    dense = tmp_path / "dense.tflite"
    cli.main(["export", str(lenet_file), "--out", str(dense), "--dense"])
    assert "sparse" not in capsys.readouterr().out
    assert export.op_names(dense.read_bytes()).count("DEQUANTIZE") == 1  # ip1, dense


def test_cli_export_stores_a_pruned_kernel_sparse_and_dense_when_told(tmp_path, capsys):
    """The default table says ``int8 sparse`` for a 97%-pruned shared kernel; ``--dense``
    stores it dense in a file whose download is larger."""
    rng, shape = np.random.default_rng(0), (784, 300)
    path = _lenet300_file(tmp_path / "pruned.zyl",
                          np.where(rng.random(shape) < 0.03, rng.integers(0, 32, shape), 32))
    sizes = {}
    for flags in ([], ["--dense"]):
        out = tmp_path / f"m{len(flags)}.tflite"
        cli.main(["export", str(path), "--out", str(out), *flags])
        printed = capsys.readouterr().out
        assert ("ip1/kernel  shared   int8 sparse" in printed) == (not flags), printed
        assert ("1 kernel(s) stored sparse" in printed) == (not flags)
        sizes[bool(flags)] = len(gzip.compress(out.read_bytes(), compresslevel=9, mtime=0))
        assert _logits(out.read_bytes(), _inputs(1, 28)).shape == (1, 10)
    assert sizes[False] < sizes[True]


def test_cli_export_bounds_the_arrays_it_converts_not_the_decoders_working_set(
        lenet_file, tmp_path, capsys, monkeypatch):
    params, metadata = archive.load(lenet_file)
    params = jax.tree.map(np.asarray, params["params"])
    rng = np.random.default_rng(0)
    rate = np.linspace(0.0, 0.1, 784)[:, None]  # kept unevenly across the inputs: the ans form
    params["ip1"]["kernel"] = Shared(np.linspace(-0.1, 0.1, 32, dtype=np.float32), np.where(
        rng.random((784, 300)) < rate, rng.integers(0, 32, (784, 300)), 32), "ans")
    path, out = tmp_path / "ans.zyl", tmp_path / "ans.tflite"
    archive.save(path, {"params": params}, metadata=metadata)
    _, header = archive.load_with_header(path)
    assert {e["name"]: e.get("form") for e in header["leaves"]}["ip1/kernel"] == "ans"
    arrays = archive.decoded_array_bytes(header["leaves"])
    assert archive.decoding_bytes(header["leaves"]) > 4 * arrays  # the ans decoder's 40 B/weight
    monkeypatch.setattr(export, "DECODED_MULTIPLE", 1)
    monkeypatch.setattr(export, "DECODED_FLOOR", arrays)  # the arrays fit, decoding would not
    cli.main(["export", str(path), "--out", str(out)])
    assert out.exists() and "download (gzip -9" in capsys.readouterr().out
    monkeypatch.setattr(export, "DECODED_FLOOR", arrays - 1)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["export", str(path), "--out", str(tmp_path / "refused.tflite")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and len(err.strip().splitlines()) == 1, err
    assert "over the export limit" in err and not (tmp_path / "refused.tflite").exists()


def test_cli_refuses_a_corrupted_file_with_one_line_and_writes_nothing(lenet_file, tmp_path,
                                                                        capsys):
    blob = bytearray(lenet_file.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    bad, out = tmp_path / "bad.zyl", tmp_path / "bad.tflite"
    bad.write_bytes(bytes(blob))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["export", str(bad), "--out", str(out)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("zylax export: ") and not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".tflite", ".tmp")]


def test_cli_bad_batch_is_a_usage_error(lenet_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["export", str(lenet_file), "--out", str(tmp_path / "m.tflite"), "--batch", "0"])
    assert exit_info.value.code == 2 and "--batch must be >= 1" in capsys.readouterr().err


def test_an_op_the_converter_cannot_lower_is_named_among_the_models_unusual_ops():
    class TopK(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(4)(jax.lax.top_k(x.reshape((x.shape[0], -1)), 8)[0])

    x = _inputs(1, side=4)
    variables = TopK().init(jax.random.key(0), x)
    with pytest.raises(RuntimeError, match=r"uses .*top_k"):
        export.to_tflite(TopK(), variables, x, weights="float32")


def test_nan_weights_and_missing_batch_stats_are_one_line_errors():
    model, x = WithoutTrain(), _inputs(1)
    variables = _batchnorm_variables(model, x)
    with pytest.raises(ValueError, match="no batch_stats"):
        export.to_tflite(model, {"params": variables["params"]}, x)
    poisoned = jax.tree.map(lambda a: a, variables)
    name = next(k for k, v in poisoned["params"].items() if "kernel" in v)
    poisoned["params"][name] = {**poisoned["params"][name],
                                "kernel": np.full_like(poisoned["params"][name]["kernel"], np.nan)}
    with pytest.raises(ValueError, match=f"{name}/kernel: .* NaN/Inf"):
        export.to_tflite(model, poisoned, x)


def test_a_kernel_float16_cannot_hold_is_refused_in_one_line(tmp_path, capsys):
    params = nets.LeNet300100().init(jax.random.key(0), np.zeros((1, 28, 28, 1)))["params"]
    params["ip2"] = {**params["ip2"], "kernel": np.full((300, 100), 1e6, np.float32)}
    path = tmp_path / "big.zyl"
    archive.save(path, {"params": params}, metadata={
        "net": "lenet300", "num_classes": 10, "input_shape": [28, 28, 1],
        "preprocess": {"mean": [0.286], "std": [0.353], "pad_to": None}})
    with pytest.raises(SystemExit) as refused:
        cli.main(["export", str(path), "--out", str(tmp_path / "m.tflite"), "--weights",
                  "float16"])
    err = capsys.readouterr().err
    assert refused.value.code == 1 and len(err.strip().splitlines()) == 1
    assert "ip2/kernel: a kernel value (1e+06) overflows float16" in err
