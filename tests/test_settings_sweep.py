"""experiments.settings_sweep: the predicted file and the model it decodes to, on a user model."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import settings_sweep
from zylax.transforms import tree as ztree


class UserNet(nn.Module):
    """Own names, BatchNorm read from the mutable collections, no ``train`` argument."""

    @nn.compact
    def __call__(self, x):
        training = self.is_mutable_collection("batch_stats")
        x = nn.Conv(8, (3, 3), name="zz_entry")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not training, name="norm")(x))
        x = nn.relu(nn.Conv(16, (3, 3), strides=2, name="aa_middle")(x))
        return nn.Dense(10, name="mm_out")(x.reshape((x.shape[0], -1)))


@pytest.fixture(scope="module")
def user_model(fmnist_test):
    """The model, its variables with statistics from 64 real test images, and those images."""
    images = jnp.asarray(fmnist_test[0][:64], jnp.float32)[..., None] / 255.0
    model = UserNet()
    variables = model.init(jax.random.PRNGKey(0), images[:1])
    _, state = model.apply(variables, images, mutable=["batch_stats"])
    return model, {**variables, **state}, images


def test_the_sizes_are_of_the_file_and_the_decoded_model_is_pruned_and_shared(user_model):
    model, variables, images = user_model
    size, pruned, decoded = settings_sweep.shared_file(model, variables, 0.6, 4, None,
                                                       images[:1])
    kernel = np.asarray(decoded["params"]["aa_middle"]["kernel"])
    zeros = np.asarray(pruned["params"]["aa_middle"]["kernel"]) == 0
    assert zeros.mean() > 0.59 and not kernel[zeros].any()
    assert len(np.unique(kernel)) <= 2 ** 4 + 1  # 16 shared values and the pruned zero
    assert not ztree.bit_identical(decoded["params"], pruned["params"])
    assert size > 0 and ztree.bit_identical(decoded["batch_stats"], pruned["batch_stats"])


def test_fewer_bits_and_more_pruning_give_a_smaller_file(user_model):
    model, variables, images = user_model
    dense = sum(np.asarray(v).nbytes for v in jax.tree.leaves(variables))
    sizes = {(s, b): settings_sweep.shared_file(model, variables, s, b, "float16",
                                                images[:1])[0]
             for s, b in ((0.5, 5), (0.75, 5), (0.5, 3))}
    assert sizes[0.75, 5] < sizes[0.5, 5] and sizes[0.5, 3] < sizes[0.5, 5]
    assert max(sizes.values()) < dense / 4


def test_folding_batch_norm_keeps_the_decoded_models_outputs(user_model):
    model, variables, images = user_model
    _, _, unfolded = settings_sweep.shared_file(model, variables, 0.5, 5, None, images[:1])
    _, _, folded = settings_sweep.shared_file(model, variables, 0.5, 5, None, images[:1],
                                              fold=True)
    assert not ztree.bit_identical(folded["batch_stats"], unfolded["batch_stats"])
    np.testing.assert_allclose(model.apply(folded, images), model.apply(unfolded, images),
                               rtol=1e-3, atol=1e-3)
