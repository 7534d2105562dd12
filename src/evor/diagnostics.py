"""Is the learned return distribution right? Diagnostics against the dataset's own returns.

Z(s, a) models the returns of the behaviour policy, and the validation split holds trajectories of
that policy, so each validation transition's discounted Monte-Carlo return-to-go G is one draw from
the true Z(s, a). With K samples from the learned Z at the same (s, a):

  PIT       u = P_model(Z < G) (ties broken at random). Calibrated: u ~ Uniform(0, 1), a flat
            histogram. Too narrow (overconfident): mass piles up at 0 and 1 (U shape). Biased: a slope.
  coverage  how often G falls inside the model's central c-interval, for c in 50/80/90%; calibrated
            models cover c of the time, overconfident ones less.
  CRPS      E|X - G| - E|X - X'| / 2, a proper score in return units (lower is better); it is the
            mean absolute error for a point mass and rewards a correct spread.
  bias      mean over transitions of (model mean - G).
  tilt      what acting reads from the same samples: Q* = tau_Q log E exp(Z / tau_Q) at the run's
            default tau_Q, estimated from M samples per ensemble member as acting does, and from all K
            (closer to the tilt itself; the M-sample estimate is biased low, by Jensen). Beside the
            model mean, it says how far above pi_ref's average future the score of an action sits.
  ranking   what acting does with Q*: at validation states, N candidates from pi_ref as acting draws
            them, scored by acting's own estimator with independent noise, twice, and as the reference
            the mean of many more such readouts (what one readout estimates). The candidates' spread
            of the reference is the signal a choice can use; the readout's noise is what blurs it; how
            often one readout picks the reference's best candidate, and the reference value it gives
            up when it does not (regret), say how much of the model's ranking reaches the choice.
            These judge the choice by the model's own values, not by the returns the actions would get.

Only transitions whose return-to-go is known to within `max_tail` of discount weight are used:
a trajectory cut off by the dataset's episode length leaves an unknown tail (its bootstrap weight
gamma^K), and a terminal leaves none.

Caveat: OGBench data comes from scripted oracles with internal plan state, so "the behaviour policy"
is not exactly Markov in s; some miscalibration may be the data's, not the model's.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from evor.agents.evor import RETURN_WEIGHTS
from evor.data.sampler import action_chunks
from evor.data.targets import multistep_targets
from evor.errors import EvorError
from evor.selection import soft_value

COVERAGE_LEVELS = (0.5, 0.8, 0.9)
PIT_BINS = 10


def probability_integral_transform(samples: np.ndarray, observed: np.ndarray, rng: np.random.Generator):
    """u_i = (#{x < g} + U * #{x == g}) / K for model samples (n, K) and observations (n,)."""
    samples = np.asarray(samples, np.float64)
    observed = np.asarray(observed, np.float64)[:, None]
    below = (samples < observed).sum(axis=1)
    ties = (samples == observed).sum(axis=1)
    return (below + rng.uniform(size=len(below)) * ties) / samples.shape[1]


def crps(samples: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Sample CRPS per row: mean|X - g| - mean|X - X'| / 2 (the O(K log K) sorted form of the second term)."""
    samples = np.sort(np.asarray(samples, np.float64), axis=1)
    k = samples.shape[1]
    first = np.abs(samples - np.asarray(observed, np.float64)[:, None]).mean(axis=1)
    # sum_{i<j} (x_j - x_i) over sorted x = sum_i x_i (2i - k + 1); E|X - X'| = 2 * that / k^2.
    weights = 2 * np.arange(k) - k + 1
    pair_mean = 2 * (samples * weights).sum(axis=1) / k ** 2
    return first - pair_mean / 2


def distribution_scores(samples: np.ndarray, observed: np.ndarray, seed: int = 0) -> dict:
    """All diagnostics of model samples (n, K) against observed returns (n,)."""
    samples = np.asarray(samples, np.float64)
    observed = np.asarray(observed, np.float64)
    if samples.ndim != 2 or observed.shape != samples.shape[:1]:
        raise ValueError(f"samples must be (n, K) and observed (n,), got {samples.shape} and {observed.shape}")
    rng = np.random.default_rng(seed)
    pit = probability_integral_transform(samples, observed, rng)
    histogram = np.histogram(pit, bins=PIT_BINS, range=(0.0, 1.0))[0] / len(pit)
    coverage = {}
    for level in COVERAGE_LEVELS:
        low, high = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2], axis=1)
        coverage[f"{int(level * 100)}"] = float(np.mean((observed >= low) & (observed <= high)))
    sorted_pit = np.sort(pit)
    uniform = np.arange(1, len(pit) + 1) / len(pit)
    return {
        "transitions": int(len(observed)),
        "samples_per_transition": int(samples.shape[1]),
        "pit_histogram": histogram.tolist(),  # fraction per bin; flat = 1 / bins each
        "pit_ks": float(np.max(np.maximum(uniform - sorted_pit, sorted_pit - (uniform - 1 / len(pit))))),
        "pit_tails": float(np.mean((pit < 0.05) | (pit > 0.95))),  # calibrated: 0.10
        "coverage": coverage,
        "crps": float(np.mean(crps(samples, observed))),
        "bias": float(np.mean(samples.mean(axis=1) - observed)),
        "model_std_mean": float(np.mean(samples.std(axis=1))),  # spread the model gives one (s, a)
        "observed_mean": float(observed.mean()),
        "model_mean": float(samples.mean()),
    }


def tilt_summary(samples: np.ndarray, scale, tau_q: float, num_return_samples: int, num_members: int) -> dict:
    """Mean over transitions of Q* read from raw-scale `samples` (n, E * K), member-major as
    `return_samples` gives them: from the first M of each member's K samples (acting's estimator,
    averaged over members) and from all K of each member. `scale`: the agent's ReturnScale; tau_q is in
    its unit scale, as in acting."""
    per_member = np.asarray(scale.to_unit(samples)).reshape(len(samples), num_members, -1)  # (n, E, K)
    m = min(num_return_samples, per_member.shape[-1])
    acting = scale.from_unit(np.asarray(soft_value(per_member[..., :m], tau_q)).mean(axis=1))
    all_samples = scale.from_unit(np.asarray(soft_value(per_member, tau_q)).mean(axis=1))
    return {"tau_q": float(tau_q), "num_return_samples": int(m),
            "q_star_mean": float(np.mean(acting)), "q_star_all_samples_mean": float(np.mean(all_samples))}


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row of a with the same row of b (S, N) -> (S,): the Pearson correlation
    of their ranks, ties sharing their average rank; 0 for a constant row."""
    from scipy.stats import rankdata

    a, b = rankdata(a, axis=1), rankdata(b, axis=1)
    a, b = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    denominator = np.sqrt((a ** 2).sum(axis=1) * (b ** 2).sum(axis=1))
    return np.where(denominator > 0, (a * b).sum(axis=1) / np.where(denominator > 0, denominator, 1), 0.0)


def ranking_scores(reference: np.ndarray, first: np.ndarray, second: np.ndarray) -> dict:
    """How well a noisy readout ranks candidates. All arrays (S states, N candidates): `reference` the
    value each candidate's readout estimates, `first` and `second` two independent readouts of it.

    spread   mean over states of the std of `reference` across candidates (the signal);
    noise    mean over states of the readout's noise, rms(first - second) / sqrt(2);
    top1     how often the readout's argmax is the reference's argmax; repeat_top1 how often two
             readouts agree on it; regret the mean of max(reference) - reference[readout's argmax];
    rank_correlation  mean over states of the Spearman correlation of a readout with the reference.
    """
    reference, first, second = (np.asarray(x, np.float64) for x in (reference, first, second))
    if reference.ndim != 2 or reference.shape[1] < 2 or first.shape != reference.shape or second.shape != reference.shape:
        raise ValueError(f"reference and both readouts must be (states, candidates >= 2), got {reference.shape}, "
                         f"{first.shape} and {second.shape}")
    rows = np.arange(len(reference))
    pick, again, best = first.argmax(axis=1), second.argmax(axis=1), reference.argmax(axis=1)

    spread = float(reference.std(axis=1).mean())
    noise = float(np.sqrt(((first - second) ** 2).mean(axis=1) / 2).mean())
    return {"states": int(reference.shape[0]), "candidates": int(reference.shape[1]),
            "spread": spread, "noise": noise, "signal_to_noise": spread / noise if noise > 0 else None,
            "top1": float(np.mean(pick == best)), "repeat_top1": float(np.mean(pick == again)),
            "regret": float(np.mean(reference[rows, best] - reference[rows, pick])),
            "rank_correlation": float(np.mean(spearman_rows(first, reference)))}


def draw_candidates(run, obs, key):
    """(obs_n, candidates), each (B, N, dim): the run's N candidates per observation from its pi_ref, drawn
    as acting draws them."""
    settings = run.settings()
    return run.agent.behaviour.sample_candidates(run.state["actor"], obs, key, settings.num_candidates,
                                                 settings.action_flow_steps)


def acting_readouts(run, obs_n, candidates, key, count: int, settings=None):
    """(count, B, N): `count` independent readouts of Q* of these candidates, each as the run's acting
    reads it (its inference settings, or `settings`), in return units."""
    settings = run.settings() if settings is None else settings
    q = jax.lax.map(lambda k: run.agent.q_star(run.state, obs_n, candidates, k, settings),
                    jax.random.split(key, count))
    return run.agent.return_scale.from_unit(q)


def candidate_ranking(run, observations, seed: int = 0, reference_readouts: int = 16, batch: int = 16) -> dict:
    """`ranking_scores` of the run's own acting at these observations (return units): N candidates from
    pi_ref as acting draws them, two readouts of Q* at the run's settings, and as the reference the mean
    of `reference_readouts` further independent readouts, i.e. what one readout estimates. (Not Q* from
    many more samples: at a small tau_Q the M-sample estimate sits near the largest of its M samples, a
    different quantity from the tilt itself, so the two would disagree by that bias, not by noise.)
    Models with an exact tilt read without noise."""
    settings = run.settings()
    if settings.num_candidates < 2:
        raise EvorError("ranking needs at least 2 candidates (the run's num_candidates is 1).")

    @jax.jit
    def score(obs, key):
        candidate_key, value_key = jax.random.split(key)
        obs_n, candidates = draw_candidates(run, obs, candidate_key)
        return acting_readouts(run, obs_n, candidates, value_key, 2 + reference_readouts)

    observations = np.asarray(observations, np.float32)
    key, out = jax.random.PRNGKey(seed), []
    for start in range(0, len(observations), batch):
        key, batch_key = jax.random.split(key)
        obs = observations[start:start + batch]
        pad = batch - len(obs)  # keep one compiled shape
        if pad:
            obs = np.concatenate([obs, np.zeros((pad, obs.shape[1]), np.float32)])
        out.append(np.asarray(score(jnp.asarray(obs), batch_key))[:, :batch - pad])
    readouts = np.concatenate(out, axis=1)
    return {**ranking_scores(readouts[2:].mean(axis=0), readouts[0], readouts[1]),
            "reference_readouts": int(reference_readouts), "settings": dataclasses.asdict(settings)}


def monte_carlo_rows(dataset, discount: float, max_tail: float = 0.01):
    """(rows, returns-to-go) of the transitions whose return-to-go is known up to `max_tail` weight."""
    targets = multistep_targets(dataset, discount, horizon=0)
    rows = np.flatnonzero(targets.bootstrap_discounts <= max_tail)
    return rows, targets.partial_returns[rows]


def with_actions(dataset, rows, returns, horizon: int, discount: float):
    """(rows, returns, actions) restricted to the rows whose chunk of `horizon` recorded actions fits in
    its trajectory; the actions are those chunks (h * action_dim), single actions when h = 1."""
    if horizon == 1:
        return rows, returns, dataset.actions[rows]
    _, chunks, valid_rows = action_chunks(dataset, discount, horizon)  # numpy only: no device table
    keep = np.isin(rows, valid_rows)
    return rows[keep], returns[keep], chunks[rows[keep]]


def return_samples(run, observations, actions, num_samples: int, key, batch: int = 256,
                   flow_steps: int | None = None, integrator: str | None = None) -> np.ndarray:
    """(n, E * num_samples) raw-scale samples of Z(s, a) from every ensemble member."""
    agent = run.agent
    settings = run.settings()
    steps = flow_steps or settings.return_flow_steps
    method = integrator or settings.integrator
    params = run.state[RETURN_WEIGHTS[settings.return_weights]]  # the weights acting would use

    @jax.jit
    def sample(obs, act, k):
        obs_k = jnp.broadcast_to(obs[:, None], (obs.shape[0], num_samples, obs.shape[-1]))
        act_k = jnp.broadcast_to(act[:, None], (act.shape[0], num_samples, act.shape[-1]))
        unit = agent.sample_returns(params, obs_k, act_k, k, steps, method)[..., 0]  # (E, b, K)
        return agent.return_scale.from_unit(jnp.moveaxis(unit, 0, 1).reshape(obs.shape[0], -1))

    out = []
    for start in range(0, len(observations), batch):
        key, batch_key = jax.random.split(key)
        obs = jnp.asarray(observations[start:start + batch])
        act = jnp.asarray(actions[start:start + batch])
        pad = batch - len(obs)  # keep one compiled shape
        if pad:
            obs = jnp.concatenate([obs, jnp.zeros((pad, obs.shape[1]))])
            act = jnp.concatenate([act, jnp.zeros((pad, act.shape[1]))])
        out.append(np.asarray(sample(obs, act, batch_key))[:batch - pad])
    return np.concatenate(out)


def initial_state_values(run, episodes: int, seed: int) -> dict:
    """Predicted Q*(s0, a0) at the first action the policy takes vs the discounted return it then gets.

    a0 is reproduced exactly: evaluation's first policy call for episode i uses key
    fold_in(fold_in(PRNGKey(seed), i), 0), and so do we here.
    """
    from evor.data.registry import reset_reproducibly
    from evor.evaluate import episode_keys

    settings = run.settings()
    env = run.make_env()
    obs0 = np.stack([reset_reproducibly(env, seed + i)[0] for i in range(episodes)]).astype(np.float32)
    env.close()
    keys = episode_keys(jax.random.PRNGKey(seed), jnp.arange(episodes, dtype=jnp.int32),
                        jnp.zeros(episodes, jnp.int32))
    actions = run.policy(settings)(obs0, keys)
    unit = run.agent.q_star(run.state, jnp.asarray(obs0), actions, jax.random.PRNGKey(seed + 1), settings)
    predicted = np.asarray(run.agent.return_scale.from_unit(unit))
    result = run.evaluate(settings, episodes, seed=seed, discount=run.agent.config.discount)
    achieved = np.asarray(result["per_episode_discounted_return"])
    return {"episodes": episodes, "settings": dataclasses.asdict(settings),
            "predicted_q_star_mean": float(predicted.mean()), "achieved_discounted_return_mean": float(achieved.mean()),
            "error_mean": float((predicted - achieved).mean()), "success_rate": result["success_rate"],
            "per_episode_predicted": predicted.tolist(), "per_episode_achieved": achieved.tolist()}


def diagnose(run, num_transitions: int = 2000, num_samples: int = 64, max_tail: float = 0.01, seed: int = 0,
             initial_episodes: int = 20, ranking_states: int = 128) -> dict:
    """Calibration of Z on the run's validation split, how acting ranks pi_ref's candidates at some of its
    states, and Q* at initial states vs evaluated returns."""
    if not hasattr(run.agent, "sample_returns"):
        raise EvorError(f"diagnose needs a return-distribution agent (evor); {run.run_dir} is "
                        f"'{run.config.agent_name}'.")
    from evor.data.dataset import load_task

    _, _, val = load_task(run.config.task, data_dir=run.config.data_dir, env=False)
    discount = run.agent.config.discount
    rows, returns = monte_carlo_rows(val, discount, max_tail)
    rows, returns, actions = with_actions(val, rows, returns, getattr(run.agent, "action_horizon", 1), discount)
    if len(rows) == 0:
        raise EvorError(f"No validation transition of {run.config.task} has a return-to-go known to within "
                        f"{max_tail} of discount weight (trajectories too short for gamma = {discount}).")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(rows), size=min(num_transitions, len(rows)), replace=False))
    rows, returns, actions = rows[pick], returns[pick], actions[pick]
    samples = return_samples(run, val.observations[rows], actions, num_samples, jax.random.PRNGKey(seed))
    report = {"task": run.config.task, "step": run.step, "discount": discount, "max_tail": max_tail,
              "validation": distribution_scores(samples, returns, seed)}
    settings = run.settings()
    report["validation"]["tilt"] = tilt_summary(samples, run.agent.return_scale, settings.tau_q,
                                                settings.num_return_samples, run.agent.config.num_return_flows)
    if ranking_states and settings.num_candidates > 1:
        report["ranking"] = candidate_ranking(run, val.observations[rows[:ranking_states]], seed=seed)
    if initial_episodes:
        report["initial_states"] = initial_state_values(run, initial_episodes, seed=30_000 + seed)
    return report
