"""EVOR's return models (`return_model`: flow, mean, hl_gauss) on problems with known answers: the scalar
critic learns the exact mean, the histogram the exact distribution within its bin width, and each
model's Q* has the tilt's limits."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from evor.agents.evor import EVOR, RETURN_WEIGHTS, EVORConfig, InferenceSettings, ReturnScale
from evor.errors import ConfigError
from evor.toy import ChainMDP, distribution_moments, wasserstein1
from evor.train import fit

MDP = ChainMDP(num_states=3)


def _trained(return_model: str, **fields):
    config = EVORConfig(horizon=1, hidden_dims=(128, 128), discount=MDP.discount, num_return_flows=1, learning_rate=1e-3,
                        return_model=return_model, **fields)
    agent = EVOR(config, MDP.observation_dim, 1, ReturnScale.from_rewards(-1.0, 0.0, MDP.discount))
    state = fit(agent, MDP.dataset(20000, seed=0), 2500, batch_size=256, seed=0)
    return agent, state


def _state_actions():
    for s in range(MDP.num_states):
        for advance in (False, True):
            yield s, advance, jnp.asarray(MDP.observe(np.full(4000, s))), jnp.full((4000, 1), 0.5 if advance else -0.5)


def test_the_mean_model_learns_the_exact_mean_return():
    agent, state = _trained("mean")
    params = state[RETURN_WEIGHTS["ema"]]
    for s, advance, obs, act in _state_actions():
        value = float(agent.return_scale.from_unit(agent.return_model.value(params, obs[:1], act[:1]))[0, 0, 0])
        mean, _ = distribution_moments(*MDP.return_distribution(s, advance))
        assert abs(value - mean) <= 0.25, (s, advance, value, mean)  # returns span [-10, 0]


def test_the_histogram_model_matches_the_exact_distribution_within_its_bin_width():
    bins = 51
    agent, state = _trained("hl_gauss", return_bins=bins)
    params = state[RETURN_WEIGHTS["ema"]]
    bin_width = (agent.return_scale.high - agent.return_scale.low) / bins  # in return units
    key = jax.random.PRNGKey(5)
    for s, advance, obs, act in _state_actions():
        key, sub = jax.random.split(key)
        z = agent.sample_returns(params, obs, act, sub, 1, "euler")[0, :, 0]
        returns = np.asarray(agent.return_scale.from_unit(z))
        values, probs = MDP.return_distribution(s, advance)
        assert wasserstein1(returns, values, probs) <= bin_width, (s, advance)


@pytest.mark.parametrize("return_model", ["flow", "mean", "hl_gauss"])
def test_q_star_limits_of_every_return_model(return_model):
    # untrained parameters: the limits hold for any distribution the model represents
    agent = EVOR(EVORConfig(horizon=1, hidden_dims=(16,), return_model=return_model, return_bins=11), 3, 2,
                 ReturnScale(-1.0, 0.0))
    state = agent.init(jax.random.PRNGKey(0))
    obs, act = jax.random.normal(jax.random.PRNGKey(1), (4, 3)), jax.random.uniform(jax.random.PRNGKey(2), (4, 2))
    many = InferenceSettings(num_return_samples=4096, return_flow_steps=4)
    z = np.asarray(agent.sample_returns(state["target_return_flow"], jnp.repeat(obs[:, None], 4096, 1),
                                        jnp.repeat(act[:, None], 4096, 1), jax.random.PRNGKey(3), 4, "midpoint"))
    mean = z[..., 0].mean(axis=(0, 2))  # (E, observations, samples) -> per observation
    top = z[..., 0].max(axis=2).mean(axis=0)

    def q(tau):
        settings = dataclasses.replace(many, tau_q=tau)
        return np.asarray(agent.q_star(state, obs, act, jax.random.PRNGKey(4), settings))

    q_inf, q_big, q_zero = q(float("inf")), q(1e3), q(0.0)
    standard_error = z[..., 0].std() / np.sqrt(z[..., 0].size / obs.shape[0])
    np.testing.assert_allclose(q_inf, mean, atol=4 * standard_error + 1e-6)  # the mean, against a sampled mean
    np.testing.assert_allclose(q_big, q_inf, atol=1e-3)
    np.testing.assert_allclose(q_zero, top, atol=0.05)  # the largest of the samples
    if return_model == "hl_gauss":  # the exact tilt over the bins, by hand
        log_p = np.asarray(agent.return_model.log_probs(state["target_return_flow"], obs, act))  # (E, 4, bins)
        centers = np.asarray(agent.return_model.centers)
        assert log_p.shape == (2, 4, 11)
        for tau in (0.05, 0.5):
            by_hand = np.mean(tau * logsumexp(log_p + centers / tau, axis=-1), axis=0)
            np.testing.assert_allclose(q(tau), by_hand, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("return_model", ["mean", "hl_gauss"])
def test_the_sampled_tilt_reads_a_model_from_m_samples_like_the_flow(return_model):
    from evor.selection import soft_value

    agent = EVOR(EVORConfig(horizon=1, hidden_dims=(16,), return_model=return_model, return_bins=11), 3, 2,
                 ReturnScale(-1.0, 0.0))
    state = agent.init(jax.random.PRNGKey(0))
    obs, act = jax.random.normal(jax.random.PRNGKey(1), (4, 3)), jax.random.uniform(jax.random.PRNGKey(2), (4, 2))

    def q(tilt, tau, m=8, key=4):
        settings = InferenceSettings(num_return_samples=m, tau_q=tau, tilt=tilt)
        return np.asarray(agent.q_star(state, obs, act, jax.random.PRNGKey(key), settings))

    if return_model == "mean":  # a point mass: every readout is its value
        for tau in (0.05, 1.0, float("inf")):
            np.testing.assert_allclose(q("sampled", tau), q("exact", tau), rtol=1e-6)
        return
    # tau_Q = inf: the mean of many samples is the exact mean over the bins
    np.testing.assert_allclose(q("sampled", float("inf"), m=8192), q("exact", float("inf")), atol=0.02)
    # tau_Q = 0.05, M = 8: on average over draws, the flow's estimator applied to 8 of the model's own
    # samples (drawn here independently), which is not the exact tilt (it reads only what it samples).
    draws = 300
    sampled = np.mean([q("sampled", 0.05, key=k) for k in range(draws)], axis=0)
    params = state["target_return_flow"]
    z = agent.sample_returns(params, jnp.repeat(obs[:, None], draws * 8, 1), jnp.repeat(act[:, None], draws * 8, 1),
                             jax.random.PRNGKey(99), 1, "euler")[..., 0]  # (E, 4, draws * 8)
    by_hand = np.asarray(soft_value(z.reshape(z.shape[:2] + (draws, 8)), 0.05)).mean(axis=(0, 2))
    spread = np.asarray(soft_value(z.reshape(z.shape[:2] + (draws, 8)), 0.05)).std(axis=2).max()
    np.testing.assert_allclose(sampled, by_hand, atol=5 * spread / np.sqrt(draws))
    assert np.all(q("exact", 0.05) - by_hand > 5 * spread / np.sqrt(draws))  # the exact tilt reads higher


def test_hl_gauss_targets_are_a_normalised_gaussian_over_the_bins():
    agent = EVOR(EVORConfig(horizon=1, hidden_dims=(8,), return_model="hl_gauss", return_bins=20, return_bin_sigma=0.75), 1, 1,
                 ReturnScale(-1.0, 0.0))
    model = agent.return_model
    probs = np.asarray(model.target_probs(jnp.array([[0.0], [0.97], [-1.0]])))
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-6)
    centers = np.asarray(model.centers)
    assert abs(np.sum(probs[0] * centers)) < 1e-6  # symmetric around 0
    spread = np.sqrt(np.sum(probs[0] * centers ** 2))
    assert 0.075 < spread < 0.12  # sigma = 0.75 bins of 0.1, plus the bins' own width
    assert probs[1].argmax() == 19 and probs[2].argmax() == 0


def test_return_model_settings_are_validated():
    for bad in (dict(return_model="gaussian"), dict(return_bins=1), dict(return_bin_sigma=0.0)):
        with pytest.raises(ConfigError):
            EVORConfig(**bad).validate()
