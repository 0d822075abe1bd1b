"""The trained models kept in ``experiments/models`` still load and segment or detect test scenes.

RESULTS.md scores these files and later runs start from them (``--init-from``,
``compress --from``), so a change to the archive format or to the nets that
stops them loading, or makes them decode to a different model, fails here.
"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zylax import modelfile, nets, tasks

MODELS = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "models"
SCENES = 200


def _test_scenes(f: modelfile.ModelFile):
    return jax.tree.map(lambda a: a[:SCENES], modelfile.scoring_data(f)[1])


def _miou(path: pathlib.Path) -> float:
    f = modelfile.load_model_file(path)
    images, labels = _test_scenes(f)
    return f.task.evaluate(f.model, f.variables, images, labels,
                           preprocess=f.preprocess)["mIoU"]


@pytest.fixture(scope="module")
def dense_miou() -> float:
    return _miou(MODELS / "deeplab_ct7.zyl")


@pytest.mark.parametrize("name", ["deeplab_ct4.zyl", "deeplab_ct12.zyl",
                                  "deeplab120_ft2.zyl", "deeplab120_dc.zyl"])
def test_the_kept_deeplabs_segment_test_scenes_far_above_all_background(name):
    # every pixel called background scores about 1/11 (0.077 in RESULTS.md)
    assert _miou(MODELS / name) > 0.5


def test_the_kept_7_epoch_deeplab_segments_test_scenes_far_above_all_background(dense_miou):
    assert dense_miou > 0.5


def test_the_kept_compressed_deeplab_decodes_to_a_model_within_its_measured_loss(dense_miou):
    # RESULTS.md: 8.5x at -1.45 points on all 10,000 test scenes; a wrongly decoded
    # codebook or folded BatchNorm would lose far more on these scenes
    path = MODELS / "deeplab_ct7_dc.zyl"
    assert path.stat().st_size * 8 < (MODELS / "deeplab_ct7.zyl").stat().st_size
    assert _miou(path) > dense_miou - 0.04


def test_the_kept_compressed_120x120_deeplab_is_within_its_measured_loss_of_its_dense_model():
    # RESULTS.md: 8.5x at -1.32 points on all 10,000 test scenes
    dense, compressed = MODELS / "deeplab120_ft2.zyl", MODELS / "deeplab120_dc.zyl"
    assert compressed.stat().st_size * 8 < dense.stat().st_size
    assert _miou(compressed) > _miou(dense) - 0.04


def test_the_kept_120x120_deeplab_is_the_96x96_net_rescaled():
    # deeplabv3_mobilenet_v2_120 = Rescaled(DeepLabV3Small(11), 1.25): the file's variables
    # are the plain net's, so Segmentation(scales=(1.25,)) of the plain net gives its logits
    f = modelfile.load_model_file(MODELS / "deeplab120_ft2.zyl")
    assert isinstance(f.model, nets.Rescaled)
    x = f.preprocess(jnp.asarray(_test_scenes(f)[0][:16]))
    plain = nets.DeepLabV3Small(num_classes=11)
    outside = tasks.multi_scale_log_probabilities(lambda z: plain.apply(f.variables, z), x,
                                                  (1.25,))
    inside = jax.nn.softmax(f.model.apply(f.variables, x))
    np.testing.assert_allclose(inside, jnp.exp(outside), atol=1e-5)  # probabilities


def test_the_kept_4_epoch_ssdlite_detects_test_scenes():
    # RESULTS.md: AP50 0.824 on all 10,000 test scenes (trunk pretrained, 4 epochs at batch 32);
    # the 3-epoch model from scratch scored 0.703, a wrongly decoded file or net far less
    f = modelfile.load_model_file(MODELS / "ssdlite_ct4.zyl")
    images, labels = _test_scenes(f)
    assert f.task.name == "detection"
    scores = f.task.evaluate(f.model, f.variables, images, labels, preprocess=f.preprocess)
    assert scores["AP50"] > 0.75
