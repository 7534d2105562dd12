"""Return-distribution diagnostics on synthetic models whose calibration is known."""

import math

import jax
import numpy as np
import pytest

from evor.agents.evor import ReturnScale
from evor.data.dataset import Dataset
from evor.diagnostics import crps, distribution_scores, monte_carlo_rows, ranking_scores, spearman_rows, tilt_summary
from evor.errors import EvorError


def _normal_cdf(x):
    return 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def test_crps_matches_the_pairwise_definition_and_the_normal_closed_form():
    rng = np.random.default_rng(0)
    samples, observed = rng.normal(size=(5, 7)), rng.normal(size=5)
    brute = [np.abs(s - g).mean() - np.abs(s[:, None] - s[None, :]).mean() / 2 for s, g in zip(samples, observed)]
    np.testing.assert_allclose(crps(samples, observed), brute, rtol=1e-12, atol=1e-12)
    # CRPS(N(0, 1), y) = y (2 Phi(y) - 1) + 2 phi(y) - 1 / sqrt(pi)  (Gneiting & Raftery 2007)
    y = np.array([-1.5, 0.0, 0.7, 2.0])
    exact = y * (2 * _normal_cdf(y) - 1) + 2 * np.exp(-y ** 2 / 2) / np.sqrt(2 * np.pi) - 1 / np.sqrt(np.pi)
    big = np.sort(rng.normal(size=20_000))
    np.testing.assert_allclose(crps(np.tile(big, (4, 1)), y), exact, atol=0.01)
    # A point mass scores its absolute error.
    np.testing.assert_allclose(crps(np.full((1, 9), 2.0), np.array([5.0])), [3.0])


def _synthetic(spread: float, bias: float = 0.0, n: int = 3000, k: int = 200, seed: int = 1):
    """Observed G_i ~ N(mu_i, sigma_i); model samples ~ N(mu_i + bias, spread * sigma_i)."""
    rng = np.random.default_rng(seed)
    mu, sigma = rng.uniform(-50, -5, n), rng.uniform(1, 8, n)
    observed = rng.normal(mu, sigma)
    samples = rng.normal((mu + bias)[:, None], (spread * sigma)[:, None], size=(n, k))
    return samples, observed


def test_a_calibrated_model_has_a_flat_pit_and_nominal_coverage():
    scores = distribution_scores(*_synthetic(spread=1.0))
    assert np.all(np.abs(np.array(scores["pit_histogram"]) - 0.1) < 0.025), scores["pit_histogram"]
    assert scores["pit_ks"] < 0.04
    for level, covered in scores["coverage"].items():
        assert abs(covered - int(level) / 100) < 0.03, (level, covered)
    assert abs(scores["pit_tails"] - 0.10) < 0.025
    assert abs(scores["bias"]) < 0.3


def test_an_overconfident_model_is_detected():
    calibrated = distribution_scores(*_synthetic(spread=1.0))
    narrow = distribution_scores(*_synthetic(spread=0.4))
    histogram = np.array(narrow["pit_histogram"])
    assert histogram[0] > 2 * histogram[4:6].mean() and histogram[-1] > 2 * histogram[4:6].mean()  # U shape
    assert narrow["coverage"]["90"] < 0.55 and narrow["pit_tails"] > 0.35
    assert narrow["pit_ks"] > 0.1
    assert narrow["crps"] > calibrated["crps"]  # a proper score prefers the right spread


def test_a_biased_model_shows_a_pit_slope_and_a_bias():
    scores = distribution_scores(*_synthetic(spread=1.0, bias=3.0))
    histogram = np.array(scores["pit_histogram"])
    assert histogram[:3].sum() > 2 * histogram[-3:].sum()  # the model sits too high: G falls low in it
    assert scores["bias"] == pytest.approx(3.0, abs=0.3)


def test_tilt_summary_matches_the_gaussian_closed_form_per_ensemble_member():
    """For Z ~ N(mu, sigma^2) in unit scale, tau log E exp(Z / tau) = mu + sigma^2 / (2 tau). Two members
    with means 10 raw units apart: Q* is averaged over members, each tilted on its own samples."""
    rng = np.random.default_rng(0)
    n, k, mu, sigma, tau = 200, 4000, -30.0, 0.05, 0.05  # mu raw; sigma and tau in unit scale
    scale = ReturnScale(low=-100.0, high=100.0)  # unit = raw / 100
    members = [mu + 100.0 * sigma * rng.standard_normal((n, k)), mu + 10.0 + 100.0 * sigma * rng.standard_normal((n, k))]
    samples = np.concatenate(members, axis=1)  # member-major, as return_samples gives them
    tilt = tilt_summary(samples, scale, tau, num_return_samples=8, num_members=2)
    exact = mu + 5.0 + 100.0 * sigma**2 / (2 * tau)  # member mean, plus 2.5 raw units of tilt
    assert tilt["q_star_all_samples_mean"] == pytest.approx(exact, abs=0.2)
    assert mu + 5.0 + 0.3 < tilt["q_star_mean"] < exact - 0.3  # 8 samples: above the mean, below the tilt
    assert tilt["num_return_samples"] == 8
    mean = tilt_summary(samples, scale, float("inf"), 8, 2)
    assert mean["q_star_all_samples_mean"] == pytest.approx(samples.mean(), abs=1e-3)


def test_monte_carlo_rows_keep_returns_known_to_within_the_tail_weight():
    # Episode A: 3 steps ending in a termination (mask 0) -> every return-to-go is exact.
    # Episode B: 3 steps cut off (end without termination) -> tails gamma^3, gamma^2, gamma^1.
    rewards = np.array([1, 2, 3, 1, 1, 1], np.float32)
    masks = np.array([1, 1, 0, 1, 1, 1], np.float32)
    ends = np.array([0, 0, 1, 0, 0, 1], np.float32)
    obs = np.arange(12, dtype=np.float32).reshape(6, 2)
    data = Dataset.from_arrays("hand", observations=obs, next_observations=obs + 1, actions=np.zeros((6, 1)),
                               rewards=rewards, masks=masks, ends=ends)
    rows, returns = monte_carlo_rows(data, discount=0.5, max_tail=0.2)
    # Tails: A all 0; B 0.125, 0.25, 0.5 -> only B's first row passes 0.2.
    np.testing.assert_array_equal(rows, [0, 1, 2, 3])
    np.testing.assert_allclose(returns, [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3, 1 + 0.5 + 0.25])


def test_chunked_agents_are_diagnosed_on_recorded_chunks_that_fit_their_trajectory():
    from evor.diagnostics import with_actions

    masks = np.array([1, 1, 0, 1, 1, 1], np.float32)
    ends = np.array([0, 0, 1, 0, 0, 1], np.float32)
    obs = np.arange(6, dtype=np.float32)[:, None]
    actions = np.arange(6, dtype=np.float32)[:, None] / 10
    data = Dataset.from_arrays("hand", observations=obs, next_observations=obs + 1, actions=actions,
                               rewards=np.ones(6, np.float32), masks=masks, ends=ends)
    rows, returns = monte_carlo_rows(data, discount=0.5, max_tail=1.0)
    kept, kept_returns, chunks = with_actions(data, rows, returns, 2, 0.5)
    np.testing.assert_array_equal(kept, [0, 1, 2, 3, 4])  # row 5's chunk would run past the cut
    np.testing.assert_allclose(kept_returns, returns[:5])
    np.testing.assert_allclose(chunks, [[0.0, 0.1], [0.1, 0.2], [0.2, 0.2], [0.3, 0.4], [0.4, 0.5]])
    _, _, single = with_actions(data, rows, returns, 1, 0.5)
    np.testing.assert_allclose(single, actions)


def _readouts(signal: float, noise: float, states: int = 40_000, candidates: int = 2, seed: int = 3):
    """Reference values ~ N(0, signal) per candidate; two readouts = reference + independent N(0, noise)."""
    rng = np.random.default_rng(seed)
    reference = rng.normal(0, signal, (states, candidates))
    return (reference, reference + rng.normal(0, noise, reference.shape),
            reference + rng.normal(0, noise, reference.shape))


def test_ranking_of_two_candidates_matches_the_bivariate_normal_closed_form():
    # With two candidates the readout picks the reference's best when the sign of their difference
    # survives the noise: P = 1/2 + arcsin(rho) / pi, rho = signal / sqrt(signal^2 + noise^2) (Sheppard).
    # Two readouts agree with each other: rho' = signal^2 / (signal^2 + noise^2).
    for signal, noise in ((1.0, 0.5), (1.0, 1.0), (0.5, 2.0)):
        scores = ranking_scores(*_readouts(signal, noise))
        rho = signal / math.hypot(signal, noise)
        assert abs(scores["top1"] - (0.5 + math.asin(rho) / math.pi)) < 0.01, (signal, noise, scores)
        assert abs(scores["repeat_top1"] - (0.5 + math.asin(rho ** 2) / math.pi)) < 0.01
        # per state: the std of two N(0, s^2) values is |x1 - x2| / 2, mean s / sqrt(pi); the noise estimate
        # sqrt((d1^2 + d2^2) / 4) with d ~ N(0, 2 n^2) has mean n sqrt(pi) / 2
        assert abs(scores["spread"] - signal / math.sqrt(math.pi)) < 0.01 * signal
        assert abs(scores["noise"] - noise * math.sqrt(math.pi) / 2) < 0.01 * noise


def test_a_noiseless_readout_ranks_as_its_reference_and_noise_costs_regret():
    reference, _, _ = _readouts(1.0, 0.0, states=2000, candidates=16)
    exact = ranking_scores(reference, reference, reference)
    assert exact["top1"] == exact["repeat_top1"] == 1.0 and exact["regret"] == 0.0
    assert exact["noise"] == 0.0 and exact["signal_to_noise"] is None
    assert abs(exact["rank_correlation"] - 1.0) < 1e-12
    # E[std over 16 draws of N(0, 1)] = sqrt(15 / 16) c4(16) = 0.968 * 0.9835
    assert abs(exact["spread"] - 0.952) < 0.02
    # Gaussian readouts: E[reference | readout] = readout / (1 + n^2), so the pick's reference value is
    # E[max of 16 readouts] / (1 + n^2) = 1.766 / sqrt(1 + n^2), and regret = 1.766 (1 - 1 / sqrt(1 + n^2)),
    # with 1.766 = E[max of 16 N(0, 1)]: from 0 without noise to a random pick's 1.766.
    for noise in (0.1, 1.0, 10.0):
        regret = ranking_scores(*_readouts(1.0, noise, states=20_000, candidates=16))["regret"]
        assert abs(regret - 1.766 * (1 - 1 / math.hypot(1, noise))) < 0.02, (noise, regret)
    with pytest.raises(ValueError, match="states, candidates >= 2"):
        ranking_scores(reference[:, :1], reference[:, :1], reference[:, :1])


def test_spearman_rows_on_orders_with_known_correlations():
    a = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0], [0.1, 0.4, 0.2, 0.3]])
    b = np.array([[10.0, 20.0, 30.0, 40.0], [4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0], [1.0, 4.0, 2.0, 3.0]])
    np.testing.assert_allclose(spearman_rows(a, b), [1.0, -1.0, 0.0, 1.0])
    # ranks (0, 1, 3, 2) vs (0, 1, 2, 3): 1 - 6 * sum d^2 / (n (n^2 - 1)) = 1 - 12 / 60
    np.testing.assert_allclose(spearman_rows(np.array([[1.0, 2.0, 4.0, 3.0]]), np.array([[1.0, 2.0, 3.0, 4.0]])), [0.8])
    # ties share their average rank: (1.5, 1.5, 3, 4) against (1, 2, 3, 4)
    tied = np.array([1.5, 1.5, 3, 4]) - 2.5
    expected = (tied * (np.arange(1, 5) - 2.5)).sum() / np.sqrt((tied ** 2).sum() * 5)
    np.testing.assert_allclose(spearman_rows(np.array([[7.0, 7.0, 8.0, 9.0]]), np.array([[1.0, 2.0, 3.0, 4.0]])), [expected])


def test_maze_detour_splits_the_start_cells_returns_by_the_actions_heading(benchmark_script):
    """benchmarks/maze_detour.py on a hand-made dataset with known Monte-Carlo returns (discount 0.5): a
    trajectory heading for the goal that succeeds at its third step, one heading away that is cut after
    two, and a transition outside the start cell that must be left out."""
    import types

    maze_detour = benchmark_script("maze_detour")

    obs = np.array([[16, 20], [15, 20], [14.5, 20], [17, 21], [18, 21], [0, 0]], np.float32)
    dataset = Dataset.from_arrays(
        "toy", observations=obs, next_observations=obs,
        actions=np.array([[-1, 0], [-1, 0], [-1, 0], [1, 0], [1, 0.5], [-1, 0]], np.float32),
        rewards=np.array([-1, -1, 0, -1, -1, 0], np.float32),
        masks=np.array([1, 1, 0, 1, 1, 0], np.float32),  # the first trajectory ends in success
        ends=np.array([0, 0, 1, 0, 1, 1], np.float32))
    maze = types.SimpleNamespace(cur_task_info={"init_xy": (16.0, 20.0), "goal_xy": (0.0, 20.0)}, _maze_unit=4.0)
    facts = maze_detour.start_cell_returns(types.SimpleNamespace(unwrapped=maze), dataset, discount=0.5)
    towards, away = facts["rows"]["towards the goal"], facts["rows"]["away from the goal"]
    assert towards["transitions"] == 3 and away["transitions"] == 1  # (18, 21) is on the cell's edge: out
    assert towards["mean"] == pytest.approx((-1.5 - 1.0 + 0.0) / 3)  # -1 - 0.5 * 1, -1, 0
    assert away["mean"] == pytest.approx(-1.5)  # cut, not ended: the partial return -1 + 0.5 * -1
    assert len(facts["cell_xy"]) == 4


def test_maze_detour_runs_a_chunked_policys_chunks_open_loop(benchmark_script):
    """A QC-5-like run: one policy call per chunk of 3 actions, the chunk's actions executed in order,
    and the path, end point and pinned share read from the states the environment returned."""
    import types

    class LineEnv:  # x moves by the action's first coordinate; never succeeds
        unwrapped = types.SimpleNamespace(xy_to_ij=lambda xy: (int(xy[0]), int(xy[1])))

        def reset(self, seed):
            self.xy, self.actions = np.zeros(2), []
            return self.xy.copy(), {}

        def step(self, action):
            self.actions.append(np.asarray(action).copy())
            self.xy = self.xy + np.array([action[0], 0.0])
            return self.xy.copy(), -1.0, False, False, {"success": False}

        def close(self):
            pass

    env, calls = LineEnv(), []

    def policy(obs, key):
        calls.append(obs.copy())
        return np.array([[1.0, 0.0, 2.0, 0.0, 3.0, 0.0]])  # actions (1, 0), (2, 0), (3, 0)

    run = types.SimpleNamespace(agent=types.SimpleNamespace(action_horizon=3), config=types.SimpleNamespace(seed=0),
                                make_env=lambda: env, policy=lambda settings: policy, settings=lambda: None)
    (episode,) = benchmark_script("maze_detour").rollouts(run, episodes=1, max_steps=7)
    assert len(calls) == 3  # chunks start at steps 0, 3 and 6
    np.testing.assert_allclose(calls[1][0], [6.0, 0.0])  # after 1 + 2 + 3
    np.testing.assert_allclose([a[0] for a in env.actions], [1, 2, 3, 1, 2, 3, 1])
    assert episode["steps"] == 7 and not episode["success"]
    np.testing.assert_allclose(episode["final"], [13.0, 0.0])
    assert episode["final_cell"] == (13, 0) and episode["pinned_share"] == pytest.approx(1 / 7)


def test_maze_detour_reads_q_star_by_heading_on_the_return_scale(benchmark_script):
    """A fake EVOR run whose unit-scale Q* is the action's x component: +x scores highest, -x lowest,
    the diagonals in between, mapped to returns through the run's ReturnScale; no Q*, no reading."""
    import types

    import jax.numpy as jnp

    def q_star(state, obs, actions, key, settings):
        assert obs.shape == (8, 2) and np.allclose(obs, [16.0, 20.0])
        return jnp.asarray(actions)[:, 0]

    scale = ReturnScale.from_rewards(-1.0, 0.0, 0.99)  # unit -1..1 is return -100..0
    run = types.SimpleNamespace(agent=types.SimpleNamespace(q_star=q_star, return_scale=scale), state=None,
                                settings=lambda: None)
    maze_detour = benchmark_script("maze_detour")
    values = maze_detour.heading_values(run, (16.0, 20.0), keys=2)
    assert values["+x"] == pytest.approx(0.0) and values["-x"] == pytest.approx(-100.0)
    assert values["+x+y"] == pytest.approx(values["+x-y"]) == pytest.approx(-50 + 50 * np.sqrt(0.5), abs=1e-4)
    assert values["+y"] == pytest.approx(-50.0, abs=1e-4)
    assert maze_detour.heading_values(types.SimpleNamespace(agent=object()), (0.0, 0.0)) is None


def test_checkpoint_swap_acts_with_one_steps_pi_ref_and_the_others_value_model(benchmark_script, tmp_path):
    """A fake agent whose action is 10 x its actor weight + its value weight: the mix of run A's pi_ref
    with run B's value model acts as 10 * a + b, and neither run is changed by the mixing."""
    import jax
    import jax.numpy as jnp

    from evor.train import Run

    class Agent:
        def act(self, state, obs, key, settings):
            return jnp.full((obs.shape[0], 1), 10.0 * state["actor"] + state["return_flow"])

    def run(actor, value):
        state = {"actor": jnp.float32(actor), "return_flow": jnp.float32(value), "target_return_flow": jnp.float32(value)}
        return Run(tmp_path, None, Agent(), state, 0)

    swap = benchmark_script("checkpoint_swap")
    run_a, run_b = run(1.0, 2.0), run(3.0, 4.0)
    obs, key = np.zeros((2, 3), np.float32), jax.random.PRNGKey(0)
    np.testing.assert_allclose(run_b.policy(None)(obs, key), 34.0)  # compiled before mixing: no stale cache
    np.testing.assert_allclose(swap.mixed(run_a, run_b).policy(None)(obs, key), 14.0)  # a's pi_ref, b's values
    np.testing.assert_allclose(swap.mixed(run_b, run_a).policy(None)(obs, key), 32.0)
    np.testing.assert_allclose(run_a.policy(None)(obs, key), 12.0)
    np.testing.assert_allclose(run_b.policy(None)(obs, key), 34.0)


def test_checkpoint_swap_remembers_each_episodes_last_observation_by_its_reset_seed(benchmark_script):
    class CountingEnv:
        def reset(self, seed=None):
            self.t = seed * 100
            return np.array([self.t, 0.0]), {}

        def step(self, action):
            self.t += 1
            return np.array([self.t, 0.0]), -1.0, False, False, {}

    swap = benchmark_script("checkpoint_swap")
    env = swap._Recording(CountingEnv())
    env.reset(seed=7)
    assert swap.LAST_XY[7][0] == 700  # an episode with no step ends where it started
    for _ in range(3):
        env.step(None)
    env.reset(seed=8)
    env.step(None)
    assert swap.LAST_XY[7][0] == 703 and swap.LAST_XY[8][0] == 801


def test_checkpoint_swap_lists_each_reads_solved_episodes_by_index(benchmark_script):
    swap = benchmark_script("checkpoint_swap")
    assert swap.solved_episodes({"per_episode_success": [0.0, 1.0, 0.0, 1.0, 1.0]}) == "1, 3, 4"
    assert swap.solved_episodes({"per_episode_success": [0.0, 0.0]}) == "none"


def test_checkpoint_swap_counts_the_datas_chunks_near_a_state_by_heading(benchmark_script):
    """Two-action chunks, discount 0.5, a radius of 1 around (0, 0): the chunk from row 0 moves +x, and
    its return is its trajectory's, cut after row 2: -1 - 0.5 - 0.25; the chunk from row 3 moves +y and
    returns -1 + 0.5 * 0 (the episode ends in success at row 4); the one from row 2 would cross into the
    next trajectory and is left out; rows 1 and 4 start too far away."""
    swap = benchmark_script("checkpoint_swap")
    obs = np.array([[0, 0], [3, 0], [0.5, 0], [0, 0.5], [0, 1]], np.float32)
    dataset = Dataset.from_arrays(
        "toy", observations=obs, next_observations=obs,
        actions=np.array([[1, 0], [1, 0.5], [0, 1], [0.2, 1], [0, 1]], np.float32),
        rewards=np.array([-1, -1, -1, -1, 0], np.float32),
        masks=np.array([1, 1, 1, 1, 0], np.float32),
        ends=np.array([0, 0, 1, 0, 1], np.float32))
    rows = {name: (count, mean) for name, count, mean in
            swap.data_chunks_near(dataset, 0.5, 2, np.array([[0.0, 0.0]]), radius=1.0)}
    assert rows["+x"] == (1, pytest.approx(-1.75)) and rows["+y"] == (1, pytest.approx(-1.0))
    assert rows["-x"] == (0, None) and rows["-y"] == (0, None)


class _LineEnv:
    """x moves by the action's first coordinate, the reward is x after the step, success at x >= 3."""

    def reset(self, seed=None):
        self.x = 0.0
        return np.array([self.x], np.float32), {}

    def step(self, action):
        self.x += float(action[0])
        return np.array([self.x], np.float32), self.x, self.x >= 3, False, {"success": float(self.x >= 3)}

    def close(self):
        pass


def test_candidate_outcomes_rolls_each_candidate_then_the_reference_policy(benchmark_script):
    """Two candidate chunks of 2 actions, 2 rollouts each, then a reference policy that moves +1 per
    step: the discounted returns by hand, the task finished by the candidate that gets to x = 3."""
    from evor.evaluate import EnvPool

    outcomes = benchmark_script("candidate_outcomes")
    pool = EnvPool(_LineEnv, 6)  # larger than a turn needs: the script rolls candidates out in turns
    outcomes.restore(pool, 4, 0, np.array([[1.0]]), np.array([1.0], np.float32))  # slots 0-3 at x = 1
    candidates = np.array([[1.0, 1.0], [-1.0, 0.0]])  # chunk of 2 one-dimensional actions each
    forward = lambda obs, keys: np.ones((len(obs), 2))  # noqa: E731  (the reference policy: +1, +1)
    returns, finished = outcomes.rollouts(pool, forward, candidates, 2, np.array([1.0], np.float32),
                                          jax.random.PRNGKey(0), 2, 4, discount=0.5)
    # candidate 0: x = 2, 3 (done at 3): 2 + 0.5 * 3; candidate 1: x = 0, 0, 1, 2: 0 + 0 + 0.25 + 0.125 * 2
    np.testing.assert_allclose(returns, [[3.5, 3.5], [0.5, 0.5]])
    assert finished.tolist() == [[True, True], [False, False]]
    with pytest.raises(EvorError, match="did not reach the recorded state"):
        outcomes.restore(pool, 4, 0, np.array([[1.0]]), np.array([2.0], np.float32))


def test_candidate_outcome_scores_on_a_known_ranking(benchmark_script):
    outcomes = benchmark_script("candidate_outcomes")
    achieved = np.array([[0.0, 2.0], [4.0, 4.0], [8.0, 10.0]])  # means 1, 4, 9
    finished = np.array([[False, False], [True, False], [False, False]])  # only the middle candidate finishes
    right = outcomes.outcome_scores(np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.0, 5.0]), achieved, finished)
    assert right["spearman"] == pytest.approx(1.0) and right["regret"] == 0.0 and right["gain_over_median"] == 5.0
    assert right["pick"] == 2 and right["finishing"] == 1 and not right["pick_finishes"]
    assert right["rollout_noise"] == pytest.approx(np.sqrt((2.0 + 0.0 + 2.0) / 3))  # variances 2, 0, 2 (ddof 1)
    wrong = outcomes.outcome_scores(np.array([3.0, 2.0, 1.0]), np.array([5.0, 0.0, 0.0]), achieved, finished)
    assert wrong["spearman"] == pytest.approx(-1.0) and wrong["regret"] == 8.0 and wrong["gain_over_median"] == -3.0
    assert right["split_half"] == pytest.approx(1.0)  # halves (0, 4, 8) and (2, 4, 10) agree
    crossed = outcomes.outcome_scores(np.arange(3.0), np.arange(3.0), np.array([[0.0, 10.0], [5.0, 5.0], [10.0, 0.0]]),
                                      finished)
    assert crossed["split_half"] == pytest.approx(-1.0)  # the two halves rank in opposite orders
    middle = outcomes.outcome_scores(np.array([3.0, 2.0, 1.0]), np.array([0.0, 5.0, 0.0]), achieved, finished)
    assert middle["pick"] == 1 and middle["pick_finishes"]


@pytest.mark.parametrize("argument, message", [(["--episode", "-1"], "--episode must be from 0 to 999"),
                                               (["--episode", "1000"], "--episode must be from 0 to 999"),
                                               (["--continue-with", "0"], "--continue-with must be at least 1"),
                                               (["--until", "0"], "--until must be at least 1")])
def test_candidate_outcomes_refuses_bad_arguments_by_name(benchmark_script, tmp_path, capsys, argument, message):
    outcomes = benchmark_script("candidate_outcomes")
    assert outcomes.main([str(tmp_path), *argument]) == 2
    assert message in capsys.readouterr().err


def test_candidate_outcomes_chooses_states_spread_over_the_decisions_before_until(benchmark_script):
    choose = benchmark_script("candidate_outcomes").choose_states
    decisions = list(range(0, 100, 5))  # a decision every 5 steps
    assert choose(decisions, 3) == [0, 50, 95]
    assert choose(decisions, 3, until=41) == [0, 20, 40]
    assert choose(decisions, 10, until=11) == [0, 5, 10]  # no more states than decision points


def test_candidate_outcomes_scores_acting_with_fewer_candidates_on_disjoint_groups(benchmark_script):
    outcomes = benchmark_script("candidate_outcomes")
    achieved = np.array([[1.0], [0.0], [5.0], [2.0], [3.0], [9.0]])  # one rollout each
    first = np.array([0.0, 1.0, 2.0, 0.0, 1.0, 9.0])  # all six put candidate 5 first
    finished = np.zeros((6, 1), bool)
    # Groups (0, 1) and (2, 3) and (4, 5) put candidates 1, 2 and 5 first: achieved 0, 5, 9 against 9.
    scores = outcomes.outcome_scores(first, first, achieved, finished, fewer=2)
    assert scores["pick"] == 5 and scores["fewer_minus_all"] == pytest.approx((0.0 + 5.0 + 9.0) / 3 - 9.0)
    # Groups (0, 1, 2) and (3, 4, 5) put candidates 2 and 5 first; an overconfident readout on candidate 1
    # makes all six choose badly and the groups of three choose candidate 1 in the first group only.
    misled = np.array([0.0, 20.0, 2.0, 0.0, 1.0, 9.0])
    scores = outcomes.outcome_scores(first, misled, achieved, finished, fewer=3)
    assert scores["pick"] == 1 and scores["fewer_minus_all"] == pytest.approx((0.0 + 9.0) / 2 - 0.0)
    assert np.isnan(outcomes.outcome_scores(first, first, achieved, finished, fewer=7)["fewer_minus_all"])
