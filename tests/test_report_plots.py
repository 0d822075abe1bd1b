"""report.plot_kept: one bar per pruned or quantized layer, labels that fit, no warnings."""

import warnings

import numpy as np

from zylax import report


def _row(name, kept, weights, codebook_bytes=0):
    return {"name": name, "kept": kept, "weights": weights, "codebook_bytes": codebook_bytes,
            "kept_percent": 100.0 * kept / weights}


def test_plot_kept_draws_pruned_or_quantized_layers_and_fits_long_names(tmp_path):
    long_name = "predictor2/classifier_depthwise/kernel_with_a_long_user_name"
    rows = ([_row(f"block{i}/project/kernel", 50 + i, 100, codebook_bytes=64) for i in range(39)]
            + [_row("pruned_but_raw/kernel", 30, 100),  # pruned, stored raw: shown
               _row(long_name, 100, 100, codebook_bytes=64),  # unpruned, shared: shown
               _row("head/bias", 10, 10), _row("bn/scale", 10, 10)])  # stored as is: left out
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = report.plot_kept({"layers": rows})
        fig.savefig(tmp_path / "kept.png", dpi=40)
    ax = fig.axes[0]
    widths = [bar.get_width() for bar in ax.patches]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [r["name"] for r in rows[:41]]
    np.testing.assert_allclose(widths, [r["kept_percent"] for r in rows[:41]])
    assert (tmp_path / "kept.png").stat().st_size > 0
