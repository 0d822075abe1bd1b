"""Wall time of ``zylax compress`` for LeNet-300-100, per stage, from a fresh work folder.

Run: python -m benchmarks.end_to_end
Stages: train (dense baseline), prune_retrain, quantize_finetune, encode,
decode_evaluate. The same process also times one baseline epoch as the unit.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from benchmarks.common import print_table
from zylax import compress


def run(net: str = "lenet300", **overrides) -> dict:
    config = compress.config_for(net, **overrides)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = compress.run(config, f"{tmp}/model.zyl", workdir=f"{tmp}/work", progress=False)
        total = time.perf_counter() - t0
    seconds = result.report["seconds"]
    rows = [[stage, f"{s:.1f}", f"{100 * s / total:.0f}%"] for stage, s in seconds.items()]
    rows.append(["total (incl. data loading)", f"{total:.1f}", "100%"])
    print_table(f"zylax compress --net {net}: wall time per stage (s)",
                ["stage", "seconds", "share"], rows)
    print(f"ratio {result.report['ratio']:.1f}x, dense {100 * result.report['dense_accuracy']:.2f}%"
          f", compressed {100 * result.report['compressed_accuracy']:.2f}%")
    return {"seconds": seconds, "total": total, "report": result.report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--net", default="lenet300")
    args = parser.parse_args()
    run(args.net)


if __name__ == "__main__":
    main()
