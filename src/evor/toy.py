"""Small problems with known answers, for tests and calibration benchmarks.

`ChainMDP`: states 0..K-1 and an absorbing goal K. The behaviour policy advances (a ~ +0.5) with
probability p and stays (a ~ -0.5) otherwise; any a > 0 advances. Reward is -1 per step, 0 on the
step that reaches the goal, which terminates (mask 0); these are OGBench's single-task reward
conventions. From (s, a) the return is G = -(1 - gamma^T) / (1 - gamma), T the number of behaviour
steps from s' to the goal (the step (s, a) itself costs -1, the last of the T steps costs 0; T is a sum
of K - s' geometric variables), so Z(s, a) is known exactly.
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
    goal_rewards: tuple[tuple[float, float], ...] = ((0.0, 1.0),)  # (value, probability) on reaching the goal

    @property
    def reward_bounds(self) -> tuple[float, float]:
        values = [v for v, _ in self.goal_rewards] + [-1.0]
        return min(values), max(values)

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
            pmf = np.array([1.0])  # the step (s, a) itself reaches the goal
            steps = np.array([1])
        else:
            pmf = self.hitting_time_pmf(next_state)
            pmf[-1] += max(0.0, 1.0 - pmf.sum())  # truncated tail, at the longest time
            steps = np.arange(len(pmf)) + 1  # steps until (and including) the goal-reaching one
        # -1 for every step before the goal-reaching one, then the goal reward, discounted gamma^(steps-1)
        g = self.discount
        before = -(1 - g ** (steps - 1)) / (1 - g)
        values = np.concatenate([before + g ** (steps - 1) * v for v, _ in self.goal_rewards])
        probs = np.concatenate([pmf * p for _, p in self.goal_rewards])
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
                rews.append(self._goal_reward(rng) if done else -1.0), masks.append(0.0 if done else 1.0)
                ends.append(1.0 if done or step == episode_steps - 1 else 0.0)
                count += 1
                state = next_state
                if done:
                    break
        return Dataset.from_arrays(
            "chain-mdp", observations=self.observe(np.array(obs)), actions=np.array(acts),
            rewards=np.array(rews), masks=np.array(masks), ends=np.array(ends),
            next_observations=self.observe(np.array(next_obs)))


    def _goal_reward(self, rng: np.random.Generator) -> float:
        values, probs = zip(*self.goal_rewards)
        return float(rng.choice(values, p=probs))

    def state_actions(self) -> list[tuple[int, float, str]]:
        """(state, representative action, label) for every state-action pair with a distinct Z."""
        return [(s, a, f"s{s} {'advance' if a > 0 else 'stay'}") for s in range(self.num_states) for a in (-0.5, 0.5)]

    def exact(self, state: int, action: float):
        return self.return_distribution(state, action > 0)

    def action_matters(self, state: int) -> bool:
        return True  # advance or stay, in every state


@dataclasses.dataclass(frozen=True)
class ForkMDP:
    """A bimodal return: start -> fork; at the fork pi_ref goes to the goal at once (a > 0, prob p) or
    down a corridor of `corridor` forced steps. Rewards -1 per step, 0 on reaching the goal.

    Z(start, a) is a two-atom mixture: -1 (then goal) or -(1 - gamma^(corridor + 2)) / (1 - gamma).
    States: 0 start, 1 fork, 2..corridor+1 corridor; observations one-hot.
    """

    corridor: int = 8
    advance_probability: float = 0.5
    discount: float = 0.9
    action_noise: float = 0.1
    reward_bounds: tuple[float, float] = (-1.0, 0.0)

    @property
    def num_states(self) -> int:
        return self.corridor + 2

    @property
    def observation_dim(self) -> int:
        return self.num_states + 1  # + the goal

    def observe(self, state):
        return np.eye(self.num_states + 1, dtype=np.float32)[state]

    def _step(self, state: int, action: float) -> int:
        goal = self.num_states
        if state == 0:
            return 1
        if state == 1:
            return goal if action > 0 else 2
        return state + 1 if state + 1 < self.num_states else goal

    def _path_return(self, state: int, action: float, branch_goal: bool) -> float:
        g, total, discount, goal = self.discount, 0.0, 1.0, self.num_states
        a = action
        while True:
            nxt = self._step(state, a)
            if nxt == goal:
                return total
            total += -1.0 * discount
            discount *= g
            state = nxt
            a = 0.5 if (state != 1 or branch_goal) else -0.5

    def exact(self, state: int, action: float):
        nxt = self._step(state, action)
        if nxt == 1 or state == 0:
            p = self.advance_probability
            return (np.array([self._path_return(state, action, True), self._path_return(state, action, False)]),
                    np.array([p, 1 - p]))
        return np.array([self._path_return(state, action, False)]), np.array([1.0])

    def action_matters(self, state: int) -> bool:
        return state == 1  # only the fork chooses; elsewhere every action moves on

    def state_actions(self):
        return [(0, 0.5, "start"), (1, 0.5, "fork->goal"), (1, -0.5, "fork->corridor"), (2, 0.5, "corridor[0]"),
                (self.num_states - 1, 0.5, "corridor[end]")]

    def dataset(self, num_transitions: int, seed: int = 0, episode_steps: int = 50) -> Dataset:
        rng = np.random.default_rng(seed)
        obs, acts, rews, masks, ends, next_obs = [], [], [], [], [], []
        goal = self.num_states
        while len(obs) < num_transitions:
            state = int(rng.integers(self.num_states))
            for step in range(episode_steps):
                advance = rng.random() < self.advance_probability
                a = float(np.clip((0.5 if advance else -0.5) + self.action_noise * rng.standard_normal(), -1, 1))
                nxt = self._step(state, a)
                done = nxt == goal
                obs.append(state), acts.append([a]), next_obs.append(nxt)
                rews.append(0.0 if done else -1.0), masks.append(0.0 if done else 1.0)
                ends.append(1.0 if done or step == episode_steps - 1 else 0.0)
                state = nxt
                if done:
                    break
        return Dataset.from_arrays("fork-mdp", observations=self.observe(np.array(obs)),
                                   actions=np.array(acts, np.float32), rewards=np.array(rews),
                                   masks=np.array(masks), ends=np.array(ends),
                                   next_observations=self.observe(np.array(next_obs)))


def wasserstein1(samples: np.ndarray, values: np.ndarray, probs: np.ndarray) -> float:
    """W1 between an empirical sample and a discrete distribution: the integral of |F_a - F_b|."""
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(np.asarray(samples, np.float64).ravel(), np.asarray(values, np.float64),
                                      v_weights=np.asarray(probs, np.float64)))


def distribution_moments(values: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    mean = float(np.sum(values * probs))
    return mean, float(np.sqrt(np.sum(probs * (values - mean) ** 2)))
