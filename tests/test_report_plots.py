"""report.plot_kept: one bar per quantized layer, labels that fit, no layout warnings."""

import warnings

import numpy as np

from zylax import report


def _row(name, method, kept, weights):
    return {"name": name, "method": method, "kept": kept, "weights": weights,
            "kept_percent": 100.0 * kept / weights}


def test_plot_kept_draws_quantized_layers_only_and_fits_long_names(tmp_path):
    long_name = "predictor2/classifier_depthwise/kernel_with_a_long_user_name"
    rows = ([_row(f"block{i}/project/kernel", "shared", 50 + i, 100) for i in range(40)]
            + [_row(long_name, "shared", 100, 100), _row("head/bias", "raw", 10, 10),
               _row("bn/scale", "cast", 10, 10), _row("bn/mean", "constant", 10, 10)])
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
