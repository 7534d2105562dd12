"""Monte-Carlo targets from a table of return samples at trajectory cut-offs (EVORConfig.cutoff_returns)
against the spec's every-row computation: same target distribution per row, right rows, right weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from evor.agents.evor import EVOR, EVORConfig, ReturnScale
from evor.data.targets import cutoff_states, multistep_targets
from evor.errors import ConfigError
from evor.toy import ChainMDP, wasserstein1
from evor.train import fit

MDP = ChainMDP(num_states=4, advance_probability=0.3)


def _agents(**fields):
    scale = ReturnScale.from_rewards(-1.0, 0.0, MDP.discount)
    base = dict(hidden_dims=(32, 32), discount=MDP.discount, **fields)
    table = EVOR(EVORConfig(cutoff_returns="table", **base), MDP.observation_dim, 1, scale)
    every_row = EVOR(EVORConfig(cutoff_returns="every_row", **base), MDP.observation_dim, 1, scale)
    return table, every_row


def test_cutoff_states_are_the_distinct_bootstrap_rows_with_weight():
    # Short episodes: many are cut before the goal, some terminate (weight 0, never in the table).
    dataset = MDP.dataset(400, seed=0, episode_steps=6)
    targets = multistep_targets(dataset, MDP.discount, 0)
    rows, index = cutoff_states(targets)
    weighted = targets.bootstrap_discounts > 0
    assert weighted.any() and (~weighted).any()
    np.testing.assert_array_equal(rows, np.unique(targets.bootstrap_rows[weighted]))
    np.testing.assert_array_equal(rows[index[weighted]], targets.bootstrap_rows[weighted])
    assert np.all(dataset.ends[rows] == 1)  # Monte-Carlo walks bootstrap only where a trajectory is cut


def test_sample_reads_each_rows_own_cutoff_entry():
    table_agent, _ = _agents()
    table = table_agent.make_table(MDP.dataset(400, seed=0, episode_steps=6))
    members, count, samples = 2, table["cutoff_observations"].shape[0], 4
    # Entry (e, c, s) encodes its own coordinates, so a wrong gather cannot go unnoticed.
    coded = (jnp.arange(members)[:, None, None] * 1e4 + jnp.arange(count)[None, :, None] * 10
             + jnp.arange(samples)[None, None, :]).astype(jnp.float32)
    batch = table_agent.sample({**table, "cutoff_returns": coded}, jax.random.PRNGKey(0), 512)
    got = np.asarray(batch["bootstrap_returns"])  # (E, B)
    member, cutoff, sample = got // 1e4, (got % 1e4) // 10, got % 10
    np.testing.assert_array_equal(member, np.broadcast_to(np.arange(members)[:, None], got.shape))
    np.testing.assert_array_equal(cutoff, np.broadcast_to(np.asarray(batch["cutoff_index"])[None], got.shape))
    assert set(np.unique(sample)) == set(range(samples))  # every stored sample gets used


def test_table_targets_equal_every_row_targets_in_distribution():
    # At fixed parameters (a briefly trained state, so Z differs between cut-off states), the target of a
    # row has the same distribution either way: G + w * z'(s_cut, a'), a' ~ pi_ref, z' ~ the target flow.
    table_agent, every_row_agent = _agents()
    dataset = MDP.dataset(3000, seed=1, episode_steps=6)
    state = fit(every_row_agent, dataset, 300, batch_size=64, seed=0, chunk=300)
    table = table_agent.make_table(dataset)
    rows_table = every_row_agent.make_table(dataset)
    weights = np.asarray(table["bootstrap_discounts"])
    index = np.asarray(table["cutoff_index"])
    # one row per distinct cut-off among the heavily weighted ones (up to 6)
    chosen = [int(np.flatnonzero((weights > 0.5) & (index == c))[0]) for c in np.unique(index[weights > 0.5])[:6]]
    assert len(chosen) >= 3

    refresh = jax.jit(lambda k: table_agent.refresh_cutoff_returns(state, table, k)["cutoff_returns"])
    draws = np.concatenate([np.asarray(refresh(k))[0] for k in jax.random.split(jax.random.PRNGKey(2), 500)], 1)
    reps = draws.shape[1]  # 500 refreshes x 4 samples per cut-off
    batch = {k: jnp.repeat(v[jnp.asarray(chosen)], reps, axis=0) for k, v in rows_table.items()}
    every_row = np.asarray(jax.jit(every_row_agent.return_targets)(state, batch, jax.random.PRNGKey(3)))[0, :, 0]
    every_row = every_row.reshape(len(chosen), reps)
    scale = table_agent.return_scale
    spreads = []
    for i, row in enumerate(chosen):
        from_table = np.clip(scale.to_unit(np.asarray(table["partial_returns"])[row]
                                           + weights[row] * scale.from_unit(draws[index[row]])), -1, 1)
        spreads.append(every_row[i].std())
        # W1 of two 2000-sample sets of one distribution: ~0.01 of a spread of ~0.1-0.3 here
        w1 = wasserstein1(from_table, every_row[i], np.full(reps, 1.0 / reps))
        assert w1 < 0.25 * every_row[i].std() + 2e-3, (row, w1, every_row[i].std())
        assert abs(from_table.mean() - every_row[i].mean()) < 0.1 * every_row[i].std() + 2e-3
    assert max(spreads) > 0.02  # the comparison is between real distributions, not constants


def test_fused_training_with_a_cutoff_table_refreshes_on_schedule():
    # Refreshes after the first (every 7 updates) read the current target flow, so training differs from
    # a table drawn once at the start; pi_ref's updates do not read the table and stay identical.
    table_agent, _ = _agents(cutoff_refresh_every=7)
    stale_agent, _ = _agents(cutoff_refresh_every=1000)
    dataset = MDP.dataset(600, seed=2, episode_steps=6)
    table = table_agent.make_table(dataset)
    state = table_agent.init(jax.random.PRNGKey(0))
    fresh, _ = jax.jit(lambda s, k: table_agent.train_steps(s, table, k, 21, 32))(state, jax.random.PRNGKey(1))
    stale, _ = jax.jit(lambda s, k: stale_agent.train_steps(s, table, k, 21, 32))(state, jax.random.PRNGKey(1))
    leaves = zip(jax.tree.leaves(fresh["return_flow"]), jax.tree.leaves(stale["return_flow"]))
    assert any(not np.allclose(np.asarray(a), np.asarray(b)) for a, b in leaves)
    np.testing.assert_array_equal(np.asarray(fresh["actor"]["params"]["Dense_0"]["kernel"]),
                                  np.asarray(stale["actor"]["params"]["Dense_0"]["kernel"]))


def test_n_step_targets_ignore_the_cutoff_setting():
    scale = ReturnScale.from_rewards(-1.0, 0.0, MDP.discount)
    agent = EVOR(EVORConfig(hidden_dims=(8,), target_horizon=10, cutoff_returns="table"), MDP.observation_dim, 1,
                 scale)
    table = agent.make_table(MDP.dataset(200, seed=0))
    assert "cutoff_observations" not in table and agent.table_refresh(table) == (None, 0)


def test_cutoff_settings_are_validated():
    for bad in (dict(cutoff_returns="sometimes"), dict(cutoff_samples=0), dict(cutoff_refresh_every=0)):
        with pytest.raises(ConfigError):
            EVORConfig(**bad).validate()
