"""experiments.resolution_ceiling: the label-fraction stand-in on a coarse logit grid."""

import numpy as np
import pytest

from experiments import resolution_ceiling


def test_straight_cell_aligned_edges_come_back_exactly_and_finer_shapes_do_not():
    labels = np.zeros((1, 16, 16), np.int32)
    labels[0, :, 0:8] = 1  # 4-pixel cells: stripes of whole cells, no corners to round
    labels[0, :, 12:16] = 2
    np.testing.assert_array_equal(
        resolution_ceiling.cell_fraction_predictions(labels, 3, 4), labels)
    np.testing.assert_allclose(resolution_ceiling.ceiling_iou(labels, 3, 4), 1.0)
    labels[0, 5:8, 9:12] = 1  # a 3x3 square inside one cell is not kept
    assert not np.array_equal(resolution_ceiling.cell_fraction_predictions(labels, 3, 4), labels)
    assert resolution_ceiling.ceiling_iou(labels, 3, 4)[1] < 1.0


def test_a_one_pixel_line_is_lost_on_a_coarse_grid_and_kept_on_the_pixel_grid():
    labels = np.zeros((1, 16, 16), np.int32)
    labels[0, :, 7] = 1  # a vertical line one pixel wide
    coarse = resolution_ceiling.ceiling_iou(labels, 2, 4)
    assert coarse[1] == 0.0 and coarse[0] == pytest.approx(240 / 256)
    np.testing.assert_allclose(resolution_ceiling.ceiling_iou(labels, 2, 16), 1.0)


def test_a_grid_that_does_not_divide_the_image_is_refused():
    with pytest.raises(ValueError, match="cells=5 does not divide the 16-pixel side"):
        resolution_ceiling.cell_fraction_predictions(np.zeros((1, 16, 16), np.int32), 2, 5)
