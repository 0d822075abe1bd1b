"""A new task and a new dataset are one module each: registered, they train, score, and
round-trip through a file's checked metadata with nothing else touched."""

import importlib
import sys
import textwrap

import flax.linen as nn
import numpy as np
import optax
import pytest

from zylax import archive, data, modelfile, tasks, train

TOY_TASK = '''
"""A toy task: is the item footwear or a bag (Fashion-MNIST labels 5..9)? One logit."""
import dataclasses

import jax.numpy as jnp
import numpy as np
import optax

from zylax import tasks, train


@dataclasses.dataclass(frozen=True)
class Footwear:
    name = "footwear"
    metric = "accuracy"
    labels = "classes"
    metadata_fields = {}

    @staticmethod
    def check_model(model):
        pass

    @classmethod
    def for_model(cls, model, input_shape):
        return cls()

    def loss(self):
        def loss(logits, targets, mask):
            self.check_outputs(logits)
            y = (targets >= 5).astype(jnp.float32)
            losses = optax.sigmoid_binary_cross_entropy(logits[:, 0], y)
            correct = ((logits[:, 0] > 0) == (y > 0)) * mask
            mean = jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1)
            return mean, {"correct": jnp.sum(correct)}
        return loss

    def working_values(self, output_shapes, input_shape):
        return 1

    def check_outputs(self, outputs):
        if getattr(outputs, "ndim", 0) != 2 or outputs.shape[-1] != 1:
            shape = getattr(outputs, "shape", None)
            raise ValueError(f"a footwear model returns one logit (B, 1), got {shape}")

    def evaluate(self, model, variables, images, labels, *, preprocess=None, **kwargs):
        logits = model.apply(variables, preprocess(images))
        return self.score_outputs([logits], labels)

    def score_outputs(self, outputs, labels):
        logits = np.concatenate([np.asarray(o) for o in outputs])
        return {"accuracy": float(np.mean((logits[:, 0] > 0) == (np.asarray(labels) >= 5)))}

    def to_dict(self):
        return {"name": self.name}


tasks.register(Footwear)
'''

TOY_DATASET = '''
"""A toy dataset: the first 2,048 Fashion-MNIST training images as "train", the next 512 as
"test", from the same real files."""
from zylax import data


def _load(split, download):
    images, labels = data.load("fashion_mnist", "train", download)
    rows = slice(0, 2048) if split == "train" else slice(2048, 2560)
    return images[rows], labels[rows]


data.register(data.Dataset("fashion_mnist_toy", _load, (0.286,), (0.353,), (28, 28, 1)))
'''


class OneLogit(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(32, name="hidden")(x.reshape((x.shape[0], -1))))
        return nn.Dense(1, name="logit")(x)


@pytest.fixture()
def registered(tmp_path, monkeypatch):
    """Imports the two toy modules (each registers itself); unregisters them after."""
    (tmp_path / "toy_task.py").write_text(textwrap.dedent(TOY_TASK))
    (tmp_path / "toy_dataset.py").write_text(textwrap.dedent(TOY_DATASET))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("toy_task")
    importlib.import_module("toy_dataset")
    yield
    tasks.TASKS.pop("footwear", None)
    data._REGISTRY.pop("fashion_mnist_toy", None)
    sys.modules.pop("toy_task", None)
    sys.modules.pop("toy_dataset", None)


def test_a_toy_task_and_dataset_train_score_and_round_trip_a_file(registered, tmp_path):
    assert "footwear" in tasks.TASKS and "fashion_mnist_toy" in data.names()
    dataset = data.get("fashion_mnist_toy")
    train_data, test_data = dataset.load("train"), dataset.load("test")
    assert train_data[0].shape == (2048, 28, 28, 1) and test_data[0].shape[0] == 512
    prep = dataset.preprocessing()
    model = OneLogit()
    task = tasks.for_model(model, dataset.image_shape, "footwear")
    result = train.fit(model, optax.adam(3e-3), train_data, epochs=2, batch_size=128,
                       preprocess=prep, task=task, progress=False)
    accuracy = task.evaluate(model, result.variables, *test_data, preprocess=prep)["accuracy"]
    assert accuracy > 0.85  # footwear and bags against clothes: easy, but not by chance
    assert result.history[-1]["train_accuracy"] > 0.8
    path = tmp_path / "toy.zyl"
    archive.save(path, result.variables, metadata=tasks.file_metadata(
        task, prep, *train_data, {"data": "fashion_mnist_toy"}))
    loaded = modelfile.load_model_file(path, model=OneLogit())
    assert loaded.task.name == "footwear" and loaded.input_shape == (28, 28, 1)
    name, split = modelfile.scoring_data(loaded)
    assert name == "fashion_mnist_toy" and split[0].shape[0] == 512
    again = loaded.task.evaluate(loaded.model, loaded.variables, *split,
                                 preprocess=loaded.preprocess)
    assert again["accuracy"] == accuracy


def test_a_registered_task_is_checked_against_the_model_outputs(registered, tmp_path):
    class TenLogits(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(10)(x.reshape((x.shape[0], -1)))

    variables = TenLogits().init(__import__("jax").random.key(0), np.zeros((1, 28, 28, 1)))
    path = tmp_path / "ten.zyl"
    archive.save(path, variables, metadata={
        "task": {"name": "footwear"}, "data": "fashion_mnist_toy", "num_classes": 10,
        "input_shape": [28, 28, 1], "preprocess": {"mean": [0.0], "std": [1.0], "pad_to": None}})
    with pytest.raises(modelfile.ModelMismatchError, match="returns one logit"):
        modelfile.load_model_file(path, model=TenLogits())


def test_an_unregistered_task_or_dataset_in_a_file_is_refused(tmp_path):
    with pytest.raises(archive.CorruptFileError, match="must name one of"):
        modelfile.check_metadata({"task": {"name": "footwear"}})
    assert "fashion_mnist_toy" not in data.names()
    with pytest.raises(ValueError, match="unknown dataset 'fashion_mnist_toy'"):
        data.load("fashion_mnist_toy", "train")


def test_a_task_missing_part_of_the_protocol_is_refused():
    class Half:
        name, metric = "half", "accuracy"

    with pytest.raises(TypeError, match="a task needs"):
        tasks.register(Half)
    assert "half" not in tasks.TASKS
