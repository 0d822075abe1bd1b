"""Han-style compression report: per-layer rows, stage totals, table, Markdown, JSON, plots.

Per layer (as Han's Tables 2-4): weights, % kept, weight bits, index bits, the
bytes of the weight-index and gap streams before and after Huffman coding,
and the layer's compression ratio. Stage totals (Table 7): dense fp32,
pruned (P: fp32 weights + relative indices), +quantized (P+Q: ``bits`` per
weight + codebook), +Huffman (P+Q+H: the coded streams), and the file.
Rows are computed from a file's header alone, so ``zylax inspect`` shows them.
Each leaf counts in the form it is stored in: a pruned leaf kept dense (raw,
or shared with dense indices, when that is smaller) costs its dense bytes at
the P stage, and its exact zeros still show in "kept %".
"""

from __future__ import annotations

import json
import os

import numpy as np

from zylax import codecs
from zylax.archive import write_atomic
from zylax.transforms import tree as ztree

def layer_rows(header: dict) -> list[dict]:
    """One row per stored leaf, computed from a ``.zyl`` header by each leaf's codec;
    ``stored_as`` is the codec's name, ``"shared/ans"`` for the ``ans`` form (its mask and
    indices are one stream, counted under the index columns, its histogram under the weight
    ones)."""
    rows = []
    for entry in header["leaves"]:
        row = codecs.by_method(entry["method"]).report_row(entry)
        collection = entry["collection"]
        row["name"] = entry["name"] if collection == "params" else f"{collection}/{entry['name']}"
        row["method"] = entry["method"]
        row["stored_as"] = entry["method"] + ("/ans" if entry.get("form") == "ans" else "")
        row["coded_bytes"] = (row["codebook_bytes"] + row["weights_huffman_bytes"]
                              + row["index_huffman_bytes"])
        row["kept_percent"] = 100.0 * row["kept"] / max(row["weights"], 1)
        row["ratio"] = row["dense_bytes"] / max(row["coded_bytes"], 1)
        rows.append(row)
    return rows


def stage_totals(rows: list[dict], file_bytes: int) -> dict:
    """Bytes, % of dense and rate for the dense, P, P+Q, P+Q+H stages and the file."""
    dense = sum(r["dense_bytes"] for r in rows)
    stages = {"dense": dense,
              "P": sum(r["pruned_bytes"] for r in rows),
              "P+Q": sum(r["quantized_bytes"] for r in rows),
              "P+Q+H": sum(r["coded_bytes"] for r in rows),
              "file": file_bytes}
    return {name: {"bytes": b, "percent": 100.0 * b / max(dense, 1), "ratio": dense / max(b, 1)}
            for name, b in stages.items()}


def build(header: dict, *, file_bytes: int, accuracies: dict, seconds: dict | None = None,
          decoded_exactly: bool | None = None, reference: dict | None = None) -> dict:
    """The report dict: sizes, accuracies, per-layer rows and stage totals.

    ``accuracies`` maps "dense" and "compressed" (the file read back) to the
    task's metric (either may be missing; ``compress.run`` adds the scores
    after each stage as ``stage_scores``); ``reference`` maps stage names to published figures
    (e.g. Han's "P+Q+H") shown beside ours.
    """
    rows = layer_rows(header)
    stages = stage_totals(rows, file_bytes)
    meta = header.get("metadata", {})
    return {"net": meta.get("net"), "data": meta.get("data"),
            "dense_bytes": stages["dense"]["bytes"], "file_bytes": file_bytes,
            "ratio": stages["dense"]["bytes"] / max(file_bytes, 1),
            "dense_accuracy": accuracies.get("dense"),
            "compressed_accuracy": accuracies.get("compressed"),
            "decoded_exactly": decoded_exactly, "seconds": seconds or {},
            "stages": stages, "reference": dict(reference or {}), "layers": rows}


_COLUMNS = [("layer", "name", "{}"), ("method", "stored_as", "{}"),
            ("weights", "weights", "{:,}"),
            ("kept %", "kept_percent", "{:.1f}"), ("w bits", "weight_bits", "{}"),
            ("idx bits", "index_bits", "{}"), ("w raw B", "weights_raw_bytes", "{:,}"),
            ("w huff B", "weights_huffman_bytes", "{:,}"), ("idx raw B", "index_raw_bytes", "{:,}"),
            ("idx huff B", "index_huffman_bytes", "{:,}"), ("total B", "coded_bytes", "{:,}"),
            ("ratio", "ratio", "{:.1f}x")]


def _cells(rows):
    return [[fmt.format(r[key]) for _, key, fmt in _COLUMNS] for r in rows]


def format_table(report: dict) -> str:
    """A plain-text table of the layers, the stages and the accuracies."""
    header = [title for title, _, _ in _COLUMNS]
    cells = _cells(report["layers"])
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    line = lambda values: "  ".join(v.rjust(w) for v, w in zip(values, widths))  # noqa: E731
    out = [line(header), line(["-" * w for w in widths]), *(line(c) for c in cells), ""]
    reference = report.get("reference", {})
    for name, stage in report["stages"].items():
        ref = f"   paper: {reference[name]}" if name in reference else ""
        out.append(f"{name:>6s}: {stage['bytes']:>10,} B  {stage['percent']:6.2f}%  "
                   f"{stage['ratio']:6.1f}x{ref}")
    out.append("")
    out.extend(f"{label}: {100 * value:.2f}%" for label, value in _scores(report))
    out.append(f"file: {report['file_bytes']:,} bytes, {report['ratio']:.1f}x smaller than "
               f"{report['dense_bytes']:,} bytes of uncompressed variables")
    return "\n".join(out)


def _scores(report: dict) -> list[tuple[str, float]]:
    """``(label, value)`` of the dense model, each retrained stage and the file read back,
    labelled with ``report["metric"]`` ("dense accuracy", "after prune 1/3 accuracy",
    "compressed (the file) mIoU")."""
    metric = report.get("metric", "accuracy")
    rows = []
    if report.get("dense_accuracy") is not None:
        rows.append((f"dense {metric}", report["dense_accuracy"]))
    rows += [(f"after {row['stage']} {metric}", row["accuracy"])
             for row in report.get("stage_scores", [])]
    if report.get("compressed_accuracy") is not None:
        rows.append((f"compressed (the file) {metric}", report["compressed_accuracy"]))
    return rows


def to_markdown(report: dict) -> str:
    """The report as Markdown tables."""
    header = [title for title, _, _ in _COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c) + " |" for c in _cells(report["layers"])]
    lines += ["", "| stage | bytes | % of dense | rate | paper |", "|---|---|---|---|---|"]
    reference = report.get("reference", {})
    for name, s in report["stages"].items():
        lines.append(f"| {name} | {s['bytes']:,} | {s['percent']:.2f}% | {s['ratio']:.1f}x | "
                     f"{reference.get(name, '')} |")
    lines.append("")
    lines.extend(f"- {label}: {100 * value:.2f}%" for label, value in _scores(report))
    if "export" in report:
        shipped = report["export"]
        lines.append(f"- LiteRT ({shipped['tflite_bytes']:,} B .tflite, "
                     f"{shipped['download_bytes']:,} B download after gzip -9, "
                     f"{shipped['download_bytes'] / report['file_bytes']:.2f}x the file): "
                     f"{shipped['metric']} {100 * shipped['litert'][shipped['metric']]:.2f}% "
                     f"on {shipped['test_examples']:,} test images in the interpreter")
    return "\n".join(lines) + "\n"


def write(report: dict, json_path: str) -> list[str]:
    """Writes ``json_path`` and the Markdown beside it (``.md``), each atomically.

    Returns the two paths.
    """
    write_atomic(json_path, json.dumps(report, indent=1, sort_keys=True).encode())
    md_path = os.path.splitext(json_path)[0] + ".md"
    write_atomic(md_path, to_markdown(report).encode())
    return [json_path, md_path]


def plot_weights(snapshots: dict, layer: str):
    """Han's Figure 4/5 style: one layer's weights after each stage; returns the figure.

    ``snapshots`` maps stage names (``"dense"``, then each stage of
    ``compress.run``: ``"prune"``, ``"share"``, ...) to params trees. Each
    panel shows the layer's non-zero weights: a histogram, or one bar per
    value when the stage left at most 256 of them (shared, ternary, binary).
    Jupyter shows the figure inline; ``fig.savefig(path)`` writes it.
    """
    from matplotlib.figure import Figure  # plotting only when a figure is drawn


    fig = Figure(figsize=(4 * len(snapshots), 3), layout="tight")
    axes = np.atleast_1d(fig.subplots(1, len(snapshots)))
    for ax, (stage, params) in zip(axes, snapshots.items()):
        weights = np.asarray(ztree.named_leaves(params)[layer], np.float32).ravel()
        kept = weights[weights != 0]
        values, counts = np.unique(kept, return_counts=True)
        if values.size <= 256:
            ax.bar(values, counts, width=(np.ptp(values) or 1) / 200, color="tab:red")
            shown = f"{values.size} values"
        else:
            ax.hist(kept, bins=200, color="gray" if stage == "dense" else "tab:blue")
            shown = f"{100 * kept.size / max(weights.size, 1):.1f}% non-zero"
        ax.set_title(f"{layer}: {stage} ({shown})" if stage == "dense" else
                     f"after {stage} ({shown})")
        ax.set_xlabel("weight")
    axes[0].set_ylabel("count")
    return fig


def plot_kept(report: dict):
    """Horizontal bar chart of the kept fraction per compressed layer; returns the figure.

    One bar per layer that is pruned or quantized (has a codebook or scales),
    top to bottom in report order; leaves stored as they are (raw, narrowed or
    constant) are left out. The figure grows with the number of layers and the
    longest name, so every label fits.
    """
    from matplotlib.figure import Figure  # plotting only when a figure is drawn

    rows = [r for r in report["layers"] if r["codebook_bytes"] or r["kept"] < r["weights"]]
    names = [r["name"] for r in rows]
    longest = max((len(n) for n in names), default=0)
    fig = Figure(figsize=(4 + 0.075 * longest, max(2.5, 0.22 * len(rows) + 1)), layout="tight")
    ax = fig.subplots()
    ax.barh(names, [r["kept_percent"] for r in rows], color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlabel("% weights kept")
    ax.set_xlim(0, 100)
    return fig


def plot_pareto(series: dict, metric: str = "accuracy", dense: dict | None = None):
    """File bytes (log scale) against the metric measured from each file, one line per model:
    ``series`` ``{label: [(file bytes, metric), ...]}``, e.g. the files ``zylax compress
    --budget`` wrote at several budgets; the points of a model are joined in byte order, and
    ``dense`` ``{label: metric}`` draws each model's uncompressed score as a dashed line.
    Returns the figure."""
    from matplotlib.figure import Figure  # plotting only when a figure is drawn

    fig = Figure(figsize=(6, 4), layout="tight")
    ax = fig.subplots()
    for label, points in series.items():
        xs, ys = zip(*sorted(points))
        line, = ax.plot(xs, [100 * y for y in ys], "o-", label=label)
        if dense and label in dense:
            ax.axhline(100 * dense[label], color=line.get_color(), linestyle="--",
                       linewidth=1, label=f"{label}, uncompressed")
    ax.set_xscale("log")
    ax.set_xlabel("file bytes (the .zyl written)")
    ax.set_ylabel(f"{metric} from the file (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return fig


def written_paths(json_path: str) -> list[str]:
    """Every file ``write_with_figures`` writes for ``json_path``: the JSON, the Markdown and
    the two figures."""
    stem = os.path.splitext(json_path)[0]
    return [json_path, f"{stem}.md", f"{stem}_weights.png", f"{stem}_kept.png"]


def write_with_figures(result, json_path: str) -> list[str]:
    """``write`` of ``result.report`` (a ``compress.Result``), plus ``<stem>_weights.png``
    (``plot_weights`` of the largest stored params leaf) and ``<stem>_kept.png``
    (``plot_kept``); returns every path written."""

    written = write(result.report, json_path)
    _, _, weights_png, kept_png = written_paths(json_path)
    params = set(ztree.named_leaves(result.snapshots["dense"]))
    largest = max((r for r in result.report["layers"] if r["name"] in params),
                  key=lambda r: r["weights"])["name"]
    for fig, path in ((plot_weights(result.snapshots, largest), weights_png),
                      (plot_kept(result.report), kept_png)):
        fig.savefig(path, dpi=100)
        written.append(path)
    return written
