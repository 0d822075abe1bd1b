"""Export any Flax model (zylax's or your own) to a LiteRT ``.tflite`` file for phones.

``to_tflite(model, variables, example_input, weights=..., batch=1, methods=...,
sparse=True) -> bytes``; ``export(...)`` takes the same and returns an
``Exported``: the bytes, one row per kernel (how it is stored, the largest
change of a weight) and the interpreter's largest output difference from JAX.
Command line: ``zylax export model.zyl --out model.tflite [--weights auto]
[--dense] [--batch N]``. A model that was only pruned keeps float32 kernels
in ``auto`` (exact); ``weights="int8"`` stores them in a quarter of the bytes
(snapped per channel), sparse too. Needs the extra
``pip install 'zylax[litert]'`` (TensorFlow for the converter, ai-edge-litert
for the interpreter); ``import zylax.export`` itself imports neither.

How a file is made:

1. Every leaf is decoded to the array it stands for (``zylax.codecs.dense``),
   floats as float32, and the model is traced for inference: its training
   flag (``train``, ``training``, ``is_training``, ... or ``deterministic``
   inverted, as ``nets.layers.mode_kwargs`` finds it) set to inference, or,
   when it declares none, ``batch_stats`` immutable (BatchNorm's inference
   mode). ``nets.TapConv`` runs as the
   ``nn.Conv`` it equals, so the converter sees one DEPTHWISE_CONV_2D.
   BatchNorm runs as ``x * a + b`` with constants ``a = scale / sqrt(var +
   eps)``, ``b = bias - mean * a``.
2. ``jax2tf`` and the TFLite converter, builtin ops only (no Flex, no
   SELECT_TF_OPS). The converter folds that MUL and ADD into the conv or
   dense op right before the BatchNorm (kernel times ``a`` per output
   channel, ``b`` into the bias): no op is left for it. A BatchNorm whose
   input is not one conv or dense output (SEP-Net's sum of two convs) keeps
   its MUL. A model needing an op no builtin implements is refused with a
   ``RuntimeError`` naming the op (e.g. ``stablehlo.sort``).
3. Each float kernel of a CONV_2D, DEPTHWISE_CONV_2D or FULLY_CONNECTED op is
   matched to the params leaf it came from (the same values up to one factor
   per output channel: the folded BatchNorm) and rewritten as an integer
   tensor with per-output-channel scales (zero points 0) followed by a
   DEQUANTIZE op, whose output the interpreter computes once and keeps; the
   layer then runs in float32 on exactly those weights. Activations are
   never quantized.
4. The file is loaded in the default interpreter (XNNPACK included) and its
   output compared with JAX on ``example_input`` (``Exported.max_output_diff``).

Per stored method, with ``weights="auto"`` (the smallest exact form; int8 for
shared kernels). Exactness is proven in ``tests/test_export.py``: the ints
and scales read back from the interpreter, and the float kernel its conv
reads, equal ``zylax.codecs.dense(leaf)`` exactly (max error 0, not 1 ulp).

* ``binary`` (BNN) and ``pattern`` (SEP-Net): ``scale_o * (+-1)``, also after
  folding. INT2 (2 bits a weight), q = +-1, scale = the kernel's own float32
  value of the channel: exact, since ``q * scale`` with q = +-1 is an exact
  float32 product; checked for every layer while exporting.
* ``ternary`` (TTQ): ``{-w_neg, 0, +w_pos}``. One symmetric grid cannot hold
  both scales when ``w_pos != w_neg``, so the kernel is two INT2 tensors,
  P (q in {0, 1}, scale ``w_pos``) and N (q in {-1, 0}, scale ``w_neg``),
  each dequantized, then added by one ADD op (it runs at every invoke, one
  pass over the kernel): exact, since at every position one of the two is
  0. When ``w_pos == w_neg``, one INT2 tensor. A pruned one (at most half
  non-zero) usually ships smaller as one palette of its three values (below),
  with no ADD.
* ``shared`` (k-means): INT8 with one scale for the whole kernel,
  ``max|w| / 127``, so that the codebook's k values stay k distinct bytes,
  which the download's gzip codes in about log2(k) bits (``weights="int8"``,
  one scale per channel, gives each channel its own bytes: 18% more after
  gzip -9 on LeNet-300-100's Deep Compression file at equal LiteRT top-1;
  RESULTS.md, "On the phone runtime").
  Not exact (a codebook is not a uniform grid and ``.tflite`` has no palette
  type): ``Layer.max_error`` reports the largest change per layer. A pruned
  shared kernel stored as a palette (below) is exact.
* ``raw``: float32, as converted (exact).
* ``cast`` (the ``.zyl`` file's float16 leaves): float16 and a DEQUANTIZE,
  kernels and conv or dense biases alike, wherever the graph holds the
  leaf's values unchanged and float16 holds them exactly; float32 otherwise
  (a bfloat16 leaf, a BatchNorm folded in). Other biases stay float32.
* Pruned kernels (``sparse=True``, the default): a kernel (one tensor, in
  any storage, at most half of it non-zero) whose non-zero values and gaps
  gzip smaller than its dense tensor, the extra ops included, is stored as
  those two tensors: the values in flat order ``(m,)`` and the gaps between
  their flat positions as uint8 ``(m, 1)`` (a zero value every 255
  positions where a gap is longer, and one at position 0). At every invoke
  ``CAST -> CUMSUM (exclusive) -> SCATTER_ND -> RESHAPE`` writes them into
  the dense kernel (integer values dequantized once, then a ``MUL`` by the
  per-channel scales where channels have their own): the dense tensor's
  values, a pruned -0.0 as +0.0. The layer then runs as before. A
  download's gzip codes each uint8 gap as one Huffman-coded byte, where each
  run of zeros of the dense tensor costs it a match length and a distance:
  LeNet-300-100's first kernel (5% kept) gzips to 19,289 bytes dense,
  16,899 as values and gaps, against 15,129 in its ``.zyl`` (RESULTS.md,
  "On the phone runtime"). LiteRT's own sparse (CSR) format stores absolute
  indices, which gzip codes in more bits than either.
  A kernel of at most ``PALETTE_VALUES`` (64) distinct values, 0 included (a
  pruned k-means kernel of up to 63 values, 5 bits or fewer, a ternary or
  binary one), may instead ship as a palette: its k values in float32
  (``auto``: the kernel's own; another mode: the values that mode keeps,
  ``int8 palette sparse`` etc.), and one uint8 symbol per
  kept position, ``gap * k + index`` (gaps bridged every ``256 // k - 1``
  positions); ``CAST -> FLOOR_DIV / FLOOR_MOD -> CUMSUM / GATHER_ND ->
  SCATTER_ND -> RESHAPE`` rebuild it. In ``auto`` the kernel is then exact (the
  codebook's own float32 values, where int8 snaps them), and gzip
  codes gap and index as one symbol: LeNet-300-100's 2-bit second kernel of a
  12,000-byte budget file, 20% kept, gzips to 4,462 bytes as a palette, 5,507
  as values and gaps, 5,688 dense (its tensors alone; 4,228 in the ``.zyl``).
  Whichever form (dense included) gzips smallest, ops counted, is stored;
  then the whole file is written again with every kernel dense, and with each
  close call's runner-up (within 10% or 600 bytes), and the smallest download
  kept, never larger than the dense one (one gzip stream codes neighbouring
  tensors with shared Huffman tables, which a kernel's own estimate misses by
  up to a few hundred bytes). The price is speed:
  the kernel is no longer a constant, so the layer leaves XNNPACK's
  packed-weight path and pays the scatter at every invoke (BENCHMARKS.md,
  section 7). ``sparse=False`` stores every kernel dense.

``weights="int8"`` / ``"int4"``: every matched kernel in that type; the sign
and ternary kernels above stay exact (their q fits), shared and raw kernels
are snapped to the symmetric per-channel grid (``max|w| / 127`` or ``/ 7``)
with the error reported. ``"float16"``: every matched kernel as float16 plus
DEQUANTIZE (error reported). ``"float32"``: the converter's kernels. In
every mode a pruned kernel may be stored as values and gaps (above).
Biases (but ``cast`` ones in ``auto``), BatchNorm-folded biases and every
other constant stay float32.

Speed (BENCHMARKS.md, section 7): XNNPACK dequantizes int8 kernels once and
runs them at float32 speed; int4 and int2 kernels, and ternary's ADD, leave
its fast path (up to 13x slower on SEP-Net in int4). ``weights="int8"`` is
exact for binary and pattern kernels too, at 4x the bytes of int2.

Same inputs, same bytes. INT4 and INT2 tensors are packed 2 and 4 a byte,
the first in the lowest bits, as the interpreter reads them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import importlib.util
import os
import re
import sys
from types import SimpleNamespace
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zylax import archive, codecs, train
from zylax.nets.layers import TapConv
from zylax.transforms import tree as ztree

DECODED_FLOOR = 16 << 20
"""Bytes of decoded arrays any ``.zyl`` file may hold for export, however small the file."""
DECODED_MULTIPLE = 64
"""Bytes of decoded arrays per file byte a ``.zyl`` file may hold for export. Conversion
holds about 25 copies of the weights at its peak, on top of TensorFlow's own ~1 GB."""


def decoded_limit(file_bytes: int) -> int:
    """The bound on the decoded arrays (``archive.decoded_array_bytes``) of a file of
    ``file_bytes`` to export: ``max(DECODED_FLOOR, DECODED_MULTIPLE x file_bytes)``, capped
    as ``archive`` caps every file. Decoding itself is bounded as every load is
    (``archive.load``); its working set is gone before conversion starts."""
    return archive.decoded_limit(file_bytes, floor=DECODED_FLOOR, multiple=DECODED_MULTIPLE)


def check_decoded_size(path: str, header: dict, file_bytes: int) -> None:
    """``archive.CorruptFileError`` when the arrays of a loaded file's ``header`` (``path``,
    ``file_bytes`` long) are more than ``decoded_limit(file_bytes)``: too many for
    conversion to copy."""
    arrays, limit = archive.decoded_array_bytes(header["leaves"]), decoded_limit(file_bytes)
    if arrays > limit:
        raise archive.CorruptFileError(
            f"{path}: header: declares {arrays:,} bytes of arrays, over the export limit of "
            f"{limit:,} (raise it with --max-decoded-bytes)")


WEIGHTS = ("auto", "float32", "float16", "int8", "int4")
"""The ``weights`` settings of ``export``."""

_KERNEL_OPS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0}
"""Ops whose input 1 is a kernel, with the kernel's output-channel axis."""
_BITS = {"int8": 8, "int4": 4, "int2": 2}
_DEQUANTIZE_VERSION = {"float16": 3, "int8": 5, "int4": 6, "int2": 6}
"""DEQUANTIZE op versions (TFLite's op_version.cc; INT2 has none of its own yet)."""


@dataclasses.dataclass(frozen=True)
class Layer:
    """How one params kernel is stored in the ``.tflite`` file.

    ``storage``: ``float32``, ``float16``, ``int8``, ``int4``, ``int2`` or
    ``int2+int2`` (ternary as two tensors), followed by `` sparse`` when stored
    as non-zero values and gaps; ``palette sparse`` (``auto``: the kernel's own values,
    indexed jointly with the gaps: exact) or ``<weights> palette sparse`` (the values
    that mode keeps); ``max_error``: the largest ``|stored
    - float kernel|`` (after BatchNorm folding), 0.0 when exact; ``bytes``: bytes
    of the stored values, and of the gaps when sparse (scales not counted; a
    palette's symbols and values); ``ops``:
    the graph ops that read it (empty: the kernel is not the weight of a conv
    or dense op of the graph, so it stays float32 wherever the converter put it).
    """

    method: str
    storage: str
    max_error: float
    bytes: int
    ops: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Exported:
    """A ``.tflite`` file, its kernels (``{params path: Layer}``) and a check of its output.

    ``max_output_diff``: max ``|interpreter - JAX|`` on ``example_input``
    (tiled to the batch), over every output; ``input_shape``: the model input;
    ``forms``: ``{params path: "dense", "values" or "palette"}`` of each kernel a sparse
    form was weighed for (``export(forms=...)`` exports the same kernels at another batch).
    """

    tflite: bytes
    layers: dict[str, Layer]
    max_output_diff: float
    input_shape: tuple[int, ...]
    forms: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def download_bytes(self) -> int:
        """Bytes of the file compressed by zlib's deflate at level 9 in a gzip stream
        (``gzip.compress(tflite, 9)``): what an app download carries (app stores and HTTP
        compress what they ship). GNU ``gzip -9`` has its own deflate and writes the file
        name: its output differs by 1-2%."""
        return len(gzip.compress(self.tflite, compresslevel=9, mtime=0))


def to_tflite(model, variables, example_input, *, weights: str = "auto", batch: int = 1,
              methods: Mapping[str, str] | None = None, sparse: bool = True,
              forms: Mapping[str, str] | None = None) -> bytes:
    """The ``.tflite`` bytes of ``model`` for float32 input ``(batch, *example_input.shape[1:])``.

    ``variables``: Flax variables (``{"params": ..., "batch_stats": ...}``)
    whose leaves may be codec containers (``Shared``, ``Binary``, ...);
    ``example_input``: preprocessed model input ``(B, ...)``, the first
    example of which checks the file; ``weights``: one of ``WEIGHTS``
    (module docstring: what each stores and what is exact); ``methods``:
    ``{params path: codec method}`` for leaves that are plain arrays decoded
    from a ``.zyl`` file (``stored_methods``); ``sparse``: pruned kernels as non-zero
    values and uint8 gaps, or as a palette of their few values coded with the gaps, where
    that gzips smaller (module docstring), False: every kernel dense (``forms`` ignored);
    ``forms``: each kernel's form as another export chose it (``Exported.forms``: the same
    kernel values at another batch; kernels it leaves out are chosen as usual, a path that
    is no such kernel is a ValueError). ``export`` gives the per-layer report as well.
    """
    return export(model, variables, example_input, weights=weights, batch=batch,
                  methods=methods, sparse=sparse, forms=forms).tflite


def export(model, variables, example_input, *, weights: str = "auto", batch: int = 1,
           methods: Mapping[str, str] | None = None, sparse: bool = True,
           forms: Mapping[str, str] | None = None) -> Exported:
    """``to_tflite`` plus the per-kernel report and the interpreter-vs-JAX check."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    if not isinstance(sparse, bool):
        raise ValueError(f"sparse must be True or False, got {sparse!r}")
    if forms is not None and (not isinstance(forms, Mapping) or not all(
            isinstance(form, str) and form in FORMS for form in forms.values())):
        raise ValueError(f"forms must map params paths to one of {FORMS}, got {forms!r}")
    example = np.asarray(example_input, np.float32)
    if example.ndim < 1 or example.shape[0] < 1:
        raise ValueError(f"example_input needs a batch axis with one example, got shape "
                         f"{example.shape}")
    lib = _litert()
    dense, leaf_methods = _decoded(variables)
    methods = {**leaf_methods, **_checked_methods(methods, leaf_methods)}
    predict = _inference(model, dense)
    reference = _reference(model, dense)
    shape = (batch, *example.shape[1:])
    converted = _convert(lib, predict, shape)
    write = lambda given, costs: _written(lib, converted, dense["params"], methods,  # noqa: E731
                                          weights, sparse, given, costs)
    if not sparse:
        tflite, layers, chosen = write({}, {})
    else:
        tflite, layers, chosen = _smallest_download(write, dict(forms or {}))
        if unknown := set(forms or {}) - set(chosen):
            raise ValueError(f"forms names {sorted(map(repr, unknown))}, which this model has "
                             "no kernel at most half non-zero for")
    sample = np.broadcast_to(example[:1], shape).copy()
    diff = _max_output_diff(lib, tflite, reference, sample)
    return Exported(tflite, layers, diff, shape, chosen)


def format_layers(layers: Mapping[str, Layer]) -> str:
    """A text table of ``Exported.layers``: path, method, storage, max weight change, bytes;
    a line saying what the last two mean."""
    width = max([len("layer"), *map(len, layers)])
    kind = max([14, *(len(row.storage) for row in layers.values())])
    lines = [f"{'layer':<{width}}  {'method':<8} {'stored as':<{kind}} {'max |dw|':>10} "
             f"{'bytes':>11}"]
    for path, row in layers.items():
        error = "0 (exact)" if row.max_error == 0 else f"{row.max_error:.3g}"
        lines.append(f"{path:<{width}}  {row.method:<8} {row.storage:<{kind}} {error:>10} "
                     f"{row.bytes:>11,}")
    lines.append("max |dw|: the largest change of a weight (0: exact); bytes: the stored "
                 "values (and gaps, or palette symbols)")
    return "\n".join(lines)


def sparse_note(layers: Mapping[str, Layer]) -> str | None:
    """One line on the speed of the layers stored sparse (values and gaps, or a palette), or
    None if none is."""
    sparse = [path for path, row in layers.items() if "sparse" in row.storage]
    if not sparse:
        return None
    return (f"{len(sparse)} kernel(s) stored sparse (non-zero values and gaps, or a palette "
            "of values coded with the gaps): a smaller "
            "download, rebuilt at every invoke, so those layers run slower; zylax export "
            "--dense (sparse=False) keeps every kernel dense and fast")


def stored_methods(header: Mapping) -> dict[str, str]:
    """``{params path: codec method}`` from a ``.zyl`` header (``archive.read_header``)."""
    return {entry["name"]: entry["method"] for entry in header["leaves"]
            if entry["collection"] == "params"}


def _checked_methods(methods: Mapping[str, str] | None, leaves: dict[str, str]) -> dict:
    """``methods`` restricted to plain-array leaves; ValueError for an unknown path or method."""
    for path, method in (methods or {}).items():
        if path not in leaves:
            raise ValueError(f"methods names {path!r}, which is not a params leaf")
        if method not in codecs.CODECS:
            raise ValueError(f"{path}: unknown method {method!r}; known: {sorted(codecs.CODECS)}")
    return {p: m for p, m in (methods or {}).items() if leaves[p] == "raw"}


def op_names(tflite: bytes) -> list[str]:
    """The builtin op names of a ``.tflite`` file's main graph, in execution order."""
    lib = _litert()
    graph = _read(lib, tflite)
    return [_op_name(lib, graph, op) for op in graph.subgraphs[0].operators]


SCORE_BATCH = 100
"""Inputs per interpreter call when ``score`` runs a test split, at most."""
SCORE_INPUT_VALUES = 1 << 22
"""Input values per interpreter call when ``score`` runs a test split, at most."""


def interpreter_outputs(tflite: bytes, batches):
    """Yields the default LiteRT interpreter's outputs (XNNPACK included) for each array of
    ``batches``: a list of arrays in the file's output order.

    Every batch must have the file's input shape (a ``.tflite`` graph is made for one batch
    size: its reshapes are constants)."""
    interpreter = _interpreter(_litert(), tflite)
    given = interpreter.get_input_details()[0]["index"]
    wanted = [d["index"] for d in interpreter.get_output_details()]
    for inputs in batches:
        interpreter.set_tensor(given, np.asarray(inputs, np.float32))
        interpreter.invoke()
        yield [interpreter.get_tensor(k).copy() for k in wanted]


def model_outputs(outputs: list):
    """One interpreter call's outputs as the model returns them: the array, or the tuple of
    several (what ``task.score_outputs`` takes)."""
    return outputs[0] if len(outputs) == 1 else tuple(outputs)


def score(model, variables, task, images, labels, *, preprocess, weights: str = "auto",
          methods: Mapping[str, str] | None = None, batch: int = SCORE_BATCH,
          sparse: bool = True, forms: Mapping[str, str] | None = None) -> dict:
    """The task's metrics (``task.score_outputs``) of the model as LiteRT runs it.

    ``images`` ``(N, ...)`` uint8 and ``labels`` as the task scores them; the images are
    preprocessed (``preprocess``) and run by the interpreter ``batch`` at a time (fewer when
    that is over ``SCORE_INPUT_VALUES`` input values) on an export of ``variables`` for that
    batch (``weights``, ``methods``, ``sparse``, ``forms`` as ``export``: pass a shipped
    file's ``sparse`` and ``Exported.forms`` to score its very kernels); the last batch is
    padded with copies of its first image and the padding's outputs dropped, so every image
    counts once."""
    count = len(images)
    if not count:
        raise ValueError("no image to score")
    example = np.asarray(preprocess(images[:1]), np.float32)
    batch = max(1, min(batch, count, SCORE_INPUT_VALUES // max(1, example.size)))
    tflite = to_tflite(model, variables, example, weights=weights, batch=batch,
                       methods=methods, sparse=sparse, forms=forms)

    def batches():
        for start in range(0, count, batch):
            x = np.asarray(preprocess(images[start:start + batch]), np.float32)
            pad = batch - len(x)
            yield np.concatenate([x, np.repeat(x[:1], pad, axis=0)]) if pad else x

    def outputs():
        for start, found in zip(range(0, count, batch), interpreter_outputs(tflite, batches())):
            yield model_outputs([o[:count - start] for o in found])
    return task.score_outputs(outputs(), labels)


def ship(model, variables, images, labels, *, task, preprocess, out: str,
         methods: Mapping[str, str] | None = None) -> tuple[Exported, dict]:
    """What ``zylax compress --tflite`` does: ``export`` of ``variables`` (weights auto, batch
    1) written to ``out`` (atomically), and ``score`` of the same kernels (its forms) in the
    interpreter on ``images``/``labels``. Returns the ``Exported`` and the task's metrics."""
    exported = export(model, variables, preprocess(images[:1]), methods=methods)
    archive.write_atomic(out, exported.tflite)
    return exported, score(model, variables, task, images, labels, preprocess=preprocess,
                           methods=methods, forms=exported.forms)


# -- the extra ------------------------------------------------------------------------------

def _missing(package: str) -> str:
    """The one-line message for a missing package of the extra."""
    return (f"exporting to LiteRT needs the litert extra ({package} is missing): "
            "pip install 'zylax[litert]'")


def check_extra() -> None:
    """``RuntimeError`` (``_litert``'s one line) when the litert extra is not installed; it
    imports nothing, so a command can refuse before hours of training."""
    for package in ("tensorflow", "ai_edge_litert"):
        if importlib.util.find_spec(package) is None:
            raise RuntimeError(_missing(package))


def _litert() -> SimpleNamespace:
    """TensorFlow, jax2tf and LiteRT, imported on first use; one-line error without the extra."""
    try:
        with _quiet_native_stderr():
            import tensorflow as tf
            from ai_edge_litert import schema_py_generated as schema
            from ai_edge_litert.interpreter import Interpreter
            from ai_edge_litert.tools import flatbuffer_utils
            from jax.experimental import jax2tf
            tf.config.list_physical_devices()  # TensorFlow's device probe logs (cuInit) here
    except ImportError as err:
        raise RuntimeError(_missing(err.name or str(err))) from None
    return SimpleNamespace(tf=tf, jax2tf=jax2tf, schema=schema, Interpreter=Interpreter,
                           flatbuffer_utils=flatbuffer_utils)


@contextlib.contextmanager
def _quiet_native_stderr():
    """Sends file descriptor 2 to /dev/null: the C++ log lines of TensorFlow and LiteRT.

    Failures still surface as exceptions, whose messages this module turns
    into one line.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# -- the model as an inference function -----------------------------------------------------

def _decoded(variables) -> tuple[dict, dict[str, str]]:
    """Dense variables (floats as float32) and ``{params path: codec method}``."""
    if not isinstance(variables, Mapping) or not isinstance(variables.get("params"), Mapping):
        raise ValueError("variables must be a dict with a 'params' collection, as model.init "
                         "returns")
    methods: dict[str, str] = {}
    dense = {name: _dense_tree(tree, methods if name == "params" else {}, "")
             for name, tree in variables.items()}
    return dense, methods


def _dense_tree(tree: Mapping, methods: dict[str, str], prefix: str) -> dict:
    """``tree`` with every leaf decoded; records each leaf's method under its path."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out[key] = _dense_tree(value, methods, f"{prefix}{key}/")
            continue
        methods[f"{prefix}{key}"] = codecs.for_leaf(value).METHOD
        dense = np.asarray(codecs.dense(value))
        if dense.dtype.kind == "f" and not np.isfinite(dense.astype(np.float32)).all():
            raise ValueError(f"{prefix}{key}: {int(np.sum(~np.isfinite(dense)))} NaN/Inf "
                             "weights; an exported model would compute garbage")
        out[key] = dense.astype(np.float32) if dense.dtype.kind == "f" or \
            dense.dtype.name == "bfloat16" else dense
    return out


def _reference(model, dense: dict):
    """``x -> model.apply(dense, x)`` in inference mode, as the model itself computes it."""
    kwargs = train.mode_kwargs(model, False)
    return lambda x: model.apply(dense, x, **kwargs)


def _inference(model, dense: dict):
    """``_reference`` with BatchNorm as one affine map and ``TapConv`` as ``nn.Conv``."""
    plain = _reference(model, dense)

    def predict(x):
        with nn.intercept_methods(_plain_conv), nn.intercept_methods(_affine_batchnorm):
            return plain(x)
    return predict


def _affine_batchnorm(next_fun, args, kwargs, context):
    """Inference BatchNorm as one affine map ``x * a + b`` per feature.

    ``a = scale / sqrt(var + eps)`` and ``b = bias - mean * a`` are constants,
    so the converter folds the MUL and the ADD into the conv or dense op before
    them (it does not fold Flax's own ``(x - mean) * a + bias`` after a dense
    op). Training-mode and masked calls run unchanged.
    """
    module = context.module
    if (context.method_name != "__call__" or not isinstance(module, nn.BatchNorm)
            or kwargs.get("mask") is not None):
        return next_fun(*args, **kwargs)
    flag = kwargs.get("use_running_average", args[1] if len(args) > 1 else None)
    if not (module.use_running_average if flag is None else flag):
        return next_fun(*args, **kwargs)
    x = args[0]
    axes = {a % x.ndim for a in (module.axis if isinstance(module.axis, tuple) else
                                 (module.axis,))}
    shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
    if "batch_stats" not in module.variables:
        raise ValueError(f"{'/'.join(module.path) or 'BatchNorm'}: no batch_stats; export needs "
                         "the full variables ({'params': ..., 'batch_stats': ...}) as init, "
                         "fit and archive.load return them")
    stats, params = module.variables["batch_stats"], module.variables.get("params", {})
    a = jnp.asarray(stats["var"], jnp.float32) + module.epsilon
    a = (jnp.asarray(params["scale"], jnp.float32) if module.use_scale else 1.0) / jnp.sqrt(a)
    b = (jnp.asarray(params["bias"], jnp.float32) if module.use_bias else 0.0) - \
        jnp.asarray(stats["mean"], jnp.float32) * a
    return x * a.reshape(shape) + b.reshape(shape)


def _plain_conv(next_fun, args, kwargs, context):
    """Runs a grouped ``TapConv`` as the ``nn.Conv`` with the same fields and params."""
    module = context.module
    if (context.method_name != "__call__" or not isinstance(module, TapConv)
            or module.feature_group_count == 1):
        return next_fun(*args, **kwargs)
    fields = {f.name: getattr(module, f.name) for f in dataclasses.fields(nn.Conv)
              if f.init and f.name not in ("parent", "name")}
    return nn.Conv(**fields).apply({"params": module.variables["params"]}, *args, **kwargs)


# -- conversion -----------------------------------------------------------------------------

def _convert(lib, predict, shape: tuple[int, ...]) -> bytes:
    """The converter's float32 ``.tflite`` of ``predict`` on float32 input ``shape``."""
    tf = lib.tf
    tf_fn = tf.function(lib.jax2tf.convert(predict, with_gradient=False), autograph=False,
                        input_signature=[tf.TensorSpec(shape, tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [tf_fn.get_concrete_function()], tf_fn)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        with _quiet_native_stderr():
            return converter.convert()
    except Exception as err:  # noqa: BLE001 - the converter raises several internal types
        raise RuntimeError(_refusal(str(err), predict, shape)) from None


def _refusal(message: str, predict, shape) -> str:
    """One line naming the op the converter could not lower to a builtin LiteRT op."""
    ops = re.findall(r"'([\w.]+)' op (?:is|was|failed)", message)
    ops = [op for op in ops if op != "tf.XlaCallModule"] or _custom_calls(predict, shape)
    if not ops:
        suspects = _unusual_ops(predict, shape)
        if suspects:
            return (f"the LiteRT converter could not lower the model to builtin ops; it uses "
                    f"{', '.join(suspects)}, which have no direct builtin LiteRT op (zylax "
                    "exports builtin ops only, no Flex / SELECT_TF_OPS)")
        first = message.strip().splitlines()[0] if message.strip() else "unknown error"
        return f"the LiteRT converter failed: {first[:300]}"
    name = re.sub(r"^vhlo\.(\w+?)_v\d+$", r"stablehlo.\1", ops[0])
    return (f"the model needs {name}, which no builtin LiteRT op implements; zylax exports "
            "builtin ops only (no Flex / SELECT_TF_OPS)")


_COMMON_OPS = frozenset(
    "abs add and broadcast_in_dim clamp compare concatenate constant convert convolution "
    "cosine divide dot_general exponential floor iota log logistic maximum minimum multiply "
    "negate or pad power reduce reduce_window reshape return rsqrt select sine slice sqrt "
    "subtract tanh transpose".split())
"""StableHLO ops the converter maps to builtin LiteRT ops in the nets we export."""


def _unusual_ops(predict, shape) -> list[str]:
    """The StableHLO ops of ``predict`` outside ``_COMMON_OPS`` (the likely refusals)."""
    text = jax.export.export(jax.jit(predict))(
        jax.ShapeDtypeStruct(shape, np.float32)).mlir_module()
    found = set(re.findall(r"(?:stablehlo|chlo)\.(\w+)", text))
    return sorted(f"stablehlo.{op}" for op in found - _COMMON_OPS)


def _custom_calls(predict, shape) -> list[str]:
    """Targets of the ``stablehlo.custom_call`` ops of ``predict`` (e.g. LAPACK kernels)."""
    text = jax.export.export(jax.jit(predict))(
        jax.ShapeDtypeStruct(shape, np.float32)).mlir_module()
    return [f"custom_call {t}" for t in re.findall(r"stablehlo\.custom_call @(\w+)", text)]


def _read(lib, tflite: bytes):
    """The flatbuffer object tree of a ``.tflite`` file (ops, tensors, buffers)."""
    return lib.flatbuffer_utils.read_model_from_bytearray(bytearray(tflite))


def _op_name(lib, graph, op) -> str:
    """The builtin name of ``op`` (``CONV_2D``, ...)."""
    code = graph.operatorCodes[op.opcodeIndex]
    value = max(code.builtinCode, code.deprecatedBuiltinCode)
    names = {v: k for k, v in vars(lib.schema.BuiltinOperator).items() if k.isupper()}
    return names.get(value, f"builtin {value}")


def _check_builtin(lib, graph) -> None:
    """Refuses a graph with a CUSTOM (or Flex) op: the stock interpreter lacks it."""
    for code in graph.operatorCodes:
        if max(code.builtinCode, code.deprecatedBuiltinCode) == lib.schema.BuiltinOperator.CUSTOM:
            name = code.customCode.decode() if isinstance(code.customCode, bytes) else \
                str(code.customCode)
            raise RuntimeError(f"the converted model needs the custom op {name!r}; zylax exports "
                               "builtin LiteRT ops only")


# -- kernels: match to leaves, choose storage, rewrite --------------------------------------

@dataclasses.dataclass(eq=False)
class _Kernel:
    """A constant float32 kernel of the graph: tensor index, values, output axis, readers."""

    tensor: int
    values: np.ndarray
    axis: int
    ops: list[str]


def _kernels(lib, graph, position: int = 1) -> list[_Kernel]:
    """Every constant float32 input ``position`` of a conv or fully connected op (1: its
    kernel, 2: its bias), once per tensor."""
    subgraph, found = graph.subgraphs[0], {}
    for op in subgraph.operators:
        name = _op_name(lib, graph, op)
        if name not in _KERNEL_OPS or len(op.inputs) <= position or op.inputs[position] < 0:
            continue
        index = op.inputs[position]
        tensor = subgraph.tensors[index]
        data = graph.buffers[tensor.buffer].data
        if tensor.type != lib.schema.TensorType.FLOAT32 or data is None or not len(data):
            continue
        if index not in found:
            values = np.frombuffer(bytes(data), "<f4").reshape(tensor.shape)
            found[index] = _Kernel(index, values, _KERNEL_OPS[name] if position == 1 else 0, [])
        found[index].ops.append(name)
    return list(found.values())


def _as_leaf(kernel: _Kernel, shape: tuple[int, ...]) -> np.ndarray | None:
    """The kernel in the leaf's layout (output channels last), or None if it cannot be."""
    values = kernel.values
    if values.size != int(np.prod(shape)) or not shape or values.shape[kernel.axis] != shape[-1]:
        return None
    return np.moveaxis(values, kernel.axis, -1).reshape(shape)


def _reads(kernel: _Kernel, leaf: np.ndarray) -> bool:
    """True when the graph kernel is ``leaf``, possibly with a BatchNorm folded in."""
    folded = _as_leaf(kernel, leaf.shape)
    return folded is not None and _matches(folded, leaf)


def _matches(folded: np.ndarray, leaf: np.ndarray) -> bool:
    """True when ``folded == leaf * c`` for one factor ``c`` per output channel (BN folding)."""
    w = leaf.reshape(-1, leaf.shape[-1]).astype(np.float64)
    f = folded.reshape(w.shape).astype(np.float64)
    pick = np.abs(w).argmax(0)
    top = w[pick, np.arange(w.shape[1])]
    factor = np.divide(f[pick, np.arange(w.shape[1])], top, out=np.ones_like(top),
                       where=top != 0)
    return bool(np.all((w == 0) == (f == 0)) and np.allclose(f, w * factor, rtol=1e-4, atol=0))


def _written(lib, converted: bytes, params: dict, methods: dict[str, str], weights: str,
             sparse: bool, forms: dict[str, str], costs: dict
             ) -> tuple[bytes, dict[str, Layer], dict[str, str]]:
    """``(the .tflite bytes, the report per leaf, the form stored per weighed kernel)`` of the
    converted graph with every kernel (and, in ``auto``, every ``cast`` bias) rewritten;
    ``forms``: ``{params path: "dense", "values" or "palette"}`` to store (a path ``p/1`` for
    the second graph kernel of leaf ``p``; dense where the form does not fit the kernel),
    else the one with the fewest estimated bytes, each kernel's estimates written to
    ``costs``."""
    graph, applied = _read(lib, converted), {}
    _check_builtin(lib, graph)
    layers = _store_kernels(lib, graph, params, methods, weights, sparse, forms, costs, applied)
    if weights == "auto":
        layers.update(_store_biases(lib, graph, params, methods))
    _raise_min_runtime_version(lib, graph)
    return _serialize(graph), layers, applied


_RUNTIME_VERSIONS = {
    ("ADD", 1): "1.5.0", ("CAST", 1): "1.5.0", ("CUMSUM", 1): "2.4.0",
    ("DEQUANTIZE", 3): "1.15.0", ("DEQUANTIZE", 5): "2.7.0", ("FLOOR_DIV", 1): "1.14.0",
    ("FLOOR_MOD", 1): "1.13.0", ("GATHER_ND", 1): "1.14.0", ("MUL", 1): "1.5.0",
    ("RESHAPE", 1): "1.5.0", ("SCATTER_ND", 1): "2.1.0"}
"""The oldest LiteRT runtime of each op version the exporter adds (TFLite's
``runtime_version.cc``, which lists no INT4/INT2 DEQUANTIZE)."""


def _raise_min_runtime_version(lib, graph) -> None:
    """Raises the file's ``min_runtime_version`` metadata (the converter's, for its own ops) to
    the newest runtime an added op needs (``_RUNTIME_VERSIONS``); a value that is no dotted
    version is replaced, and a file without the entry gets one, 16 bytes as TFLite writes it."""
    names = {v: k for k, v in vars(lib.schema.BuiltinOperator).items() if k.isupper()}
    needed = [_RUNTIME_VERSIONS.get((names.get(max(code.builtinCode,
                                                       code.deprecatedBuiltinCode)),
                                     code.version)) for code in graph.operatorCodes]
    needed = [version for version in needed if version]
    if not needed:
        return
    newest = max(needed, key=_version_key)
    entries = [m for m in graph.metadata or [] if m.name in (b"min_runtime_version",
                                                              "min_runtime_version")]
    if not entries:
        graph.buffers.append(lib.schema.BufferT())
        entry = lib.schema.MetadataT()
        entry.name, entry.buffer = "min_runtime_version", len(graph.buffers) - 1
        graph.metadata = [*(graph.metadata or []), entry]
        entries = [entry]
    buffer = graph.buffers[entries[0].buffer]
    data = b"" if buffer.data is None else bytes(np.asarray(buffer.data, np.uint8))
    current = data.rstrip(b"\0").decode("ascii", "replace")
    if re.fullmatch(r"\d+(\.\d+)*", current) and _version_key(current) >= _version_key(newest):
        return
    buffer.data = np.frombuffer(newest.encode().ljust(max(16, len(data)), b"\0"), np.uint8)


def _version_key(version: str) -> tuple[int, ...]:
    """``"2.4.0"`` -> ``(2, 4, 0)``, for comparing runtime versions."""
    return tuple(int(part) for part in version.split("."))


FORMS = ("dense", "values", "palette")
"""How a kernel at most half non-zero may be stored (module docstring; ``Exported.forms``)."""
WHOLE_FILE_MARGIN = (0.1, 600)
"""A sparse kernel's runner-up form estimated within this fraction of its chosen one, or within
this many bytes, is also tried in the whole file (``_smallest_download``): the ops a first
sparse kernel adds cost up to about 300 bytes more than their estimate."""
WHOLE_FILE_TRIES = 8
"""The most whole files written to check the close calls."""


def _smallest_download(write, fixed: dict[str, str]
                       ) -> tuple[bytes, dict[str, Layer], dict[str, str]]:
    """``write(forms, costs)`` with each kernel's form chosen by its own estimate, then every
    kernel dense, then, for the close calls (a runner-up within ``WHOLE_FILE_MARGIN``, fewest
    bytes apart first, at most ``WHOLE_FILE_TRIES``), the runner-up: each kept where the whole
    file gzips smaller, so the file is never larger than the all-dense one. One gzip stream
    over the file codes neighbouring tensors with shared Huffman tables, and the sparse ops'
    opcodes are written once for all kernels, which a kernel's estimate alone does not see.
    The kernels ``fixed`` names keep their form throughout. Returns the file, its report and
    each weighed kernel's form."""
    costs: dict[str, dict[str, int]] = {}
    tflite, layers, chosen = write(fixed, costs)
    estimated = {path: min(options, key=options.get) for path, options in costs.items()}
    fraction, slack = WHOLE_FILE_MARGIN
    close = sorted((options[form] - options[estimated[path]], path, form)
                   for path, options in costs.items() for form in options
                   if form != estimated[path] and options[form] - options[estimated[path]] <=
                   max(fraction * options[estimated[path]], slack))
    best, dense = _gzipped(tflite), {path: "dense" for path in costs}
    for change in [dense, *({path: form} for _, path, form in close[:WHOLE_FILE_TRIES])]:
        forms = {**chosen, **change}
        if forms == chosen:
            continue
        candidate, rows, applied = write(forms, {})
        if (size := _gzipped(candidate)) < best:
            best, tflite, layers, chosen = size, candidate, rows, applied
    return tflite, layers, chosen


def _store_kernels(lib, graph, params: dict, methods: dict[str, str], weights: str,
                   sparse: bool, forms: dict[str, str], costs: dict, applied: dict
                   ) -> dict[str, Layer]:
    """Matches every params kernel to graph kernels and rewrites them (``_written``: ``forms``,
    ``costs``, and ``applied``, each weighed kernel's form as stored); the report per leaf."""
    kernels, layers = _kernels(lib, graph), {}
    for path, leaf in ztree.named_leaves(params).items():
        leaf = np.asarray(leaf)
        if leaf.ndim < 2 or leaf.dtype != np.float32:
            continue
        mine = [k for k in kernels if _reads(k, leaf)]
        kernels = [k for k in kernels if k not in mine]
        rows = [_store(lib, graph, path if i == 0 else f"{path}/{i}", methods[path], k,
                       weights, sparse, forms, costs, applied) for i, k in enumerate(mine)]
        layers[path] = _merged(methods[path], rows, leaf)
    return layers


def _store_biases(lib, graph, params: dict, methods: dict[str, str]) -> dict[str, Layer]:
    """Stores as float16 (and a DEQUANTIZE) every conv or dense bias the graph holds as it is
    in a ``cast`` leaf whose values float16 holds exactly (the ``.zyl`` file's float16
    biases); the report per leaf."""
    biases, layers = _kernels(lib, graph, position=2), {}
    for path, leaf in ztree.named_leaves(params).items():
        leaf = np.asarray(leaf)
        if methods[path] != "cast" or leaf.ndim != 1 or not _exact_in_float16(leaf):
            continue
        mine = [b for b in biases if np.array_equal(b.values, leaf)]
        biases = [b for b in biases if b not in mine]
        half = leaf.astype(np.float16)
        for bias in mine:
            _replace(lib, graph, bias, [(f"zylax/{path}/float16", half, None)], "float16")
        if mine:
            layers[path] = Layer("cast", "float16", 0.0, half.nbytes * len(mine),
                                 tuple(op for b in mine for op in b.ops))
    return layers


def _exact_in_float16(values: np.ndarray) -> bool:
    """True when every value of a float32 array is a float16 value (no rounding, no overflow)."""
    with np.errstate(over="ignore"):
        return bool(np.array_equal(values.astype(np.float16).astype(np.float32), values))


def _merged(method: str, rows: list[Layer], leaf: np.ndarray) -> Layer:
    """One report row for a leaf read by ``rows`` kernels (0: left float32 wherever it is;
    several: their storages joined by `` / `` where they differ)."""
    if len(rows) == 1:
        return rows[0]
    if not rows:
        return Layer(method, "float32", 0.0, leaf.nbytes, ())
    return Layer(method, " / ".join(dict.fromkeys(r.storage for r in rows)),
                 max(r.max_error for r in rows),
                 sum(r.bytes for r in rows), tuple(op for r in rows for op in r.ops))


def _store(lib, graph, path: str, method: str, kernel: _Kernel, weights: str,
           sparse: bool, forms: dict[str, str], costs: dict, applied: dict) -> Layer:
    """Rewrites one kernel tensor to its storage (``weights``, or with ``"auto"`` the one its
    codec declares, ``LITERT_STORAGE``), in a sparse form when ``sparse`` and that gzips
    smaller (``_written``: ``forms``, ``costs``, ``applied``); the report row."""
    codec = codecs.by_method(method)
    storage, values = codec.LITERT_STORAGE if weights == "auto" else weights, kernel.values
    if weights == "auto" and method == "cast" and _exact_in_float16(values):
        storage = "float16"
    parts = _stored_parts(path, method, kernel, storage, weights)
    stored = sum(_dequantized(q, scale, kernel.axis) for _, q, scale in parts)
    error = float(np.max(np.abs(stored - values), initial=0.0))
    ops = tuple(kernel.ops)
    if sparse and np.count_nonzero(stored) <= stored.size // 2:
        exact = values if weights == "auto" else stored
        options = None if path in forms else _sparse_options(parts, storage, exact)
        if options is not None:
            costs[path] = options
        form = forms[path] if options is None else min(options, key=options.get)
        palette = _palette_form(exact) if form == "palette" else None
        if form == "palette" and palette is None or form == "values" and len(parts) != 1:
            form = "dense"  # a form named for other kernel values
        applied[path] = form
        if form == "palette":
            written = _replace_palette(lib, graph, kernel, path, *palette)
            label = "palette sparse" if weights == "auto" else f"{weights} palette sparse"
            return Layer(method, label, float(np.max(np.abs(exact - values), initial=0.0)),
                         written, ops)
        if form == "values":
            _, q, scale = parts[0]
            written = _replace_sparse(lib, graph, kernel, path, *_sparse_form(q), q,
                                      _kept_scale(q, scale, kernel.axis), storage)
            return Layer(method, f"{storage} sparse", error, written, ops)
    if storage == "float32":
        return Layer(method, storage, 0.0, values.size * 4, ops)
    _replace(lib, graph, kernel, [(f"zylax/{path}/{storage}{suffix}", q, scale)
                                  for suffix, q, scale in parts], storage)
    written = sum(len(_payload(q, storage)) for _, q, _ in parts)
    return Layer(method, "+".join([storage] * len(parts)), error, written, ops)


def _sparse_options(parts: list, storage: str, exact: np.ndarray) -> dict[str, int]:
    """Estimated gzipped bytes of each form of a kernel at most half non-zero, its ops
    included: ``"dense"`` (its ``parts`` in ``storage``), ``"values"`` (``storage`` values and
    uint8 gaps; one part only) and ``"palette"`` (``exact``'s values, at most
    ``PALETTE_VALUES``, coded jointly with the gaps)."""
    options = {"dense": sum(_gzipped(_payload(q, storage)) for _, q, _ in parts)}
    if len(parts) == 1:
        gaps, kept = _sparse_form(parts[0][1])
        options["values"] = _gzipped(gaps.tobytes() + _payload(kept, storage)) + \
            SPARSE_GRAPH_BYTES
    palette = _palette_form(exact)
    if palette is not None:
        symbols, values = palette
        options["palette"] = _gzipped(symbols.tobytes()) + values.nbytes + PALETTE_GRAPH_BYTES
    return options


def _stored_parts(path: str, method: str, kernel: _Kernel, storage: str, weights: str
                  ) -> list:
    """``[(suffix, q, scale or None)]`` whose dequantized sum is what ``storage`` keeps of the
    kernel: the float32 values themselves, their float16 (refused when one overflows), the
    exact sign grids of a binary/ternary/pattern kernel, or the symmetric integer grid."""
    values = kernel.values
    if storage == "float32":
        return [("", values, None)]
    if storage == "float16":
        with np.errstate(over="ignore"):
            half = values.astype(np.float16)
        if not np.isfinite(half).all():
            raise RuntimeError(f"{path}: a kernel value ({float(np.abs(values).max()):.3g}) "
                               "overflows float16; export it with --weights float32 or int8")
        return [("", half, None)]
    if codecs.by_method(method).LITERT_EXACT:
        return _exact_parts(path, method, values, kernel.axis)
    per_tensor = weights == "auto" and method == "shared"
    return [("", *_snapped(values, kernel.axis, _BITS[storage], per_tensor=per_tensor))]


def _exact_parts(path: str, method: str, values: np.ndarray, axis: int) -> list:
    """``[(suffix, q, scale)]`` whose dequantized sum equals ``values`` exactly: one sign grid
    (q in {-1, 0, 1}, one scale per channel), or two when the positive and negative
    magnitudes differ (TTQ's ``w_pos != w_neg``)."""
    whole = _sign_grid(values, axis)
    if whole is not None:
        return [("", *whole)]
    pos = _sign_grid(np.where(values > 0, values, 0).astype(np.float32), axis)
    neg = _sign_grid(np.where(values < 0, values, 0).astype(np.float32), axis)
    if pos is not None and neg is not None:
        return [("/pos", *pos), ("/neg", *neg)]
    raise RuntimeError(f"{path}: a {method} kernel whose values (after BatchNorm folding) are "
                       "not one magnitude per output channel and sign; cannot store it exactly")


def _sign_grid(values: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(q in {-1, 0, 1}, scale per channel)`` with ``q * scale == values`` exactly, or None."""
    channels = np.moveaxis(np.abs(values), axis, 0).reshape(values.shape[axis], -1)
    scale = channels.max(1)
    scale[scale == 0] = 1.0
    q = np.sign(values).astype(np.int8)
    if not np.array_equal(_dequantized(q, scale, axis), values):
        return None
    return q, scale.astype(np.float32)


def _snapped(values: np.ndarray, axis: int, bits: int, per_tensor: bool = False
             ) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric grid: ``scale = max|w| / (2^(bits-1) - 1)`` per channel (or, ``per_tensor``,
    the kernel's one scale repeated per channel), q = round(w / scale)."""
    top = (1 << (bits - 1)) - 1
    channels = np.moveaxis(np.abs(values), axis, 0).reshape(values.shape[axis], -1)
    peaks = np.full(channels.shape[0], channels.max(initial=0.0)) if per_tensor else \
        channels.max(1)
    scale = (peaks / top).astype(np.float32)
    scale[scale == 0] = 1.0
    q = np.clip(np.round(values / _along(scale, axis, values.ndim)), -top, top)
    return q.astype(np.int8), scale


def _along(scale: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """``scale`` shaped to broadcast along ``axis`` of an ``ndim``-axis array."""
    return scale.reshape([-1 if i == axis else 1 for i in range(ndim)])


def _dequantized(q: np.ndarray, scale: np.ndarray | None, axis: int) -> np.ndarray:
    """What DEQUANTIZE computes: ``float32(q) * scale`` (float16 tensors: their float32 value)."""
    if scale is None:
        return q.astype(np.float32)
    return q.astype(np.float32) * _along(scale.astype(np.float32), axis, q.ndim)


def _packed(q: np.ndarray, bits: int) -> bytes:
    """Little-end-first packing of ``bits``-bit two's-complement values (8: plain int8)."""
    if bits == 8:
        return q.astype(np.int8).tobytes()
    per = 8 // bits
    flat = q.ravel().astype(np.int64) & ((1 << bits) - 1)
    flat = np.concatenate([flat, np.zeros(-flat.size % per, np.int64)]).reshape(-1, per)
    return (flat << (np.arange(per) * bits)).sum(1).astype(np.uint8).tobytes()


def _replace(lib, graph, kernel: _Kernel, parts: list, storage: str) -> None:
    """Makes the float kernel the DEQUANTIZE of ``parts`` (summed by one ADD when two)."""
    schema, subgraph = lib.schema, graph.subgraphs[0]
    target = subgraph.tensors[kernel.tensor]
    _drop_buffer(graph, target.buffer)
    target.buffer = 0
    dequantize = _opcode(lib, graph, schema.BuiltinOperator.DEQUANTIZE,
                         _DEQUANTIZE_VERSION[storage])
    outputs = [kernel.tensor] if len(parts) == 1 else [
        _add_tensor(lib, graph, "", target.shape, schema.TensorType.FLOAT32) for _ in parts]
    new_ops = []
    for (name, q, scale), out in zip(parts, outputs):
        stored = _add_tensor(lib, graph, name, target.shape, _tensor_type(lib, storage),
                             _payload(q, storage), _quantization(lib, scale, kernel.axis))
        new_ops.append(_operator(lib, dequantize, [stored], [out]))
    if len(parts) == 2:
        add = _opcode(lib, graph, schema.BuiltinOperator.ADD, 1)
        new_ops.append(_operator(lib, add, outputs, [kernel.tensor],
                                 (schema.BuiltinOptions.AddOptions, schema.AddOptionsT())))
    subgraph.operators[:0] = new_ops


SPARSE_GAP = 255
"""The longest gap a uint8 stores: a longer one is bridged by zero values every 255 positions."""
SPARSE_GRAPH_BYTES = 300
"""About what the sparse form's ops (4 to 7) and their small tensors add to a gzipped file."""
PALETTE_VALUES = 64
"""The most distinct values a palette kernel holds: a symbol byte then still holds gaps up
to 3 (``256 // 64 - 1``); more values leave too little room for gaps to pay."""
PALETTE_GRAPH_BYTES = 350
"""About what the palette form's 7 ops and their small tensors add to a gzipped file."""


def _sparse_positions(q: np.ndarray, longest: int = SPARSE_GAP) -> np.ndarray:
    """Sorted flat positions of ``q``'s non-zeros, with position 0 and, inside every gap
    longer than ``longest``, one position every ``longest`` (their values are zeros)."""
    ends = np.unique(np.concatenate([[0], np.flatnonzero(q.ravel())]))
    bridges = (np.diff(ends) - 1) // longest
    steps = np.arange(bridges.sum()) - np.repeat(np.cumsum(bridges) - bridges, bridges) + 1
    return np.sort(np.concatenate([ends, np.repeat(ends[:-1], bridges) + longest * steps]))


def _sparse_form(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(gaps uint8 (m, 1), values (m,))``: the exclusive cumulative sum of the gaps gives
    each value's flat position in ``q`` (the last gap is 0 and unused). A zero of either
    sign is written as +0."""
    positions = _sparse_positions(q)
    gaps = np.append(np.diff(positions), 0).astype(np.uint8).reshape(-1, 1)
    return gaps, q.ravel()[positions]


def _palette_form(values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(symbols uint8 (m, 1), palette float32 (k,))`` of a kernel with at most
    ``PALETTE_VALUES`` distinct values (0 included), else None. Symbol ``i`` is
    ``gap_i * k + index_i``: the gap to the next kept position (exclusive cumulative sums
    give the positions, as in ``_sparse_form``, bridged by zeros every ``256 // k - 1``
    positions) and the index of the value there in the sorted palette."""
    flat = values.ravel()
    palette = np.unique(np.append(flat, np.float32(0)))
    if palette.size > PALETTE_VALUES:
        return None
    palette[palette == 0] = 0  # +0.0, whichever zero np.unique kept
    k = palette.size
    positions = _sparse_positions(flat, 256 // k - 1)
    gaps = np.append(np.diff(positions), 0)
    symbols = gaps * k + np.searchsorted(palette, flat[positions])
    return symbols.astype(np.uint8).reshape(-1, 1), palette.astype(np.float32)


def _gzipped(data: bytes) -> int:
    """Bytes of ``data`` compressed as a download is (zlib deflate, level 9)."""
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def _kept_scale(q: np.ndarray, scale: np.ndarray | None, axis: int) -> np.ndarray | None:
    """``scale`` as the sparse form needs it: None (float values), one scale for the tensor
    (every channel holding a non-zero has it), or the per-channel scales."""
    if scale is None:
        return None
    used = np.moveaxis(q, axis, 0).reshape(q.shape[axis], -1).any(1)
    distinct = np.unique(scale[used] if used.any() else scale[:1])
    return distinct if distinct.size == 1 else scale


def _replace_sparse(lib, graph, kernel: _Kernel, path: str, gaps: np.ndarray,
                    kept: np.ndarray, q: np.ndarray, scale: np.ndarray | None,
                    storage: str) -> int:
    """Makes the float kernel ``RESHAPE(SCATTER_ND(CUMSUM(CAST(gaps)), values))`` of
    ``_sparse_form(q)``: integer values dequantized first (by ``scale`` when it is one
    value, else by 1 and the kernel then multiplied by the per-channel ``scale``); the bytes
    of gaps and values."""
    schema = lib.schema
    kinds, codes = schema.TensorType, schema.BuiltinOperator
    name, count = f"zylax/{path}/{storage}", int(gaps.shape[0])
    gap_tensor = _add_tensor(lib, graph, f"zylax/{path}/gaps", gaps.shape, kinds.UINT8,
                             gaps.tobytes())
    wide = _add_tensor(lib, graph, "", gaps.shape, kinds.INT32)
    new_ops = [_cast_op(lib, graph, gap_tensor, wide)]
    positions, cumsum = _positions_op(lib, graph, wide)
    new_ops.append(cumsum)
    per_channel = scale is not None and scale.size > 1
    if storage == "float32":
        updates = _add_tensor(lib, graph, name, (count,), kinds.FLOAT32, _payload(kept, storage))
    else:
        one = None if scale is None else np.ones(1, np.float32) if per_channel else scale
        stored = _add_tensor(lib, graph, name, (count,), _tensor_type(lib, storage),
                             _payload(kept, storage), _quantization(lib, one, 0))
        updates = _add_tensor(lib, graph, "", (count,), kinds.FLOAT32)
        dequantize = _opcode(lib, graph, codes.DEQUANTIZE, _DEQUANTIZE_VERSION[storage])
        new_ops.append(_operator(lib, dequantize, [stored], [updates]))
    target = graph.subgraphs[0].tensors[kernel.tensor]
    unscaled = _add_tensor(lib, graph, "", target.shape, kinds.FLOAT32) \
        if per_channel else kernel.tensor
    new_ops += _scatter_ops(lib, graph, kernel, positions, updates, unscaled)
    if per_channel:
        along = [scale.size if i == kernel.axis else 1 for i in range(len(target.shape))]
        scales = _add_tensor(lib, graph, f"{name}/scale", along, kinds.FLOAT32,
                             scale.astype("<f4").tobytes())
        new_ops.append(_operator(lib, _opcode(lib, graph, codes.MUL, 1), [unscaled, scales],
                                 [kernel.tensor], (schema.BuiltinOptions.MulOptions,
                                                   schema.MulOptionsT())))
    graph.subgraphs[0].operators[:0] = new_ops
    return gaps.nbytes + len(_payload(kept, storage))


def _replace_palette(lib, graph, kernel: _Kernel, path: str, symbols: np.ndarray,
                     palette: np.ndarray) -> int:
    """Makes the float kernel ``RESHAPE(SCATTER_ND(CUMSUM(s // k), GATHER_ND(palette,
    s % k)))`` of ``_palette_form``'s symbols ``s`` (``CAST`` to int32 first; ``FLOOR_DIV``,
    ``FLOOR_MOD``): the palette's float32 values themselves, so the kernel is exact; the bytes
    of symbols and palette."""
    schema = lib.schema
    kinds, codes = schema.TensorType, schema.BuiltinOperator
    name, shape = f"zylax/{path}/palette", symbols.shape
    coded = _add_tensor(lib, graph, f"zylax/{path}/symbols", shape, kinds.UINT8,
                        symbols.tobytes())
    wide, gaps, index = (_add_tensor(lib, graph, "", shape, kinds.INT32) for _ in range(3))
    k = _add_tensor(lib, graph, "", (), kinds.INT32,
                    np.asarray(palette.size, "<i4").tobytes())
    table = _add_tensor(lib, graph, name, palette.shape, kinds.FLOAT32,
                        palette.astype("<f4").tobytes())
    updates = _add_tensor(lib, graph, "", (shape[0],), kinds.FLOAT32)
    options = schema.BuiltinOptions
    new_ops = [
        _cast_op(lib, graph, coded, wide),
        _operator(lib, _opcode(lib, graph, codes.FLOOR_DIV, 1), [wide, k], [gaps],
                  (options.FloorDivOptions, schema.FloorDivOptionsT())),
        _operator(lib, _opcode(lib, graph, codes.FLOOR_MOD, 1), [wide, k], [index],
                  (options.FloorModOptions, schema.FloorModOptionsT())),
        _operator(lib, _opcode(lib, graph, codes.GATHER_ND, 1), [table, index], [updates],
                  (options.GatherNdOptions, schema.GatherNdOptionsT()))]
    positions, cumsum = _positions_op(lib, graph, gaps)
    new_ops += [cumsum, *_scatter_ops(lib, graph, kernel, positions, updates, kernel.tensor)]
    graph.subgraphs[0].operators[:0] = new_ops
    return symbols.nbytes + palette.nbytes


def _cast_op(lib, graph, uint8: int, int32: int):
    """``CAST`` of the uint8 tensor ``uint8`` into the int32 tensor ``int32``."""
    schema = lib.schema
    cast = schema.CastOptionsT()
    cast.inDataType, cast.outDataType = schema.TensorType.UINT8, schema.TensorType.INT32
    return _operator(lib, _opcode(lib, graph, schema.BuiltinOperator.CAST, 1), [uint8], [int32],
                     (schema.BuiltinOptions.CastOptions, cast))


def _positions_op(lib, graph, gaps: int) -> tuple[int, object]:
    """``(positions tensor, CUMSUM op)``: the exclusive cumulative sum of the int32 ``gaps``
    ``(m, 1)``, each kept value's flat position as SCATTER_ND reads it."""
    schema, shape = lib.schema, graph.subgraphs[0].tensors[gaps].shape
    positions = _add_tensor(lib, graph, "", shape, schema.TensorType.INT32)
    axis = _add_tensor(lib, graph, "", (), schema.TensorType.INT32,
                       np.asarray(0, "<i4").tobytes())
    cumsum = schema.CumsumOptionsT()
    cumsum.exclusive, cumsum.reverse = True, False
    return positions, _operator(lib, _opcode(lib, graph, schema.BuiltinOperator.CUMSUM, 1),
                                [gaps, axis], [positions],
                                (schema.BuiltinOptions.CumsumOptions, cumsum))


def _scatter_ops(lib, graph, kernel: _Kernel, positions: int, updates: int, out: int) -> list:
    """``SCATTER_ND`` of the float32 ``updates`` at ``positions`` into a flat zero kernel,
    ``RESHAPE``d into ``out`` (the kernel's shape); the kernel's old buffer is dropped."""
    schema, subgraph = lib.schema, graph.subgraphs[0]
    kinds, codes, options = schema.TensorType, schema.BuiltinOperator, schema.BuiltinOptions
    target = subgraph.tensors[kernel.tensor]
    _drop_buffer(graph, target.buffer)
    target.buffer = 0
    size = int(np.prod(target.shape))
    count = _add_tensor(lib, graph, "", (1,), kinds.INT32,
                        np.asarray([size], "<i4").tobytes())
    flat = _add_tensor(lib, graph, "", (size,), kinds.FLOAT32)
    shape = _add_tensor(lib, graph, "", (len(target.shape),), kinds.INT32,
                        np.asarray(target.shape, "<i4").tobytes())
    reshape = schema.ReshapeOptionsT()
    reshape.newShape = list(target.shape)
    return [_operator(lib, _opcode(lib, graph, codes.SCATTER_ND, 1), [positions, updates, count],
                      [flat], (options.ScatterNdOptions, schema.ScatterNdOptionsT())),
            _operator(lib, _opcode(lib, graph, codes.RESHAPE, 1), [flat, shape], [out],
                      (options.ReshapeOptions, reshape))]


def _drop_buffer(graph, buffer: int) -> None:
    """Empties ``buffer`` unless another tensor still reads it."""
    readers = sum(t.buffer == buffer for sg in graph.subgraphs for t in sg.tensors)
    if buffer and readers == 1:
        graph.buffers[buffer].data = None


def _tensor_type(lib, storage: str) -> int:
    names = {"float16": "FLOAT16", "int8": "INT8", "int4": "INT4", "int2": "INT2"}
    return getattr(lib.schema.TensorType, names[storage])


def _payload(q: np.ndarray, storage: str) -> bytes:
    """The bytes a tensor of ``storage`` holds for ``q``."""
    if storage in ("float32", "float16"):
        return q.astype("<f4" if storage == "float32" else "<f2").tobytes()
    return _packed(q, _BITS[storage])


def _quantization(lib, scale: np.ndarray | None, axis: int):
    """Per-channel symmetric parameters (zero points 0) along ``axis``; None for float16."""
    if scale is None:
        return None
    params = lib.schema.QuantizationParametersT()
    params.scale = [float(s) for s in scale]
    params.zeroPoint = [0] * scale.size
    params.quantizedDimension = axis
    return params


def _opcode(lib, graph, builtin: int, version: int) -> int:
    """Index of ``builtin``'s operator code, added (at ``version``) when the graph has none."""
    for index, code in enumerate(graph.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            code.version = max(code.version, version)
            return index
    code = lib.schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), \
        version
    graph.operatorCodes.append(code)
    return len(graph.operatorCodes) - 1


def _add_tensor(lib, graph, name: str, shape, dtype: int, data: bytes | None = None,
                quantization=None) -> int:
    """Appends a tensor (and its buffer when ``data`` is given); its index. The sparse forms'
    intermediates and small int32 constants are unnamed (``""``): names cost download bytes,
    and the tensors that hold a kernel's data are named ``zylax/<params path>/...``."""
    tensor = lib.schema.TensorT()
    tensor.name, tensor.shape, tensor.type = name, list(shape), dtype
    tensor.quantization = quantization
    if data is not None:
        buffer = lib.schema.BufferT()
        buffer.data = np.frombuffer(data, np.uint8)
        graph.buffers.append(buffer)
        tensor.buffer = len(graph.buffers) - 1
    graph.subgraphs[0].tensors.append(tensor)
    return len(graph.subgraphs[0].tensors) - 1


def _operator(lib, opcode: int, inputs: list[int], outputs: list[int], options=None):
    op = lib.schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = opcode, list(inputs), list(outputs)
    if options is not None:
        op.builtinOptionsType, op.builtinOptions = options
    return op


def _serialize(graph) -> bytes:
    """The flatbuffer bytes, every buffer 16-byte aligned as the converter writes them."""
    import flatbuffers  # the litert extra's; import zylax.export stays light without it

    class Aligned(flatbuffers.Builder):
        def CreateNumpyVector(self, x):  # noqa: N802 - flatbuffers' name
            if x.dtype != np.uint8:
                return super().CreateNumpyVector(x)
            self.StartVector(1, x.size, 16)
            self.head -= x.size
            self.Bytes[self.head:self.head + x.size] = x.tobytes()
            self.vectorNumElems = x.size
            return self.EndVector()

    builder = Aligned(1 << 16)
    builder.Finish(graph.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


# -- the check ------------------------------------------------------------------------------

def _interpreter(lib, tflite: bytes):
    """The default interpreter (XNNPACK included) with ``tflite`` loaded and allocated; a
    file it refuses is a one-line ``RuntimeError``."""
    try:
        with _quiet_native_stderr():
            interpreter = lib.Interpreter(model_content=tflite)
            interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as err:
        raise RuntimeError(f"the exported model does not load in LiteRT: "
                           f"{str(err).splitlines()[0][:300]}") from None
    return interpreter


def _max_output_diff(lib, tflite: bytes, reference, sample: np.ndarray) -> float:
    """Max ``|interpreter - JAX|`` over every output on ``sample``; loads in the default runtime."""
    interpreter = _interpreter(lib, tflite)
    try:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], sample)
        interpreter.invoke()
    except (RuntimeError, ValueError) as err:
        raise RuntimeError(f"the exported model does not run in LiteRT: "
                           f"{str(err).splitlines()[0][:300]}") from None
    ours = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
    theirs = [np.asarray(x) for x in jax.tree.leaves(reference(sample))]
    return max(float(np.max(np.abs(a.astype(np.float64) - b), initial=0.0))
               for a, b in zip(ours, theirs, strict=True))
