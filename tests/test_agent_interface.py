"""Every registered agent implements the interface in evor/agents/base.py, so train, evaluation, sweeps
and studies can rely on it without checking attributes one by one."""

import dataclasses
import inspect

import jax
import pytest

from evor.agents import AGENTS, build_agent
from evor.agents.base import Agent
from evor.data.dataset import Dataset


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_agent_implements_the_interface(name):
    cls = AGENTS[name]
    assert issubclass(cls, Agent) and not inspect.isabstract(cls), name
    assert cls.name == name
    for schema in (cls.Config, cls.Settings):
        assert dataclasses.is_dataclass(schema) and callable(schema().validate)
    for preset in cls.inference_presets.values():
        cls.Settings(**preset).validate()
    agent = build_agent(cls, cls.Config(hidden_dims=(8,)), 3, 2)
    assert agent.uses_return_scale == hasattr(agent, "return_scale")
    table = agent.make_table(Dataset.random(60, 3, 2, episode_length=20))
    state = agent.init(jax.random.PRNGKey(0))
    state, metrics = jax.jit(lambda s, k: agent.train_steps(s, table, k, 2, 8))(state, jax.random.PRNGKey(1))
    assert metrics and all(v.shape == () for v in metrics.values())
    losses = agent.validation_losses(state, table, jax.random.PRNGKey(2), 8)
    assert losses and all(k.startswith("val_") for k in losses)
    actions = agent.act(state, jax.numpy.zeros((4, 3)), jax.random.PRNGKey(3), cls.Settings())
    assert actions.shape == (4, agent.action_horizon * 2)


def test_an_incomplete_agent_cannot_be_built():
    class Half(Agent):
        name = "half"

        def make_table(self, dataset):
            return {}

    with pytest.raises(TypeError, match="abstract"):
        Half()
