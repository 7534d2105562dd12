"""n-step and Monte-Carlo targets against hand-built trajectories with terminations and cut-offs."""

import numpy as np
import pytest

from evor.data.dataset import Dataset
from evor.data.targets import multistep_targets

G = 0.5


def _dataset():
    # Trajectory A: rows 0-3, terminates at row 3 (mask 0). Trajectory B: rows 4-6, cut at row 6.
    rewards = np.array([1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0], np.float32)
    masks = np.array([1, 1, 1, 0, 1, 1, 1], np.float32)
    ends = np.array([0, 0, 0, 1, 0, 0, 1], np.float32)
    obs = np.arange(7, dtype=np.float32)[:, None]
    return Dataset.from_arrays("hand-built", observations=obs, actions=np.zeros((7, 1), np.float32),
                               rewards=rewards, masks=masks, ends=ends, next_observations=obs + 0.5)


def test_one_step_targets_are_ordinary_td():
    t = multistep_targets(_dataset(), G, 1)
    np.testing.assert_allclose(t.partial_returns, [1, 2, 3, 4, 10, 20, 30])
    np.testing.assert_allclose(t.bootstrap_discounts, [G, G, G, 0, G, G, G])
    np.testing.assert_array_equal(t.bootstrap_rows, np.arange(7))


def test_two_step_targets_stop_at_terminations_and_cut_offs():
    t = multistep_targets(_dataset(), G, 2)
    np.testing.assert_allclose(t.partial_returns, [1 + G * 2, 2 + G * 3, 3 + G * 4, 4, 10 + G * 20, 20 + G * 30, 30])
    # row 2 walks into the termination at row 3: no bootstrap
    np.testing.assert_allclose(t.bootstrap_discounts, [G**2, G**2, 0, 0, G**2, G**2, G])
    np.testing.assert_array_equal(t.bootstrap_rows, [1, 2, 3, 3, 5, 6, 6])


def test_monte_carlo_targets_bootstrap_only_where_a_trajectory_is_cut():
    t = multistep_targets(_dataset(), G, 0)
    a = [1 + G * 2 + G**2 * 3 + G**3 * 4, 2 + G * 3 + G**2 * 4, 3 + G * 4, 4]
    b = [10 + G * 20 + G**2 * 30, 20 + G * 30, 30]
    np.testing.assert_allclose(t.partial_returns, a + b, rtol=1e-6)
    np.testing.assert_allclose(t.bootstrap_discounts, [0, 0, 0, 0, G**3, G**2, G], rtol=1e-6)
    np.testing.assert_array_equal(t.bootstrap_rows, [3, 3, 3, 3, 6, 6, 6])


def test_long_horizon_equals_monte_carlo():
    d = _dataset()
    long, mc = multistep_targets(d, G, 50), multistep_targets(d, G, 0)
    np.testing.assert_allclose(long.partial_returns, mc.partial_returns, rtol=1e-6)
    np.testing.assert_allclose(long.bootstrap_discounts, mc.bootstrap_discounts, rtol=1e-6)


def test_negative_horizon_is_rejected():
    with pytest.raises(ValueError):
        multistep_targets(_dataset(), G, -1)


def test_action_chunks_against_a_hand_built_episode():
    import jax

    from evor.data.sampler import chunk_table, sample_chunks

    d = _dataset()
    actions = np.arange(7, dtype=np.float32)[:, None] / 10  # a_t = t / 10
    d = Dataset.from_arrays("hand-built", observations=d.observations, actions=actions, rewards=d.rewards,
                            masks=d.masks, ends=d.ends, next_observations=d.next_observations)
    table = chunk_table(d, G, 3)
    chunks = np.asarray(table["action_chunks"])
    np.testing.assert_allclose(chunks[0], [0.0, 0.1, 0.2])
    np.testing.assert_allclose(chunks[2], [0.2, 0.3, 0.3])  # terminates at row 3: last action repeated
    np.testing.assert_allclose(np.asarray(table["partial_returns"])[[0, 2, 4]],
                               [1 + G * 2 + G**2 * 3, 3 + G * 4, 10 + G * 20 + G**2 * 30], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(table["bootstrap_discounts"])[[0, 1, 2, 4]], [G**3, 0, 0, G**3], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(table["bootstrap_observations"])[[0, 4]], [[2.5], [6.5]])
    # rows 5 and 6 would run past the cut at row 6: never sampled
    np.testing.assert_array_equal(np.asarray(table["valid_rows"]), [0, 1, 2, 3, 4])
    batch = sample_chunks(table, jax.random.PRNGKey(0), 500)
    assert set(np.asarray(batch["observations"])[:, 0].astype(int)) == {0, 1, 2, 3, 4}


def test_action_chunks_with_their_own_target_horizon():
    # EVOR with chunks: chunks of 2 actions, Monte-Carlo targets (bootstrapping only at the cut).
    from evor.data.sampler import chunk_table

    d = _dataset()
    actions = np.arange(7, dtype=np.float32)[:, None] / 10
    d = Dataset.from_arrays("hand-built", observations=d.observations, actions=actions, rewards=d.rewards,
                            masks=d.masks, ends=d.ends, next_observations=d.next_observations)
    table = chunk_table(d, G, 2, target_horizon=0)
    np.testing.assert_allclose(np.asarray(table["action_chunks"])[[0, 3, 4]], [[0.0, 0.1], [0.3, 0.3], [0.4, 0.5]])
    np.testing.assert_allclose(np.asarray(table["partial_returns"])[[0, 4]],
                               [1 + G * 2 + G**2 * 3 + G**3 * 4, 10 + G * 20 + G**2 * 30], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(table["bootstrap_discounts"])[[0, 4, 5]], [0, G**3, G**2], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(table["bootstrap_observations"])[[4, 5]], [[6.5], [6.5]])
    # the chunk starting at row 6 would run past the cut; every other chunk fits (row 3 terminates)
    np.testing.assert_array_equal(np.asarray(table["valid_rows"]), [0, 1, 2, 3, 4, 5])
