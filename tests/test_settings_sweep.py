"""experiments.settings_sweep: the predicted file and the model it decodes to, on a user model."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import settings_sweep
from zylax import archive, compress
from zylax.transforms import pruning, sharing
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


def _masks(params, sparsity):
    return pruning.sparsity_masks(params, 0.0, overrides={".*kernel": sparsity})


def test_the_decoded_variables_are_what_the_predicted_file_decodes_to(user_model):
    model, variables, _ = user_model
    masks = _masks(variables["params"], 0.6)
    size, decoded = settings_sweep.shared_file(model, variables, masks, 4, None)

    latent, aux = sharing.share(pruning.apply_masks(variables["params"], masks), 4, masks)
    blob = archive.to_bytes(compress.storable({**variables, "params": latent}, aux, "auto"))
    from_file, _ = archive.decode_bytes(blob)
    assert size == len(blob)
    assert ztree.bit_identical(from_file, decoded)
    kernel = np.asarray(decoded["params"]["aa_middle"]["kernel"])
    pruned = ~np.asarray(masks["aa_middle"]["kernel"], bool)
    assert pruned.mean() > 0.59 and not kernel[pruned].any()
    assert len(np.unique(kernel)) <= 2 ** 4 + 1  # 16 shared values and the pruned zero


def test_fewer_bits_and_more_pruning_give_a_smaller_file(user_model):
    model, variables, _ = user_model
    dense = sum(np.asarray(v).nbytes for v in jax.tree.leaves(variables))
    sizes = {(s, b): settings_sweep.shared_file(model, variables,
                                                _masks(variables["params"], s), b, "float16")[0]
             for s, b in ((0.5, 5), (0.75, 5), (0.5, 3))}
    assert sizes[0.75, 5] < sizes[0.5, 5] and sizes[0.5, 3] < sizes[0.5, 5]
    assert max(sizes.values()) < dense / 4


def test_folding_batch_norm_keeps_the_decoded_models_outputs(user_model):
    model, variables, images = user_model
    masks = _masks(variables["params"], 0.5)
    _, unfolded = settings_sweep.shared_file(model, variables, masks, 5, None)
    _, folded = settings_sweep.shared_file(model, variables, masks, 5, None, images[:1])
    assert not ztree.bit_identical(folded["batch_stats"], unfolded["batch_stats"])
    np.testing.assert_allclose(model.apply(folded, images), model.apply(unfolded, images),
                               rtol=1e-3, atol=1e-3)
