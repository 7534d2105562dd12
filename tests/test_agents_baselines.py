"""The baselines' maths: QC's TD target, FQL's one-step policy, IFQL's expectile regression."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from evor.agents.fql import FQL, FQLConfig
from evor.agents.ifql import IFQL, IFQLConfig, expectile_loss
from evor.agents.qc import QC, QCConfig, td_target
from evor.data.dataset import Dataset
from evor.data.sampler import chunk_table
from evor.errors import ConfigError
from evor.train import fit


def test_qc_td_target_by_hand():
    # y = r_t + g r_{t+1} + g^2 r_{t+2} + g^3 m max_n mean_e Qbar(s_{t+3}, a'_n)
    g = 0.9
    partial = jnp.array([1 + g * 2 + g**2 * 3, 5.0])
    discounts = jnp.array([g**3, 0.0])  # the second chunk ends in a termination
    next_q = jnp.array([[0.5, 2.0, -1.0], [10.0, 20.0, 30.0]])
    expected = [1 + 1.8 + 2.43 + 0.729 * 2.0, 5.0]
    np.testing.assert_allclose(td_target(partial, discounts, next_q), expected, rtol=1e-6)
    # chosen by other (online) values, valued by next_q (target): row 0 picks chunk 0 -> 0.5
    choice = jnp.array([[3.0, 2.0, -1.0], [0.0, 0.0, 1.0]])
    expected = [1 + 1.8 + 2.43 + 0.729 * 0.5, 5.0]
    np.testing.assert_allclose(td_target(partial, discounts, next_q, choice), expected, rtol=1e-6)


def test_qc_targets_choose_the_next_chunk_with_the_online_critics_and_value_it_with_the_target_ones():
    rng = np.random.default_rng(0)
    n = 64
    obs = rng.standard_normal((n, 3)).astype(np.float32)
    ends = np.zeros(n)
    ends[31] = ends[63] = 1
    data = Dataset.from_arrays("t", observations=obs, actions=rng.uniform(-1, 1, (n, 2)), rewards=rng.standard_normal(n),
                               masks=np.ones(n), ends=ends, next_observations=obs + 1)
    agent = QC(QCConfig(hidden_dims=(16,), horizon=3, num_target_samples=5, target_action_flow_steps=2), 3, 2)
    old = QC(QCConfig(hidden_dims=(16,), horizon=3, num_target_samples=5, target_action_flow_steps=2,
                      target_selection="target"), 3, 2)
    state = agent.init(jax.random.PRNGKey(0))
    state["target_critic"] = agent.init(jax.random.PRNGKey(9))["critic"]  # target critics that disagree
    table = chunk_table(data, agent.config.discount, 3)
    batch = {k: v[:16] for k, v in table.items() if k != "valid_rows"}
    key = jax.random.PRNGKey(1)
    obs_n, chunks = agent.behaviour.sample_candidates(state["actor"], batch["bootstrap_observations"], key, 5, 2)
    target_q = np.asarray(agent.critic(state["target_critic"], obs_n, chunks)).mean(axis=0)
    online_q = np.asarray(agent.critic(state["critic"], obs_n, chunks)).mean(axis=0)
    partial, disc = np.asarray(batch["partial_returns"]), np.asarray(batch["bootstrap_discounts"])
    by_online = partial + disc * target_q[np.arange(16), online_q.argmax(axis=1)]
    np.testing.assert_allclose(np.asarray(agent.targets(state, batch, key)), by_online, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(old.targets(state, batch, key)), partial + disc * target_q.max(axis=1),
                               rtol=1e-5)
    assert np.any(online_q.argmax(axis=1) != target_q.argmax(axis=1))  # the two rules differ here
    assert chunks.shape == (16, 5, 6)


def test_fql_one_step_policy_raises_q_while_staying_near_the_behaviour_modes():
    # One state; behaviour actions at -0.5 or +0.5; reward = a (one-step episodes), so Q(s, a) = a on
    # the data. The learned critic also has an out-of-distribution bump between the modes (measured
    # Q(0) ~ 0.5): with alpha = 3 mu exploits it and leaves the modes; with alpha = 30 it does not
    # (measured: Q raised by 0.09, 91% of mu's actions near a mode against 93.5% for the flow).
    rng = np.random.default_rng(0)
    n = 4096
    actions = np.clip(np.where(rng.random(n) < 0.5, -0.5, 0.5) + 0.05 * rng.standard_normal(n), -1, 1)[:, None]
    obs = np.zeros((n, 1), np.float32)
    data = Dataset.from_arrays("bandit", observations=obs, actions=actions, rewards=actions[:, 0],
                               masks=np.zeros(n), ends=np.ones(n), next_observations=obs)
    agent = FQL(FQLConfig(hidden_dims=(64, 64), learning_rate=1e-3, alpha=30.0, discount=0.9), 1, 1)
    state = fit(agent, data, 3000, batch_size=256, seed=0)
    obs_eval = jnp.zeros((4000, 1))
    noise = jax.random.normal(jax.random.PRNGKey(3), (4000, 1))
    mu = np.asarray(agent.policy_actions(state["one_step"], obs_eval, noise))[:, 0]
    flow = np.asarray(agent.behaviour.sample_from_noise(state["actor"], obs_eval, noise, 10))[:, 0]
    q_mu = np.asarray(agent.critic(state["critic"], obs_eval, mu[:, None]).mean(0))
    q_flow = np.asarray(agent.critic(state["critic"], obs_eval, flow[:, None]).mean(0))
    assert q_mu.mean() > q_flow.mean() + 0.04, (q_mu.mean(), q_flow.mean())

    def near_mode(a):
        return np.mean(np.minimum(np.abs(a - 0.5), np.abs(a + 0.5)) < 0.3)

    assert near_mode(mu) > near_mode(flow) - 0.05, (near_mode(mu), near_mode(flow))


def test_fql_distillation_is_a_mean_over_action_dimensions():
    # The FQL paper's alpha (300 for cube) was tuned with a per-element mean: an offset of 1 in each
    # of 5 action dimensions costs 1, not 5; half the rows off by 2 in one dimension cost 4 / 5 / 2.
    from evor.agents.fql import distillation_loss

    assert float(distillation_loss(jnp.ones((4, 5)), jnp.zeros((4, 5)))) == pytest.approx(1.0)
    actions = jnp.zeros((4, 5)).at[:2, 0].set(2.0)
    assert float(distillation_loss(actions, jnp.zeros((4, 5)))) == pytest.approx(0.4)


@pytest.mark.parametrize("expectile, p", [(0.9, 0.3), (0.5, 0.3), (0.7, 0.8)])
def test_expectile_regression_matches_its_closed_form(expectile, p):
    # For targets in {0, 1} with P(1) = p, the tau-expectile is tau p / (tau p + (1 - tau)(1 - p)).
    targets = jnp.asarray(np.r_[np.ones(int(1000 * p)), np.zeros(1000 - int(1000 * p))])
    m = jnp.zeros(())
    opt = optax.adam(0.05)
    st = opt.init(m)
    grad = jax.jit(jax.grad(lambda m: expectile_loss(targets - m, expectile)))
    for _ in range(2000):
        updates, st = opt.update(grad(m), st)
        m = optax.apply_updates(m, updates)
    closed = expectile * p / (expectile * p + (1 - expectile) * (1 - p))
    assert float(m) == pytest.approx(closed, abs=2e-3)


def test_baseline_configs_are_validated():
    for bad in (QCConfig(horizon=0), FQLConfig(alpha=-1.0), IFQLConfig(expectile=1.0), QCConfig(discount=1.5)):
        with pytest.raises(ConfigError):
            bad.validate()


@pytest.mark.parametrize("cls, config_cls", [(FQL, FQLConfig), (IFQL, IFQLConfig)])
def test_value_baselines_take_their_critic_targets_along_trajectories(cls, config_cls):
    from evor.data.targets import multistep_targets

    data = Dataset.random(120, 3, 2, episode_length=30, seed=4)
    for horizon in (1, 10, 0):
        agent = cls(config_cls(hidden_dims=(8,), target_horizon=horizon), 3, 2)
        table = agent.make_table(data)
        expected = multistep_targets(data, agent.config.discount, horizon)
        np.testing.assert_allclose(np.asarray(table["bootstrap_discounts"]), expected.bootstrap_discounts)
        np.testing.assert_allclose(np.asarray(table["partial_returns"]), expected.partial_returns)
    with pytest.raises(ConfigError):
        config_cls(target_horizon=-1).validate()
