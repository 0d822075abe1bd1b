"""The contract every method keeps (``zylax.methods``): init, apply, tx and store under jit and
vmap, dtypes kept, and a file that decodes to exactly what ``apply`` gives; and how they compose."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from zylax import archive, compress, methods
from zylax.transforms import tree as ztree

KEY = jax.random.key(0)


class Net(nn.Module):
    """Own names (sorted order is not the execution order), a k x k and a 1 x 1 conv."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), name="zz_first")(x))
        x = nn.relu(nn.Conv(8, (3, 3), name="mm_kxk")(x))
        x = nn.relu(nn.Conv(16, (1, 1), name="mm_pointwise")(x))
        return nn.Dense(10, name="aa_last")(x.reshape((x.shape[0], -1)))


X = jnp.ones((1, 8, 8, 1))
VARIABLES = Net().init(jax.random.key(1), X)
PARAMS = VARIABLES["params"]


def _bound(method):
    return method.bind(Net(), VARIABLES, X)


ALL = {
    "prune": lambda: methods.prune(sparsity=0.5),
    "prune cubic": lambda: methods.prune(sparsity=0.5, schedule="cubic"),
    "share": lambda: methods.share(bits=3),
    "ternary": lambda: methods.ternary(),
    "binary": lambda: methods.binary(),
    "binary plain stochastic": lambda: methods.binary(scale=None, stochastic=True),
    "pattern": lambda: methods.pattern(),
    "cast": lambda: methods.cast(),
    "soft share": lambda: methods.soft_share(examples=1000),
    "sparse vd": lambda: methods.sparse_vd(examples=1000, initial_log_alpha=2.0),
    "pattern & share": lambda: methods.combine(methods.pattern(), methods.share(bits=4)),
}
"""Every method, and a combination, with settings that take some leaves of ``Net``."""

TRAINS_OTHERWISE = {"binary plain stochastic", "soft share", "sparse vd"}
"""Methods whose training forward (``apply`` with an rng) differs from inference: a sampled
sign or weight, or soft weight-sharing's float weights (snapped to their components in
inference)."""


def test_every_method_is_registered_and_built_from_a_spec():
    assert set(methods.METHODS) == {"prune", "share", "ternary", "binary", "pattern", "cast",
                                   "soft_share", "sparse_vd"}
    chain = methods.build("deep")
    assert [m.name for m in chain] == ["prune", "share"]
    chain = methods.build("prune+ttq", {"prune": {"sparsity": 0.7}})
    assert [m.name for m in chain] == ["prune", "ternary"] and chain[0].sparsity == 0.7
    (both,) = methods.build("pattern&share")
    assert both.name == "pattern+share"


@pytest.mark.parametrize("name", sorted(ALL))
def test_the_contract_init_apply_tx_store_under_jit(name):
    method = _bound(ALL[name]())
    state = jax.jit(method.init)(PARAMS, KEY)
    eager = method.init(PARAMS, KEY)
    chex_equal(state, eager)
    params = jax.jit(method.apply)(state)
    assert jax.tree.structure(params) == jax.tree.structure(PARAMS)
    for leaf, original in zip(jax.tree.leaves(params), jax.tree.leaves(PARAMS)):
        assert leaf.dtype == original.dtype and leaf.shape == original.shape
    # a training rng changes nothing for most methods
    sampled = jax.jit(method.apply)(state, jax.random.key(3))
    same = ztree.bit_identical(jax.device_get(sampled), jax.device_get(params))
    assert same == (name not in TRAINS_OTHERWISE)
    tx = method.tx(optax.adam(1e-2), steps=10)
    opt_state = jax.jit(tx.init)(state["latent"])
    grads = jax.jit(jax.grad(lambda latent: jnp.sum(jnp.square(Net().apply(  # a training step
        {"params": method.apply({"latent": latent, "aux": state["aux"]}, jax.random.key(4))},
        X))) + method.penalty({"latent": latent, "aux": state["aux"]})))(state["latent"])
    updates, _ = jax.jit(tx.update)(grads, opt_state, state["latent"])
    moved = optax.apply_updates(state["latent"], updates)
    assert not ztree.bit_identical(jax.device_get(moved), jax.device_get(state["latent"]))
    blob = archive.to_bytes({"params": method.store(state)})
    decoded, _ = archive.decode_bytes(blob)
    assert ztree.bit_identical(decoded["params"], jax.device_get(params))


def chex_equal(a, b):
    """Same structure, dtypes and values (to float rounding: jit fuses sums differently)."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64),
                                   rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_method_vmaps_over_a_batch_of_params(name):
    method = _bound(ALL[name]())
    batch = jax.tree.map(lambda w: jnp.stack([w, 2 * w]), PARAMS)
    out = jax.jit(jax.vmap(lambda p: method.apply(method.init(p, KEY))))(batch)
    first = jax.jit(lambda p: method.apply(method.init(p, KEY)))(PARAMS)
    for got, want in zip(jax.tree.leaves(out), jax.tree.leaves(first)):
        np.testing.assert_allclose(got[0], want, rtol=1e-6, atol=1e-7)


def test_numeric_settings_trace_sparsity_and_threshold_under_vmap():
    def kept(sparsity):
        method = methods.prune(sparsity=sparsity)
        return jnp.mean(method.apply(method.init(PARAMS, KEY))["mm_kxk"]["kernel"] != 0)
    fractions = jax.jit(jax.vmap(kept))(jnp.array([0.25, 0.5, 0.9]))
    np.testing.assert_allclose(fractions, [0.75, 0.5, 0.1], atol=0.01)

    def zeros(t):
        method = methods.ternary(t=t, keep_float=())
        return jnp.mean(method.apply(method.init(PARAMS, KEY))["mm_kxk"]["kernel"] == 0)
    assert np.all(np.diff(np.asarray(jax.vmap(zeros)(jnp.array([0.05, 0.3, 0.7])))) > 0)


def test_pruning_composes_with_every_later_method_and_its_zeros_stay():
    prune = methods.prune(sparsity=0.6)
    pruned = prune.apply(prune.init(PARAMS, KEY))
    zero = {n: np.asarray(w) == 0 for n, w in ztree.named_leaves(pruned).items()
            if n.endswith("kernel")}  # biases start at 0 and are not pruned
    for later in (methods.share(bits=3), _bound(methods.ternary()),
                  _bound(methods.binary()), methods.cast()):
        state = later.init(pruned, KEY)
        tx = later.tx(optax.sgd(0.5))
        grads = jax.tree.map(jnp.ones_like, state["latent"])
        updates, _ = tx.update(grads, tx.init(state["latent"]), state["latent"])
        state = {"latent": optax.apply_updates(state["latent"], updates), "aux": state["aux"]}
        out = ztree.named_leaves(later.apply(state))
        for name, mask in zero.items():
            assert not np.any(np.asarray(out[name])[mask]), (later.name, name)


def test_pattern_on_kxk_with_share_on_the_rest_and_binary_with_first_and_last_float():
    both = methods.combine(methods.pattern(), methods.share(bits=4))
    stored = both.store(both.init(PARAMS, KEY))
    kinds = {f"{layer}/kernel": type(leaves["kernel"]).__name__
             for layer, leaves in stored.items()}
    assert kinds == {"zz_first/kernel": "Pattern", "mm_kxk/kernel": "Pattern",
                     "mm_pointwise/kernel": "Shared", "aa_last/kernel": "Shared"}
    binary = _bound(methods.binary())
    assert binary.exclude == ("zz_first/kernel", "aa_last/kernel")  # execution order
    stored = binary.store(binary.init(PARAMS, KEY))
    assert type(stored["mm_kxk"]["kernel"]).__name__ == "Binary"
    assert isinstance(stored["zz_first"]["kernel"], np.ndarray)


@pytest.mark.parametrize("index_bits", ["junk", "ANS", float("inf"), [5], 0, 17, True,
                                        {".*": -3}])
def test_a_bad_gap_width_is_refused_when_the_method_is_made(index_bits):
    with pytest.raises(ValueError, match="share: index_bits must be an integer in"):
        methods.share(index_bits=index_bits)


def test_keep_float_that_leaves_nothing_selected_says_so():
    class TwoDense(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3, name="out")(nn.relu(nn.Dense(4, name="hidden")(x)))
    x = jnp.ones((1, 5))
    variables = TwoDense().init(KEY, x)
    with pytest.raises(ValueError, match=r"keep_float .* keep_float=\(\)"):
        methods.ternary().bind(TwoDense(), variables, x)
    bound = methods.ternary(keep_float=("first",)).bind(TwoDense(), variables, x)
    assert bound.selected(variables["params"]) == ["out/kernel"]


def test_a_later_stage_keeps_an_earlier_quantizer_and_trains_it_on():
    from zylax import compress

    stage = compress.begin(methods.pattern(), VARIABLES, KEY)
    stage = compress.follow(stage, methods.share(bits=3), KEY)
    assert [m.name for m in stage.plan.members] == ["pattern", "share"]
    owners = [sorted(own) for own in stage.state["latent"]["own"]]
    assert owners == [["mm_kxk/kernel", "zz_first/kernel"], ["aa_last/kernel",
                                                             "mm_pointwise/kernel"]]
    stage = compress.follow(stage, methods.cast(), KEY)  # the floats left: biases
    assert sorted(stage.state["latent"]["own"][-1]) == [
        "aa_last/bias", "mm_kxk/bias", "mm_pointwise/bias", "zz_first/bias"]


def test_a_pruned_stage_is_not_carried_its_leaves_go_on_as_floats_with_zeros():
    from zylax import compress

    stage = compress.begin(methods.prune(sparsity=0.5), VARIABLES, KEY)
    stage = compress.follow(stage, methods.share(bits=3, include=".*mm_kxk/kernel"), KEY)
    assert [m.name for m in stage.plan.members] == ["share"]
    params = stage.plan.apply(stage.state)
    assert np.mean(np.asarray(params["aa_last"]["kernel"]) == 0) == pytest.approx(0.5, abs=0.01)


def test_a_chain_is_checked_stage_by_stage_with_what_the_carried_leaves_leave():
    pruned_last = methods.combine(methods.prune(include=".*aa_last/kernel"),
                                  methods.share(include=".*zz_first/kernel"))
    # prune does not carry: its leaf is free for the next stage; share's is not
    compress.check_chain([pruned_last, methods.share(include=".*aa_last/kernel")], PARAMS)
    with pytest.raises(ValueError, match=r"stage 2 \(share\): share: selects no leaf"):
        compress.check_chain([pruned_last, methods.share(include=".*zz_first/kernel")], PARAMS)
    first, second = pruned_last.selections(PARAMS)
    assert (first, second) == (["aa_last/kernel"], ["zz_first/kernel"])
