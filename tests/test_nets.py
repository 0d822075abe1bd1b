import jax
import jax.numpy as jnp
import pytest

from zylax import nets, registry


@pytest.mark.parametrize("name,count", [("lenet300", 266_610), ("lenet5", 431_080)])
def test_lenet_parameter_counts_match_han(name, count):
    model = registry.get(name).factory(10)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    assert nets.param_count(variables["params"]) == count
    assert model.apply(variables, jnp.zeros((3, 28, 28, 1)), train=False).shape == (3, 10)


def test_lenet5_layer_shapes_follow_caffe():
    variables = nets.LeNet5().init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    shapes = jax.tree.map(jnp.shape, variables["params"])
    assert shapes["conv1"]["kernel"] == (5, 5, 1, 20)
    assert shapes["conv2"]["kernel"] == (5, 5, 20, 50)
    assert shapes["ip1"]["kernel"] == (800, 500)
    assert shapes["ip2"]["kernel"] == (500, 10)


def test_unknown_net_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown net 'resnet'"):
        registry.get("resnet")
