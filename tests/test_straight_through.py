import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zylax import straight_through as st

X = jnp.array([-2.0, -1.0, -0.5, -0.0, 0.0, 0.3, 1.0, 1.5])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_sign_forward_and_gradient(dtype):
    x = X.astype(dtype)
    y = st.sign(x)
    assert y.dtype == dtype
    np.testing.assert_array_equal(np.asarray(y, np.float32), [-1, -1, -1, 1, 1, 1, 1, 1])
    g = jnp.arange(1.0, 9.0).astype(dtype)
    (grad,) = jax.vjp(st.sign, x)[1](g)
    # gate 1{|x| <= 1}: values exactly at +-1 pass, +-2 and 1.5 are cancelled
    np.testing.assert_array_equal(np.asarray(grad, np.float32), [0, 2, 3, 4, 5, 6, 7, 0])
    assert grad.dtype == dtype


def test_sign_under_jit_vmap_and_no_retracing():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(x):
        return jax.grad(lambda v: jnp.sum(st.sign(v) * jnp.arange(v.size).reshape(v.shape)))(x)
    for i in range(3):
        out = f(X.reshape(2, 4) + 0.01 * i)
    chex.assert_shape(out, (2, 4))
    batched = jax.vmap(st.sign)(X.reshape(4, 2))
    np.testing.assert_array_equal(batched.ravel(), st.sign(X))


def test_stochastic_sign_probability_matches_hard_sigmoid():
    x = jnp.array([-1.5, -0.6, 0.0, 0.2, 0.9, 1.2])
    n = 20000
    draws = jax.vmap(lambda k: st.stochastic_sign(k, x))(jax.random.split(jax.random.key(0), n))
    p_plus = np.asarray((draws > 0).mean(axis=0))
    expected = np.clip((np.asarray(x) + 1) / 2, 0, 1)
    bound = 5 * np.sqrt(expected * (1 - expected) / n) + 1e-9  # 5 sigma
    assert np.all(np.abs(p_plus - expected) <= bound), (p_plus, expected)
    assert set(np.unique(np.asarray(draws))) <= {-1.0, 1.0}


def test_stochastic_sign_gradient_is_the_htanh_gate():
    grad = jax.grad(lambda v: jnp.sum(st.stochastic_sign(jax.random.key(1), v) * 3.0))(X)
    np.testing.assert_array_equal(grad, np.where(np.abs(np.asarray(X)) <= 1, 3.0, 0.0))
    bf = st.stochastic_sign(jax.random.key(2), X.astype(jnp.bfloat16))
    assert bf.dtype == jnp.bfloat16


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_ternary_forward_and_exact_gradients(dtype):
    w = jnp.array([-0.9, -0.1, -0.05, 0.0, 0.05, 0.1, 0.7], dtype)
    w_pos, w_neg, delta = jnp.array(2.0, dtype), jnp.array(3.0, dtype), jnp.array(0.05, dtype)
    y = st.ternary(w, w_pos, w_neg, delta)
    assert y.dtype == dtype
    # values exactly at +-delta are zero (strict inequalities)
    np.testing.assert_array_equal(np.asarray(y, np.float32), [-3, -3, 0, 0, 0, 2, 2])
    g = jnp.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], dtype)
    _, vjp = jax.vjp(st.ternary, w, w_pos, w_neg, delta)
    gw, gpos, gneg, gdelta = vjp(g)
    np.testing.assert_array_equal(np.asarray(gw, np.float32),
                                  [3 * 1, 3 * 2, 3, 4, 5, 2 * 6, 2 * 7])
    assert float(gpos) == 6 + 7
    assert float(gneg) == -(1 + 2)  # exact derivative: the paper prints +(1 + 2)
    assert float(gdelta) == 0.0


def test_ternary_negative_scale_gradient_matches_finite_differences():
    w = jnp.array([-0.8, -0.3, 0.01, 0.4, 0.9])
    target = jnp.array([1.0, -2.0, 0.5, 3.0, -1.0])
    loss = lambda wn: jnp.sum(st.ternary(w, jnp.float32(1.5), wn, jnp.float32(0.05)) * target)
    analytic = jax.grad(loss)(jnp.float32(0.7))
    numeric = (loss(jnp.float32(0.7 + 1e-3)) - loss(jnp.float32(0.7 - 1e-3))) / 2e-3
    assert abs(float(analytic) - float(numeric)) < 1e-3


def test_ternary_under_vmap():
    w = jax.random.normal(jax.random.key(0), (3, 10))
    out = jax.vmap(lambda row: st.ternary(row, jnp.float32(1.0), jnp.float32(2.0),
                                          jnp.float32(0.5)))(w)
    np.testing.assert_array_equal(out, st.ternary(w, jnp.float32(1.0), jnp.float32(2.0),
                                                  jnp.float32(0.5)))
