"""Detection and segmentation through the library: Deep-compress a user's segmenter on
real scenes, read the file back bit-exactly and score it with mIoU, from Python and from
``zylax evaluate``; score SSDLite's decoded boxes with pycocotools; task errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from zylax import (archive, cli, codecs, compress, data, detection, methods, metrics, modelfile,
                   registry, tasks, train)
from zylax.nets import ssdlite
from zylax.transforms import tree as ztree

CHAIN = [methods.prune(sparsity=0.6), methods.share(bits=4)]


@pytest.fixture(scope="module")
def scenes():
    images, targets = data.load("fashion_mnist_scenes", "test")
    test, train_part = np.arange(32), np.arange(32, 96)
    return ((images[train_part], data.take(targets, train_part)),
            (images[test], data.take(targets, test)))


def test_a_compressed_segmentation_model_round_trips_and_is_scored_by_its_task(
        scenes, tmp_path, monkeypatch, capsys):
    """A user's segmenter (own module, BatchNorm, no train argument), Deep-compressed."""
    (tmp_path / "my_segmenter.py").write_text(USER_SEGMENTER)
    monkeypatch.chdir(tmp_path)
    model = registry.import_factory("my_segmenter:Segmenter")(11)
    (train_images, train_targets), test_data = scenes
    task = tasks.for_model(model, train_images.shape[1:], "segmentation")
    assert task.metric == "mIoU"
    preprocess = data.preprocessing("fashion_mnist_scenes")
    variables = train.init_variables(model, preprocess(train_images[:1]), 0)
    out = tmp_path / "segmenter.zyl"
    result = compress.run(model, variables, (train_images, train_targets), test_data, CHAIN,
                          out=str(out), task=task, progress=False, preprocess=preprocess,
                          retrain=compress.Retrain(learning_rate=1e-3, batch_size=32),
                          metadata={"model": "my_segmenter:Segmenter",
                                    "data": "fashion_mnist_scenes"})
    loaded, metadata = archive.load(str(out))
    assert ztree.bit_identical(loaded, jax.tree.map(codecs.dense, result.stored))
    assert metadata["task"]["name"] == task.name and "batch_stats" in loaded
    assert result.report["metric"] == "mIoU"
    score = result.report["compressed_accuracy"]
    assert 0.0 < score < 1.0

    cli.main(["evaluate", str(out), "--model", "my_segmenter:Segmenter", "--max-examples",
              "32"])  # the same 32 test scenes
    assert f"test mIoU {score:.4f}" in capsys.readouterr().out


def test_detection_task_scores_decoded_boxes_with_pycocotools(scenes):
    _, (images, targets) = scenes
    model = registry.get("ssdlite_mobilenet_v2").factory(10)
    task = tasks.for_model(model, images.shape[1:])
    variables = train.init_variables(model, images[:1] / 255.0, 0)
    found = task.predict(model, variables, images, preprocess=data.Preprocess())
    assert found["boxes"].shape == (32, task.max_detections, 4)
    assert found["valid"].any() and (found["boxes"][found["valid"]] <= 96).all()
    scores = task.evaluate(model, variables, images, targets, preprocess=data.Preprocess())
    assert {"mAP", "AP50"} <= set(scores) and 0.0 <= scores["mAP"] <= scores["AP50"] <= 1.0



class Detector(nn.Module):  # a user's own detector: one 12x12 map, 4 anchors per location
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), strides=4, name="down")(x))
        x = nn.relu(nn.Conv(8, (3, 3), strides=2, name="features")(x))
        batch = x.shape[0]
        return (nn.Conv(4 * 11, (3, 3), name="classes")(x).reshape(batch, -1, 11),
                nn.Conv(4 * 4, (3, 3), name="boxes")(x).reshape(batch, -1, 4))


def test_detections_computed_elsewhere_score_as_evaluate_scores_them(scenes):
    _, (images, targets) = scenes
    model = Detector()
    task = tasks.Detection(ssdlite.SMALL_ANCHORS.anchors([(12, 12)], 96), image_size=96)
    variables = train.init_variables(model, images[:1] / 255.0, 0)
    scores = task.evaluate(model, variables, images, targets, preprocess=data.Preprocess())
    outputs = _outputs_in_batches(model, variables, images)  # as LiteRT would give them
    assert task.score_outputs(outputs, targets) == scores
    with pytest.raises(ValueError, match="the outputs cover 16 examples, the labels 32"):
        task.score_outputs(outputs[:1], targets)


def _outputs_in_batches(model, variables, images, size=16):
    x = data.Preprocess()(images)
    apply = jax.jit(lambda x: model.apply(variables, x, **train.mode_kwargs(model, False)))
    return [apply(x[i:i + size]) for i in range(0, len(x), size)]


def test_a_detection_net_on_class_labels_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--net", "ssdlite_mobilenet_v2", "--out", "x"])
    assert exit_info.value.code == 2
    assert "fashion_mnist_scenes" in capsys.readouterr().err


def test_task_metadata_round_trip_and_refusal():
    model = registry.get("ssdlite_mobilenet_v2").factory(10)
    task = tasks.for_model(model, (96, 96, 1))
    assert isinstance(task, tasks.Detection) and task.image_size == 96
    again = tasks.from_dict(task.to_dict(), model, (96, 96, 1))
    np.testing.assert_array_equal(again.anchors, task.anchors)
    assert isinstance(tasks.from_dict(None, model, (96, 96, 1)), tasks.Classification)
    with pytest.raises(ValueError, match="unknown task"):
        tasks.from_dict({"name": "captioning"}, model, (96, 96, 1))


USER_SEGMENTER = '''
import flax.linen as nn


class Segmenter(nn.Module):  # a user's own net: its names, BatchNorm, no train argument
    num_classes: int

    @nn.compact
    def __call__(self, x):
        training = self.is_mutable_collection("batch_stats")
        x = nn.relu(nn.BatchNorm(use_running_average=not training, name="bn")(
            nn.Conv(8, (3, 3), name="features")(x)))
        return nn.Conv(self.num_classes, (1, 1), name="to_labels")(x)
'''


def test_a_users_segmentation_model_trains_from_the_cli_and_its_file_evaluates(
        tmp_path, monkeypatch, capsys):
    (tmp_path / "my_segmenter.py").write_text(USER_SEGMENTER)
    monkeypatch.chdir(tmp_path)
    common = ["--model", "my_segmenter:Segmenter", "--data", "fashion_mnist_scenes"]
    cli.main(["train", *common, "--task", "segmentation", "--max-examples", "64",
              "--batch-size", "32", "--epochs", "1", "--max-test-examples", "32", "--quiet",
              "--out", str(tmp_path / "run")])
    trained = capsys.readouterr().out.split("test mIoU ")[1].split(",")[0]
    _, metadata = archive.load(str(tmp_path / "run" / "model.zyl"))
    assert metadata["num_classes"] == 11  # the background counts for segmentation
    user = ["--model", "my_segmenter:Segmenter"]
    cli.main(["evaluate", str(tmp_path / "run" / "model.zyl"), *user, "--max-examples", "32"])
    assert f"test mIoU {trained}" in capsys.readouterr().out
    cli.main(["evaluate", str(tmp_path / "run" / "model.zyl"), *user, "--max-examples", "32",
              "--scales", "1", "1.5", "--flip"])
    out = capsys.readouterr().out
    assert "(scales 1, 1.5, flipped)" in out
    # the same score as the Python API gives the decoded file with those views
    f = modelfile.load_model_file(tmp_path / "run" / "model.zyl",
                                  model=registry.import_factory("my_segmenter:Segmenter"))
    views = tasks.Segmentation(11, scales=(1, 1.5), flip=True)
    images, labels = jax.tree.map(lambda a: a[:32], modelfile.scoring_data(f)[1])
    expected = views.evaluate(f.model, f.variables, images, labels, preprocess=f.preprocess)
    assert f"test mIoU {expected['mIoU']:.4f}" in out
    with pytest.raises(SystemExit):
        cli.main(["evaluate", str(tmp_path / "run" / "model.zyl"), *user, "--scales", "0"])
    assert "--scales: scales must be a non-empty sequence" in capsys.readouterr().err


def test_a_model_with_the_wrong_outputs_for_its_task_is_a_clear_error():
    images, targets = data.load("fashion_mnist_scenes", "test")
    model = registry.get("ssdlite_mobilenet_v2").factory(10)
    with pytest.raises(ValueError, match=r"segmentation model must return logits \(B, H, W, 11\)"):
        train.fit(model, optax.adam(1e-3), (images[:8], data.take(targets, np.arange(8))),
                  epochs=1, batch_size=8, task=tasks.Segmentation(11), progress=False)



def test_segmentation_scoring_refuses_logits_of_another_class_count(scenes):
    _, (images, targets) = scenes
    model = CountingSegmenter(num_classes=11)
    variables = train.init_variables(model, images[:1] / 255.0, 0)
    for wrong in (10, 12):
        with pytest.raises(ValueError, match=rf"logits \(B, H, W, {wrong}\) .* got "
                                             r"\(\d+, 96, 96, 11\)"):
            tasks.Segmentation(wrong).evaluate(model, variables, images, targets)
        with pytest.raises(ValueError, match=rf"logits \(B, H, W, {wrong}\)"):
            tasks.Segmentation(wrong).score_outputs(
                _outputs_in_batches(model, variables, images), targets)


class HalfSizeSegmenter(nn.Module):  # a user's net whose logits are at half the input size
    @nn.compact
    def __call__(self, x):
        return nn.Conv(11, (3, 3), strides=2, name="to_labels")(x)


def test_logits_smaller_than_the_mask_are_resized_for_the_loss_and_the_scores(scenes):
    _, (images, targets) = scenes
    model, task = HalfSizeSegmenter(), tasks.Segmentation(11)
    variables = train.init_variables(model, images[:1] / 255.0, 0)
    x = jnp.asarray(images, jnp.float32) / 255.0
    small = model.apply(variables, x)
    assert small.shape == (32, 48, 48, 11)
    upsampled = jax.image.resize(small, (32, 96, 96, 11), "bilinear")  # the reference
    mask = jnp.ones(32)
    loss, stats = task.loss()(small, targets, mask)
    reference, reference_stats = detection.pixel_cross_entropy(upsampled, targets, mask)
    np.testing.assert_allclose(loss, reference, rtol=1e-5)
    assert stats == reference_stats
    scores = task.evaluate(model, variables, images, targets, preprocess=data.Preprocess())
    assert scores == task.score_outputs([upsampled], targets)
    assert scores == task.score_outputs(_outputs_in_batches(model, variables, images), targets)
    fewer = data.take(targets, np.arange(30))
    with pytest.raises(ValueError, match="the outputs cover 32 examples, the labels 30"):
        task.score_outputs([upsampled], fewer)
    with pytest.raises(ValueError, match="the outputs cover 30 examples, the labels 32"):
        task.score_outputs([upsampled[:30]], targets)


TRACES = []


class CountingSegmenter(nn.Module):  # counts how often jax traces it
    num_classes: int = 11

    @nn.compact
    def __call__(self, x):
        TRACES.append(x.shape)
        return nn.Conv(self.num_classes, (3, 3), name="to_labels")(x)


def test_scoring_the_same_model_twice_compiles_its_inference_once(scenes):
    _, (images, targets) = scenes
    model, task = CountingSegmenter(), tasks.Segmentation(11)
    variables = train.init_variables(model, images[:1] / 255.0, 0)
    TRACES.clear()
    first = task.evaluate(model, variables, images, targets, preprocess=data.Preprocess())
    other = jax.tree.map(lambda w: w * 0.5, variables)  # new weights, same program
    task.evaluate(model, other, images, targets, preprocess=data.Preprocess())
    again = task.evaluate(model, variables, images, targets, preprocess=data.Preprocess())
    # one compiled program for every call, and at most one shape check of one example
    # (to size the batch; cached, so an earlier test may have made it already)
    assert TRACES.count((220, 96, 96, 1)) == 1 and again == first
    assert len(TRACES) <= 2 and set(TRACES) <= {(1, 96, 96, 1), (220, 96, 96, 1)}
    confusion = task.confusion(model, variables, images, targets, preprocess=data.Preprocess())
    assert confusion.sum() == targets["segmentation"].size  # every pixel once, no padding
    assert np.array_equal(confusion.sum(1), np.bincount(targets["segmentation"].ravel(),
                                                        minlength=11))  # rows: true labels
    assert float(metrics.mean_iou(confusion)) == first["mIoU"]
    assert task.score_outputs(_outputs_in_batches(model, variables, images), targets) == first


def test_classification_scores_logits_computed_elsewhere():
    logits = [np.array([[0.0, 2.0], [3.0, 1.0]]), np.array([[0.5, 0.1]])]
    assert tasks.Classification().score_outputs(logits, np.array([1, 1, 0])) == {
        "accuracy": 2 / 3}
    with pytest.raises(ValueError, match="cover 3 examples, the labels 2"):
        tasks.Classification().score_outputs(logits, np.array([1, 1]))
    with pytest.raises(ValueError, match=r"an iterable of batches .* not one array of shape"):
        tasks.Classification().score_outputs(logits[0], np.array([1, 1]))


def _position_dependent_logits(x):
    """Logits (B, H, W, 3) of images (B, H, W, 1) that depend on the column, not only the pixel."""
    ramp = jnp.linspace(-2.0, 2.0, x.shape[2])[None, None, :, None]
    return jnp.concatenate([x, -x, x * ramp + ramp], -1)


def test_multi_scale_inference_averages_the_probabilities_of_every_view(scenes):
    _, (images, _) = scenes
    x = jnp.asarray(images[:4], jnp.float32) / 255.0
    single = tasks.multi_scale_log_probabilities(_position_dependent_logits, x, (1.0,))
    np.testing.assert_allclose(single, jax.nn.log_softmax(_position_dependent_logits(x)),
                               atol=1e-6)

    # a flipped view makes the prediction of a mirrored scene the mirror of the scene's
    flipped = lambda v: tasks.multi_scale_log_probabilities(_position_dependent_logits, v,
                                                            (1.0,), flip=True)
    np.testing.assert_allclose(flipped(x[:, :, ::-1]), flipped(x)[:, :, ::-1], atol=1e-6)
    assert not np.allclose(single[:, :, ::-1], tasks.multi_scale_log_probabilities(
        _position_dependent_logits, x[:, :, ::-1], (1.0,)), atol=1e-3)

    # each scale: the images resized, the logits resized back, probabilities averaged
    both = tasks.multi_scale_log_probabilities(_position_dependent_logits, x, (1.0, 1.5))
    b, h, w, _ = x.shape
    larger = _position_dependent_logits(jax.image.resize(x, (b, 144, 144, 1), "bilinear"))
    back = jax.image.resize(larger, (b, h, w, 3), "bilinear")
    reference = np.log((np.exp(single) + jax.nn.softmax(back)) / 2)
    np.testing.assert_allclose(both, reference, atol=1e-5)
    np.testing.assert_allclose(np.exp(both).sum(-1), 1.0, atol=1e-5)


def test_segmentation_refuses_bad_scales():
    for scales in [(), (0.0,), (1.0, 20.0), (True,), 1.0, (float("nan"),)]:
        with pytest.raises(ValueError, match="scales must be a non-empty sequence"):
            tasks.Segmentation(11, scales=scales)
    with pytest.raises(ValueError, match="flip must be True or False, got 'yes'"):
        tasks.Segmentation(11, flip="yes")
    assert tasks.Segmentation(11, scales=[1, 1.5]).scales == (1.0, 1.5)
