"""The argument parser of the ``zylax`` command (``build_parser``)."""

from __future__ import annotations

import argparse

from zylax import export, tasks
from zylax import data as zdata
from zylax.cli import commands
from zylax.nets import layers


class _Parser(argparse.ArgumentParser):
    """``argparse`` whose errors are one line on stderr, as every other failure is."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_augment(parser: argparse.ArgumentParser, what: str) -> None:
    """``--augment/--no-augment``: overrides the recipe's augmentation of ``what``."""
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help=f"random flips (and, for images, shifts) of {what}; scenes are "
                             "mirrored with their boxes and masks (default: the net's recipe)")


def _add_inference_views(parser: argparse.ArgumentParser) -> None:
    """``--scales S ...`` and ``--flip`` (``tasks.with_views``)."""
    parser.add_argument("--scales", type=float, nargs="+", default=None, metavar="S",
                        help="segmentation: average the class probabilities of the inputs "
                             "resized by each S in [0.1, 8] (DeepLabV3's multi-scale "
                             "inference, e.g. 0.5 0.75 1 1.25 1.5 1.75)")
    parser.add_argument("--flip", action="store_true",
                        help="segmentation: also average over the left-right mirrored inputs")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--net", default=None, help="a registered net (default lenet300)")
    parser.add_argument("--model", default=None,
                        help="your own model: package.module:factory, a Module class or function "
                             "taking num_classes (or nothing)")
    parser.add_argument("--recipe", default=None, metavar="NET",
                        help="train with this registered net's recipe (optimizer, schedule, "
                             "epochs, batch size, padding, augmentation; RESULTS.md's measured "
                             "ones) instead of the net's own; --epochs (train), "
                             "--baseline-epochs (compress), --batch-size and --augment still "
                             "override it; for --model the default is AdamW 1e-3 for 10 "
                             "epochs")
    parser.add_argument("--data", default=None,
                        help=f"one of {zdata.names()} (default {zdata.names()[0]})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--max-examples", type=int, default=None, help="train on a prefix")
    parser.add_argument("--max-test-examples", type=int, default=None,
                        help="score on a prefix of the test split")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    parser.add_argument("--task", default=None,
                        choices=tuple(tasks.TASKS),
                        help="what the model does (default: the net's; for --model, detection "
                             "when it has anchors(), else classification)")


def _add_file(parser: argparse.ArgumentParser, *, runs_model: bool = True) -> None:
    parser.add_argument("file")
    parser.add_argument("--max-decoded-bytes", type=int, default=None,
                        help="refuse files that decode to more (default: see zylax.archive)")
    if runs_model:
        parser.add_argument("--model", default=None, metavar="PKG.MOD:FACTORY",
                            help="the model the file was made from (your own code: a file "
                                 "never names code that zylax runs); needed for files made "
                                 "from a model that is not a registered net")


DESCRIPTION = "The zylax command: train, compress, sensitivity, evaluate, inspect, export."


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``zylax`` command."""
    parser = _Parser(prog="zylax", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a baseline net")
    _add_common(p)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    p.add_argument("--learning-rate", type=float, default=None, metavar="LR",
                   help="peak learning rate of the recipe's warmup and cosine decay (default: "
                        "the recipe's), e.g. lower to fine-tune an --init-from model")
    p.add_argument("--out", required=True, help="output folder (checkpoints go inside)")
    p.add_argument("--init-from", default=None, metavar="FILE",
                   help="start from the layers of this .zyl file that match the net's by "
                        "path and shape (e.g. DeepLabV3 from a trained SSDLite's MobileNet V2 "
                        "trunk); the other layers start fresh")
    _add_augment(p, "the training data")
    p.set_defaults(func=commands.cmd_train)

    p = sub.add_parser("compress", help="compress a trained model (Deep Compression, TTQ, BNN, "
                                        "SEP-Net patterns, or a chain) into a verified file")
    _add_common(p)
    p.add_argument("--method", default=None, metavar="SPEC",
                   help="the chain of methods: deep (prune+share, the default), ttq, bnn, "
                        "sws (soft_share+share), svd (sparse_vd+share), any method (prune, "
                        "share, soft_share, sparse_vd, ternary, binary, pattern, cast) or "
                        "a chain of them joined by + (retrained stage after stage: prune+ttq) "
                        "or & (one stage, disjoint layers: pattern&share); a net's preset for "
                        "that chain applies when it has one")
    p.add_argument("--out", default="model.zyl",
                   help="compressed model file (default: model.zyl; its folder is created)")
    p.add_argument("--report", default=None, help="report JSON (Markdown and PNGs beside it)")
    p.add_argument("--tflite", default=None, metavar="FILE",
                   help="also export the written file for phones (LiteRT, weights auto, "
                        "batch 1; needs the litert extra) and score it in the interpreter on "
                        "the same test images; prints its download bytes (gzip -9)")
    p.add_argument("--budget", default=None, metavar="BYTES",
                   help="the most bytes of the written file, e.g. 20KB (1000s) or 20KiB: each "
                        "layer's sparsity and shared bits (or float) are chosen from its "
                        "measured sensitivity for the least predicted loss that fits "
                        "(zylax.budget); replaces --method and its settings")
    p.add_argument("--forms", nargs="+", default=None, choices=("ternary", "binary"),
                   help="with --budget or --max-drop: also offer each kernel stored whole as "
                        "ternary (TTQ) or binary (BNN, a scale per channel); off by default "
                        "(their loss before retraining is nearer what retraining leaves than "
                        "pruning's, so the plan can prefer them where pruning ends better)")
    p.add_argument("--max-drop", type=float, default=None, metavar="POINTS",
                   help="instead of --budget: the smallest file whose predicted loss (before "
                        "retraining) is at most POINTS of the metric")
    _add_augment(p, "the training data (the baseline's, and every stage's retraining)")
    p.add_argument("--from", dest="baseline_file", default=None, metavar="FILE",
                   help="compress this trained .zyl file (zylax train's model.zyl) instead of "
                        "training a baseline; the data and task come from the file, the model "
                        "too when it is a registered net (else name it with --model)")
    p.add_argument("--workdir", default=None, help="where the baseline checkpoint is kept for "
                   "reuse (default runs/NAME-DATA-seedSEED)")
    p.add_argument("--baseline-epochs", type=int, default=None,
                   help="epochs of the baseline trained before compressing (default: the "
                        "recipe's)")
    p.add_argument("--learning-rate", type=float, default=None, metavar="LR",
                   help="retraining peak rate (Adam, cosine over each stage; default: the "
                        "net's preset, else chosen by a short sweep on held-out training data)")
    p.add_argument("--train-flag", default=None, metavar="NAME",
                   help="your model's training argument when it is none of "
                        f"{layers.KNOWN_FLAGS} (prefix ! when it is True in inference)")
    p.add_argument("--prune-cycles", type=int, default=None, help="prune: Han's prune/retrain "
                   "cycles")
    p.add_argument("--retrain-epochs", type=int, default=None,
                   help="prune: epochs of retraining per cycle")
    p.add_argument("--gradual-epochs", type=int, default=None,
                   help="prune gradually in one run of this many epochs (Zhu & Gupta) instead "
                        "of --prune-cycles x --retrain-epochs; 0 keeps the cycles")
    p.add_argument("--finetune-epochs", type=int, default=None,
                   help="epochs of retraining of every stage but pruning (share, sparse_vd, "
                        "ternary, binary, pattern); with --budget/--max-drop, of every stage (default 1)")
    p.add_argument("--stage-epochs", nargs="+", action="extend", default=None,
                   metavar="METHOD=N",
                   help="epochs of each named method's stages, over --finetune-epochs and "
                        "--retrain-epochs (prune: per cycle), e.g. --method "
                        "sparse_vd+prune+share --stage-epochs sparse_vd=100 prune=10 share=1")
    p.add_argument("--sparsity", nargs="+", default=None, metavar="S|REGEX=S",
                   help="prune: final sparsity of every kernel, and/or of the kernels whose "
                        "whole leaf path matches REGEX (first match wins), e.g. --sparsity 0.5 "
                        "'.*depthwise/kernel=0'; patterns alone go before the net's preset "
                        "(default: the preset, else 0.5)")
    p.add_argument("--bits", nargs="+", default=None, metavar="B|REGEX=B",
                   help="share: weight bits of every layer, and/or of the layers matching "
                        "REGEX, e.g. --bits 3 '.*depthwise/kernel=5' (default: the net's "
                        "preset, else Han's 8 conv / 5 dense)")
    p.add_argument("--index-bits", default=None,
                   help="share: gap bits for every layer, 'auto' (the smallest file of "
                        "Huffman-coded gaps; the default) or 'ans' (the smallest of those and "
                        "ANS-coded masks; the default of --budget and --max-drop)")
    p.add_argument("--kl-weight", type=float, default=None, metavar="W",
                   help="sparse_vd: weight of the KL term (Molchanov eq. 3; default 1; more "
                        "prunes more)")
    p.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="ternary: TTQ's threshold factor t (default 0.05)")
    p.add_argument("--binary-scale", default=None, choices=("channel", "none"),
                   help="binary: a learned scale per output channel (default) or plain +-1")
    p.add_argument("--stochastic", action="store_true",
                   help="binary: stochastic signs while training (BNN eq. 2)")
    p.add_argument("--keep-float", nargs="+", default=None, choices=("first", "last", "none"),
                   help="ternary, binary: the layers (in execution order) left float "
                        "(default: first last)")
    p.add_argument("--unshared-dtype", default=None, choices=("raw", "float16", "bfloat16"),
                   help="how to store what the methods leave float (biases, BatchNorm vectors "
                        "and statistics, float layers): as they are, or at 2 bytes a value "
                        "(default: the net's preset, raw for most nets)")
    p.add_argument("--fold-batch-norm", action=argparse.BooleanOptionalAction, default=None,
                   help="fold BatchNorm statistics into scale and bias before storing (half "
                        "the BatchNorm bytes; the file is then for inference only; default: "
                        "the net's preset, off for most nets)")
    p.set_defaults(func=commands.cmd_compress)

    p = sub.add_parser("sensitivity", help="per-layer accuracy against pruning and against "
                                           "shared-weight bits (Han's Figure 6)")
    _add_common(p)
    p.add_argument("--from", dest="baseline_file", default=None, metavar="FILE",
                   help="the trained .zyl file to analyse (else the baseline of --net/--model "
                        "is trained, or reused from --workdir)")
    p.add_argument("--workdir", default=None, help="where the baseline checkpoint is kept")
    p.add_argument("--baseline-epochs", type=int, default=None,
                   help="epochs of the baseline (default: the recipe's)")
    p.add_argument("--train-flag", default=None, metavar="NAME",
                   help="your model's training argument when it is none of "
                        f"{layers.KNOWN_FLAGS} (prefix ! when it is True in inference)")
    p.add_argument("--include", default=".*kernel", metavar="REGEX",
                   help="the leaves analysed (a regex on the leaf path; default every kernel)")
    p.add_argument("--out", default="sensitivity.json",
                   help="the JSON written (Markdown and PNG beside it)")
    p.set_defaults(func=commands.cmd_sensitivity)

    p = sub.add_parser("evaluate", help="test accuracy (AP50/mAP, mIoU) of a .zyl file")
    _add_file(p)
    p.add_argument("--data", default=None, help="dataset (default: the one in the file)")
    p.add_argument("--max-examples", "--max-test-examples", dest="max_examples", type=int,
                   default=None, help="score the first N test examples only (the second "
                   "spelling is train's and compress's)")
    _add_inference_views(p)
    p.set_defaults(func=commands.cmd_evaluate)

    p = sub.add_parser("inspect", help="per-layer table of a .zyl file")
    _add_file(p, runs_model=False)
    p.set_defaults(func=commands.cmd_inspect)

    p = sub.add_parser("export", help="a LiteRT .tflite file of a .zyl file (needs zylax[litert])")
    _add_file(p)
    p.add_argument("--out", required=True, help="the .tflite file to write")
    p.add_argument("--weights", default="auto", choices=export.WEIGHTS,
                   help="how kernels are stored (default auto: as each codec declares: exact "
                        "2-bit for binary, pattern and ternary, int8 for shared, float32 for "
                        "raw, float16 for the file's float16 leaves)")
    p.add_argument("--dense", action="store_true",
                   help="store every kernel dense (default: a pruned kernel whose non-zero "
                        "values and gaps, or palette of few values coded with the gaps, gzip "
                        "smaller is stored so and written into the dense kernel at each "
                        "invoke; dense keeps XNNPACK's faster constant-weight path)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the model input")
    p.set_defaults(func=commands.cmd_export)
    parser.commands = sub.choices
    return parser
