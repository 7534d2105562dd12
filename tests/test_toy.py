"""The exact return distributions used by tests and benchmarks agree with direct simulation."""

import numpy as np
import pytest

from evor.toy import ChainMDP, ForkMDP, distribution_moments, wasserstein1


def _simulate_chain(mdp: ChainMDP, state: int, action: float, n: int, rng) -> np.ndarray:
    returns = np.zeros(n)
    for i in range(n):
        s, a, discount, total = state, action, 1.0, 0.0
        while True:
            s = s + 1 if a > 0 else s
            if s == mdp.num_states:
                total += discount * mdp._goal_reward(rng)
                break
            total -= discount
            discount *= mdp.discount
            a = mdp.behaviour_actions(rng, 1)[0, 0]
        returns[i] = total
    return returns


def _simulate_fork(mdp: ForkMDP, state: int, action: float, n: int, rng) -> np.ndarray:
    returns = np.zeros(n)
    for i in range(n):
        s, a, discount, total = state, action, 1.0, 0.0
        while True:
            s = mdp._step(s, a)
            if s == mdp.num_states:
                break
            total -= discount
            discount *= mdp.discount
            a = 0.5 if rng.random() < mdp.advance_probability else -0.5
        returns[i] = total
    return returns


@pytest.mark.parametrize("mdp", [ChainMDP(num_states=3), ChainMDP(num_states=2, goal_rewards=((-5.0, 0.5), (5.0, 0.5))),
                                 ForkMDP()])
def test_exact_distributions_match_simulation(mdp):
    rng = np.random.default_rng(0)
    simulate = _simulate_fork if isinstance(mdp, ForkMDP) else _simulate_chain
    for state, action, label in mdp.state_actions():
        values, probs = mdp.exact(state, action)
        assert probs.sum() == pytest.approx(1.0)
        samples = simulate(mdp, state, action, 20000, rng)
        mean, std = distribution_moments(values, probs)
        assert abs(samples.mean() - mean) < 4 * max(std, 1e-3) / np.sqrt(len(samples)) + 1e-9, label
        assert wasserstein1(samples, values, probs) < 0.05, label


def test_wasserstein_of_known_shift_and_of_identical_distributions():
    values, probs = np.array([0.0, 1.0]), np.array([0.5, 0.5])
    assert wasserstein1(np.array([0.0, 1.0]), values, probs) == pytest.approx(0.0)
    assert wasserstein1(np.array([0.5, 1.5]), values, probs) == pytest.approx(0.5)
    assert wasserstein1(np.array([1.0, 1.0]), values, probs) == pytest.approx(0.5)


def test_chain_dataset_follows_its_dynamics_and_reward_conventions():
    mdp = ChainMDP(num_states=3)
    d = mdp.dataset(2000, seed=1)
    s, s2 = d.observations.argmax(1), d.next_observations.argmax(1)
    advance = d.actions[:, 0] > 0
    np.testing.assert_array_equal(s2, np.where(advance, s + 1, s))
    goal = s2 == mdp.num_states
    np.testing.assert_array_equal(d.masks, (~goal).astype(np.float32))
    np.testing.assert_array_equal(d.rewards, np.where(goal, 0.0, -1.0))
