"""Q* and candidate selection: limits and the stated selection distribution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from evor.selection import acceptance_probabilities, rejection_select, select, select_rows, soft_value, softmax_select

SAMPLES = jnp.array([[0.1, -0.3, 0.7, 0.2], [-1.0, -0.2, -0.5, -0.9]])


def test_soft_value_large_temperature_is_the_mean():
    np.testing.assert_allclose(soft_value(SAMPLES, 1e4), SAMPLES.mean(-1), atol=1e-4)
    np.testing.assert_allclose(soft_value(SAMPLES, jnp.inf), SAMPLES.mean(-1), atol=1e-7)


def test_soft_value_small_temperature_is_the_max():
    np.testing.assert_allclose(soft_value(SAMPLES, 1e-4), SAMPLES.max(-1), atol=1e-3)
    np.testing.assert_allclose(soft_value(SAMPLES, 0.0), SAMPLES.max(-1), atol=0)


def test_soft_value_matches_the_formula_and_is_monotone_in_temperature():
    tau = 0.3
    z = np.asarray(SAMPLES, np.float64)
    expected = tau * (np.log(np.exp(z / tau).sum(-1)) - np.log(z.shape[-1]))
    np.testing.assert_allclose(soft_value(SAMPLES, tau), expected, rtol=1e-5)
    values = [np.asarray(soft_value(SAMPLES, t)) for t in (0.01, 0.1, 1.0, 10.0)]
    assert all((a >= b - 1e-6).all() for a, b in zip(values, values[1:]))  # decreasing in tau


def _select_many(fn, q, tau, n=20000, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), n)
    return np.asarray(jax.vmap(lambda k: fn(k, q, tau))(keys))


def test_rejection_zero_temperature_is_argmax():
    q = jnp.array([0.2, 0.9, -0.1, 0.85])
    picks = _select_many(rejection_select, q, 0.0, n=2000)
    assert (picks == 1).all()
    picks = _select_many(rejection_select, q, 1e-6, n=2000)
    assert (picks == 1).all()


def test_rejection_infinite_temperature_returns_the_first_candidate():
    q = jnp.array([0.2, 0.9, -0.1, 0.85])
    assert (_select_many(rejection_select, q, jnp.inf, n=2000) == 0).all()
    assert (_select_many(rejection_select, q, 1e6, n=2000) == 0).all()


def test_rejection_intermediate_temperature_matches_its_stated_distribution():
    # P(i) = p_i * prod_{j<i} (1 - p_j), p_i = exp((q_i - max q) / tau). Chi-square test, fixed seed.
    q = jnp.array([0.1, 0.5, 0.3, 0.6, 0.2])
    tau = 0.2
    p = np.asarray(acceptance_probabilities(q, tau), np.float64)
    expected = p * np.concatenate([[1.0], np.cumprod(1 - p)[:-1]])
    assert expected.sum() == pytest.approx(1.0)
    n = 40000
    counts = np.bincount(_select_many(rejection_select, q, tau, n=n), minlength=len(q))
    mask = expected > 0
    chi2 = (((counts[mask] - n * expected[mask]) ** 2) / (n * expected[mask])).sum()
    assert chi2 < 18.47, (counts, n * expected)  # 99.9% quantile of chi-square with 4 dof
    assert counts[~mask].sum() == 0


def test_softmax_selection_matches_softmax_and_zero_temperature_is_argmax():
    q = jnp.array([0.1, 0.5, 0.3])
    tau = 0.25
    n = 30000
    counts = np.bincount(_select_many(softmax_select, q, tau, n=n), minlength=3)
    expected = np.exp(np.asarray(q) / tau) / np.exp(np.asarray(q) / tau).sum()
    chi2 = (((counts - n * expected) ** 2) / (n * expected)).sum()
    assert chi2 < 13.82  # 99.9% quantile, 2 dof
    assert (_select_many(softmax_select, q, 0.0, n=500) == 1).all()


def test_non_finite_q_star_falls_back_to_a_random_candidate_with_a_warning():
    q = jnp.array([[0.1, jnp.nan, 0.3, 0.2], [0.1, 0.5, 0.3, 0.2]])
    keys = jax.random.split(jax.random.PRNGKey(0), 2000)
    with pytest.warns(RuntimeWarning, match="not finite"):
        chosen = np.asarray(jax.jit(jax.vmap(lambda k: select(k, q, 0.0, "rejection")))(keys))
        jax.block_until_ready(chosen)
    # the finite row still gets its argmax; the NaN row a uniform pick (not candidate 0 every time)
    assert np.all(chosen[:, 1] == 1)
    counts = np.bincount(chosen[:, 0], minlength=4) / len(chosen)
    np.testing.assert_allclose(counts, 0.25, atol=0.04)
    # finite rows choose exactly what they chose before the guard existed
    np.testing.assert_array_equal(np.asarray(select(keys[0], q[1], 1e-3, "rejection")),
                                  np.asarray(rejection_select(keys[0], q[1], 1e-3)))


def test_batched_selection_matches_per_row_selection_with_one_host_callback():
    # select_rows must choose exactly what vmapping select over the rows chooses (so no result changes),
    # while emitting one warning callback per call: a callback under vmap is unrolled once per row, which
    # made the compile time of EVOR's act grow with the batch (minutes for 4000 observations).
    q = jax.random.normal(jax.random.PRNGKey(1), (64, 8)).at[3, 2].set(jnp.nan)
    keys = jax.random.split(jax.random.PRNGKey(2), 64)
    for rule, tau in (("rejection", 1e-3), ("rejection", 0.0), ("softmax", 0.3)):
        with pytest.warns(RuntimeWarning, match="not finite"):
            per_row = jax.block_until_ready(jax.vmap(lambda k, qi: select(k, qi, tau, rule))(keys, q))
        with pytest.warns(RuntimeWarning, match="not finite"):
            batched = jax.block_until_ready(select_rows(keys, q, tau, rule))
        np.testing.assert_array_equal(np.asarray(batched), np.asarray(per_row))
    def callbacks(rows):
        jaxpr = jax.make_jaxpr(lambda k, v: select_rows(k, v, 1e-3, "rejection"))(keys[:rows], q[:rows])
        return sum(eqn.primitive.name == "debug_callback" for eqn in jaxpr.jaxpr.eqns)
    assert callbacks(64) == callbacks(2) == 1
