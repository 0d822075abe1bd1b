"""A compression report summed per kind of layer, as RESULTS.md's Han-style tables.

Run:
  python -m experiments.layer_kinds runs/scenes/ssdlite_dc2/report.json

Reads the JSON report ``zylax compress --report`` writes and prints one
Markdown row per kind: shared depthwise kernels, the other shared kernels
(in a MobileNet: 1x1, stem, prediction), and the rest by how it is stored
(BatchNorm scales, biases and running statistics; a kernel too small to
gain from sharing is stored raw), then the two largest leaves. Columns:
leaves, weights, kept, float32 bytes, bytes in the file, ratio.
"""

from __future__ import annotations

import argparse
import json


def kind(row: dict) -> str:
    """The kind a report row belongs to: shared depthwise, shared others, or its storage."""
    if row["method"] == "shared":
        return "shared, depthwise" if "depthwise" in row["name"] else "shared, other kernels"
    return f"{row['method']}, {row['weight_bits']}-bit"


def _line(label: str, rows: list[dict]) -> str:
    dense = sum(r["dense_bytes"] for r in rows)
    coded = sum(r["coded_bytes"] for r in rows)
    kept = sum(r["kept"] for r in rows) / max(1, sum(r["weights"] for r in rows))
    return (f"| {label} | {len(rows)} | {sum(r['weights'] for r in rows):,} | {100 * kept:.0f}% "
            f"| {dense:,} | {coded:,} | {f'{dense / coded:.1f}x' if coded else 'header only'} |")


def table(report: dict) -> str:
    """The Markdown table of ``report``'s layers per kind, then its two largest leaves."""
    groups: dict[str, list] = {}
    for row in report["layers"]:
        groups.setdefault(kind(row), []).append(row)
    lines = ["| kind | leaves | weights | kept | float32 bytes | in the file | ratio |",
             "|---|---|---|---|---|---|---|"]
    order = sorted(groups, key=lambda label: (not label.startswith("shared"),
                                              "depthwise" in label, label))
    lines += [_line(label, groups[label]) for label in order]
    largest = sorted(report["layers"], key=lambda r: -r["dense_bytes"])[:2]
    lines += [_line(f"`{r['name']}`", [r]) for r in largest]
    total = sum(r["coded_bytes"] for r in report["layers"])
    lines.append(f"\nleaves {total:,} B + header and framing "
                 f"{report['file_bytes'] - total:,} B = file {report['file_bytes']:,} B "
                 f"({report['ratio']:.2f}x)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", help="a report.json of zylax compress")
    path = parser.parse_args().report
    try:
        with open(path) as f:
            report = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        parser.error(f"{path}: not a report JSON ({type(err).__name__})")
    print(table(report))


if __name__ == "__main__":
    main()
