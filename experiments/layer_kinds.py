"""A compression report summed per kind of layer, as RESULTS.md's Han-style tables.

Run:
  python -m experiments.layer_kinds runs/scenes/ssdlite_dc2/report.json

Reads the JSON report ``zylax compress --report`` writes and prints one
Markdown row per kind: shared kernels other than depthwise (1x1, stem,
prediction), shared depthwise kernels, and everything stored unshared
(BatchNorm scales, biases and running statistics), then the two largest
leaves. Columns: leaves, weights, float32 bytes, bytes in the file, ratio.
"""

from __future__ import annotations

import argparse
import json


def kind(row: dict) -> str:
    """The kind a report row belongs to."""
    if row["method"] != "shared":
        return f"unshared ({row['method']}, {row['weight_bits']}-bit)"
    return "depthwise kernels" if "depthwise" in row["name"] else "1x1 / stem / prediction kernels"


def _line(label: str, rows: list[dict]) -> str:
    dense = sum(r["dense_bytes"] for r in rows)
    coded = sum(r["coded_bytes"] for r in rows)
    kept = sum(r["kept"] for r in rows) / max(1, sum(r["weights"] for r in rows))
    return (f"| {label} | {len(rows)} | {sum(r['weights'] for r in rows):,} | {100 * kept:.0f}% "
            f"| {dense:,} | {coded:,} | {dense / coded:.1f}x |")


def table(report: dict) -> str:
    """The Markdown table of ``report``'s layers per kind, then its two largest leaves."""
    groups: dict[str, list] = {}
    for row in report["layers"]:
        groups.setdefault(kind(row), []).append(row)
    lines = ["| kind | leaves | weights | kept | float32 bytes | in the file | ratio |",
             "|---|---|---|---|---|---|---|"]
    lines += [_line(label, rows) for label, rows in sorted(groups.items())]
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
    with open(parser.parse_args().report) as f:
        print(table(json.load(f)))


if __name__ == "__main__":
    main()
