"""Checks of the ``zylax`` command's arguments, each a ``UsageError`` (exit code 2) before any
data is loaded or any training runs."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile

from zylax import data as zdata
from zylax import compress, export, methods, presets, report
from zylax.nets.layers import mode_kwargs


class UsageError(Exception):
    """A bad command-line argument (exit code 2)."""


@contextlib.contextmanager
def usage(prefix: str = "", kind: type[Exception] = ValueError):
    """A library error of ``kind`` raised inside becomes a ``UsageError`` (``prefix`` first)."""
    try:
        yield
    except kind as err:
        raise UsageError(f"{prefix}{err}") from None


def positive(name: str, value, *, zero_ok: bool = False, limit: int = 1 << 31) -> None:
    if value is not None and not ((0 if zero_ok else 1) <= value <= limit):
        raise UsageError(f"{name} must be {'>= 0' if zero_ok else '>= 1'} and <= {limit}, "
                         f"got {value}")


def check_out_file(path: str, flag: str = "--out") -> None:
    """The output path must be a writable file location: a temp file is tried in its nearest
    existing folder (the missing ones are made when the file is written, so a refused command
    leaves none), every missing name within the file system's length limit; an existing
    path must be a regular file (never a device, FIFO or folder)."""
    if not path or path.endswith(("/", os.sep)) or os.path.isdir(path):
        raise UsageError(f"{flag} {path!r} is a directory or empty; give a file path")
    if os.path.exists(path) and not os.path.isfile(path):
        raise UsageError(f"{flag} {path} exists and is not a regular file (a device, FIFO or "
                         "socket); give a file path")
    target = os.path.abspath(path)
    base = os.path.dirname(target)
    while not os.path.lexists(base):  # the folders still to make are made when it is written
        base = os.path.dirname(base)
    try:
        if not os.path.isdir(base):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        limit = os.pathconf(base, "PC_NAME_MAX")
        if any(len(os.fsencode(part)) > limit
               for part in os.path.relpath(target, base).split(os.sep)):
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
        with tempfile.NamedTemporaryFile(dir=base, prefix=".zylax-probe-"):
            pass
    except OSError as err:
        raise UsageError(f"{flag} {path}: cannot write there ({err.strerror})") from None


def check_not_input(out: str, source: str | None, flag: str = "--out") -> None:
    """An output path that is the input file would replace it: a usage error."""
    if source is not None and os.path.exists(out) and os.path.exists(source) and \
            os.path.samefile(out, source):
        raise UsageError(f"{flag} {out} is the input file; give another path")


def _same_path(a: str, b: str) -> bool:
    """Whether two paths name one file (spelled alike once links are resolved, or linked to
    it)."""
    return os.path.realpath(a) == os.path.realpath(b) or (
        os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b))


def check_learning_rate(value) -> None:
    if value is not None and not 0 < value <= 10:  # NaN fails too
        raise UsageError(f"--learning-rate must be > 0 and <= 10, got {value}")


def check_pad_to(recipe, args) -> None:
    """A recipe that pads to less than ``--data``'s images (e.g. a lent ``--recipe``): a usage
    error, from the dataset's declared image shape, before anything loads."""
    height, width, _ = zdata.get(args.data).image_shape
    if recipe.pad_to is not None and recipe.pad_to < max(height, width):
        source = f"--recipe {args.recipe}" if args.recipe else "the recipe"
        raise UsageError(f"{source} pads images to {recipe.pad_to}x{recipe.pad_to}, but the "
                         f"{args.data} images are {height}x{width}")


def check_chain(chain, model, variables, sample, train_flag: str | None = None) -> None:
    """Settings that fit no layer (a ``--sparsity``/``--bits`` regex matching none), and a
    stage that the earlier ones leave no layer (``svd+svd``): a usage error, before
    training. ``sample``: one model input, to find the execution order ``keep_float``
    names."""
    params = variables["params"]
    inference = mode_kwargs(model, False, train_flag)
    with usage():
        for method in chain:
            method.check(params)
        compress.check_chain([stage.bind(model, variables, sample, **inference)
                              for method in chain for stage in method.stages()], params)


_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000 ** 2, "kib": 1024, "mib": 1024 ** 2}
_BUDGET_SETS = ("method", "sparsity", "bits", "prune_cycles", "retrain_epochs", "gradual_epochs",
                "threshold", "binary_scale", "stochastic", "keep_float",
                "unshared_dtype", "kl_weight", "stage_epochs")
"""The flags of compress that set what ``--budget``/``--max-drop`` choose."""


def byte_count(text: str) -> int:
    """``"20KB"`` -> 20000: a number with an optional unit B, KB, MB (powers of 1000) or KiB,
    MiB (powers of 1024), any case, from 100 bytes (less than a file's framing) to 10^12."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmM]?[iI]?[bB]?)\s*", text or "")
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS or len(match.group(1)) > 15:
        raise UsageError(f"--budget {text!r}: give bytes, e.g. 20000, 20KB or 1.5MiB")
    count = round(float(match.group(1)) * _UNITS[unit])
    if not 100 <= count <= 10 ** 12:
        raise UsageError(f"--budget {text!r}: must lie between 100 bytes (no file is smaller) "
                         "and 10^12 bytes")
    return count


def budget_settings(args) -> None:
    """``--budget``/``--max-drop``: parsed, one of them, and no flag that sets what they choose."""
    if args.budget is not None and args.max_drop is not None:
        raise UsageError("give --budget or --max-drop, not both")
    if args.budget is not None:
        args.budget = byte_count(args.budget)
    if args.max_drop is not None and not 0 <= args.max_drop <= 100:  # NaN fails too
        raise UsageError(f"--max-drop must lie in [0, 100] points, got {args.max_drop}")
    if args.forms is not None and args.budget is None and args.max_drop is None:
        raise UsageError("--forms offers options to --budget or --max-drop; give one")
    if args.budget is not None or args.max_drop is not None:
        given = [flag for flag in _BUDGET_SETS
                 if getattr(args, flag) is not None and getattr(args, flag) is not False]
        if given:
            raise UsageError(f"--budget and --max-drop choose each layer's method and settings; "
                             f"drop {', '.join('--' + g.replace('_', '-') for g in given)}")
        if args.index_bits not in (None, "auto", "ans"):
            raise UsageError("--budget and --max-drop choose each layer's gap width; "
                             "--index-bits may be 'auto' or 'ans' with them")


def compress_settings(args) -> None:
    """Checks compress's own numbers; parses ``--bits``/``--sparsity``, ``--index-bits`` and
    ``--budget``."""
    budget_settings(args)
    positive("--baseline-epochs", args.baseline_epochs)
    positive("--prune-cycles", args.prune_cycles)
    positive("--retrain-epochs", args.retrain_epochs, zero_ok=True)
    positive("--gradual-epochs", args.gradual_epochs, zero_ok=True)
    if args.gradual_epochs:
        for flag in ("prune_cycles", "retrain_epochs"):
            if getattr(args, flag) is not None:
                raise UsageError(f"--gradual-epochs replaces the prune/retrain cycles; drop "
                                 f"--{flag.replace('_', '-')}")
    positive("--finetune-epochs", args.finetune_epochs, zero_ok=True)
    args.stage_epochs = stage_epochs(args.stage_epochs)
    if args.gradual_epochs and "prune" in (args.stage_epochs or {}):
        raise UsageError("--gradual-epochs sets prune's epochs; drop prune from --stage-epochs")
    check_learning_rate(args.learning_rate)
    if args.threshold is not None and not 0 < args.threshold < 1:
        raise UsageError(f"--threshold must lie in (0, 1), got {args.threshold}")
    if args.kl_weight is not None and not 0 <= args.kl_weight <= 1e6:  # NaN fails too
        raise UsageError(f"--kl-weight must lie in [0, 1e6], got {args.kl_weight}")
    with usage():
        args.bits = presets.per_layer(args.bits, int, lambda b: None if 1 <= b <= 16
                                      else "bits must lie in [1, 16]", "--bits")
        args.sparsity = presets.per_layer(args.sparsity, float, lambda s: None if 0 <= s < 1
                                          else "sparsity must lie in [0, 1)", "--sparsity")
    if args.index_bits is not None and args.index_bits not in ("auto", "ans"):
        try:
            args.index_bits = int(args.index_bits)
        except ValueError:
            raise UsageError(f"--index-bits must be an integer, 'auto' or 'ans', got "
                             f"{args.index_bits!r}") from None
        positive("--index-bits", args.index_bits, limit=16)
    check_out_file(args.out)
    check_not_input(args.out, args.baseline_file)
    if args.tflite is not None:
        export.check_extra()
        check_out_file(args.tflite, "--tflite")
        check_not_input(args.tflite, args.baseline_file, "--tflite")
        if _same_path(args.tflite, args.out) or args.report and any(
                _same_path(args.tflite, path) for path in report.written_paths(args.report)):
            raise UsageError(f"--tflite {args.tflite} is a path --out or --report writes; "
                             "give another path")
    if args.report:
        check_out_file(args.report, "--report")
        for path in report.written_paths(args.report):
            if _same_path(path, args.out):
                raise UsageError(f"--report {args.report} writes {path}, the --out file; give "
                                 "another path")
        check_not_input(args.report, args.baseline_file, "--report")


MAX_STAGE_EPOCHS = 10_000


def stage_epochs(entries: list[str] | None) -> dict[str, int] | None:
    """``--stage-epochs``: ``["sparse_vd=100", "share=1"]`` -> ``{"sparse_vd": 100, "share":
    1}``; each name a method, each count a whole number in [0, ``MAX_STAGE_EPOCHS``]."""
    if entries is None:
        return None
    found = {}
    for entry in entries:
        name, sep, count = entry.partition("=")
        if not sep or not re.fullmatch(r"[0-9]{1,6}", count):
            raise UsageError(f"--stage-epochs {entry!r}: give METHOD=N, e.g. sparse_vd=100")
        if name in methods.RECIPES:
            raise UsageError(f"--stage-epochs {entry!r}: {name} is a chain; name its stages "
                             f"({', '.join(methods.RECIPES[name])})")
        if name not in methods.METHODS:
            raise UsageError(f"--stage-epochs {entry!r}: no method {name!r}; known: "
                             f"{', '.join(sorted(methods.METHODS))}")
        if name in found:
            raise UsageError(f"--stage-epochs: {name} given twice")
        found[name] = int(count)
        if found[name] > MAX_STAGE_EPOCHS:
            raise UsageError(f"--stage-epochs {entry!r}: at most {MAX_STAGE_EPOCHS:,} epochs")
    return found


def check_file_args(args) -> None:
    positive("--max-decoded-bytes", args.max_decoded_bytes, limit=1 << 50)
