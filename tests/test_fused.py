"""Fused training (K updates in one lax.scan, batches drawn on the device) equals a plain loop that
makes one jitted call per update with the same keys."""

import jax
import numpy as np
import pytest

from evor.agents import build_agent, get_agent_class
from evor.agents.common import plain_updates
from evor.data.dataset import Dataset
from evor.train import agent_config


def _dataset(num=400, obs_dim=4, action_dim=2, seed=0):
    return Dataset.random(num, obs_dim, action_dim, episode_length=50, seed=seed)


@pytest.mark.parametrize("name,extra", [("evor", {}), ("evor", {"cutoff_refresh_every": 7}),
                                        ("evor", {"cutoff_returns": "every_row"}), ("qc", {"horizon": 3}),
                                        ("fql", {}), ("ifql", {})])
def test_fused_updates_equal_one_call_per_update(name, extra):
    cls = get_agent_class(name)
    config = agent_config(cls, {"hidden_dims": [16, 16], **extra})
    agent = build_agent(cls, config, 4, 2, (-1.0, 0.0))
    table = agent.make_table(_dataset())
    state = agent.init(jax.random.PRNGKey(0))
    initial = [np.asarray(x) for x in jax.tree.leaves(state)]
    key = jax.random.PRNGKey(1)
    fused, fused_metrics = jax.jit(lambda s, k: agent.train_steps(s, table, k, 20, 32))(state, key)
    plain, plain_metrics = plain_updates(agent, state, table, key, 20, 32)  # donates `state`
    for a, b in zip(jax.tree.leaves(fused), jax.tree.leaves(plain)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    for k in fused_metrics:
        np.testing.assert_allclose(float(fused_metrics[k]), float(plain_metrics[k]), rtol=1e-5, atol=1e-6)
    moved = [not np.allclose(a, np.asarray(b)) for a, b in zip(initial, jax.tree.leaves(fused))]
    assert any(moved), "the updates must change the parameters"
