"""Small problems with known answers, for tests and calibration benchmarks.

`ChainMDP`: states 0..K-1 and an absorbing goal K. The behaviour policy advances (a ~ +0.5) with
probability p and stays (a ~ -0.5) otherwise; any a > 0 advances. Reward is -1 per step, 0 on the
step that reaches the goal, which terminates (mask 0); these are OGBench's single-task reward
conventions. From (s, a) the return is G = -(1 - gamma^T) / (1 - gamma), T the number of behaviour
steps from s' to the goal (the step (s, a) itself costs -1, the last of the T steps costs 0) (a sum of K - s' geometric variables), so Z(s, a) is known exactly.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from evor.data.dataset import Dataset


@dataclasses.dataclass(frozen=True)
class ChainMDP:
    num_states: int = 3
    advance_probability: float = 0.5
    discount: float = 0.9
    action_noise: float = 0.1
    max_steps: int = 600  # truncation of the exact distribution (its tail mass is reported)

    @property
    def observation_dim(self) -> int:
        return self.num_states + 1

    def observe(self, state: np.ndarray) -> np.ndarray:
        return np.eye(self.num_states + 1, dtype=np.float32)[state]

    def behaviour_actions(self, rng: np.random.Generator, size: int) -> np.ndarray:
        advance = rng.random(size) < self.advance_probability
        a = np.where(advance, 0.5, -0.5) + self.action_noise * rng.standard_normal(size)
        return np.clip(a, -1, 1).astype(np.float32)[:, None]

    def hitting_time_pmf(self, state: int) -> np.ndarray:
        """pmf[t] = P(T = t): steps the behaviour policy needs from `state` to reach the goal."""
        p = self.advance_probability
        one = np.zeros(self.max_steps + 1)
        t = np.arange(1, self.max_steps + 1)
        one[1:] = p * (1 - p) ** (t - 1)  # geometric number of trials to advance once
        pmf = np.zeros(self.max_steps + 1)
        pmf[0] = 1.0
        for _ in range(self.num_states - state):
            pmf = np.convolve(pmf, one)[: self.max_steps + 1]
        return pmf

    def return_distribution(self, state: int, advance: bool) -> tuple[np.ndarray, np.ndarray]:
        """Exact Z(s, a): (values, probabilities); a truncated tail is placed at the lowest return."""
        next_state = min(state + 1, self.num_states) if advance else state
        if next_state == self.num_states:
            return np.array([0.0]), np.array([1.0])
        pmf = self.hitting_time_pmf(next_state)
        t = np.arange(len(pmf))
        values = -(1 - self.discount**t) / (1 - self.discount)  # -1 for each of T steps but the last
        probs = pmf.copy()
        probs[-1] += max(0.0, 1.0 - pmf.sum())
        keep = probs > 0
        return values[keep], probs[keep]

    def dataset(self, num_transitions: int, seed: int = 0, episode_steps: int = 50) -> Dataset:
        """Behaviour-policy episodes from uniform start states; cut after `episode_steps` steps."""
        rng = np.random.default_rng(seed)
        obs, acts, rews, masks, ends, next_obs = [], [], [], [], [], []
        count = 0
        while count < num_transitions:
            state = int(rng.integers(self.num_states))
            for step in range(episode_steps):
                action = self.behaviour_actions(rng, 1)[0]
                next_state = state + 1 if action[0] > 0 else state
                done = next_state == self.num_states
                obs.append(state), acts.append(action), next_obs.append(next_state)
                rews.append(0.0 if done else -1.0), masks.append(0.0 if done else 1.0)
                ends.append(1.0 if done or step == episode_steps - 1 else 0.0)
                count += 1
                state = next_state
                if done:
                    break
        return Dataset.from_arrays(
            "chain-mdp", observations=self.observe(np.array(obs)), actions=np.array(acts),
            rewards=np.array(rews), masks=np.array(masks), ends=np.array(ends),
            next_observations=self.observe(np.array(next_obs)))


def wasserstein1(samples: np.ndarray, values: np.ndarray, probs: np.ndarray) -> float:
    """W1 between an empirical sample and a discrete distribution: the integral of |F_a - F_b|."""
    samples = np.sort(np.asarray(samples, np.float64).ravel())
    grid = np.union1d(samples, values)
    f_samples = np.searchsorted(samples, grid, side="right") / len(samples)
    order = np.argsort(values)
    cdf = np.cumsum(np.asarray(probs, np.float64)[order])
    f_exact = np.concatenate([[0.0], cdf])[np.searchsorted(np.asarray(values)[order], grid, side="right")]
    return float(np.sum(np.abs(f_samples - f_exact)[:-1] * np.diff(grid)))


def distribution_moments(values: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    mean = float(np.sum(values * probs))
    return mean, float(np.sqrt(np.sum(probs * (values - mean) ** 2)))
