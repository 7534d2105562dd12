"""How deterministic is EVOR's choice among its N candidates? For states of a run's validation data,
N candidates from pi_ref are scored twice with Q* at the run's default inference settings, with
independent keys. Printed per run:

  spread      std of one scoring's Q* across the N candidates (root mean square over states): signal and noise
  signal      sqrt of the covariance across candidates of the two scorings (mean over states): how much the
              candidates' expected Q* differ (independent noise does not covary)
  noise       std of Q* between the two scorings of the same candidate, / sqrt(2): the estimator's noise
  rank corr   Spearman correlation of the two scorings across candidates (1: the same ranking every time)
  same pick   how often the two scorings' best candidate is the same one

A flow read from M independent samples is a noisy score; a scalar or exact-tilt readout is not, and its
near-argmax pick (tau_R = 1e-3) goes to whichever candidate it over-values most. docs/ablations.md.

    python benchmarks/selection_noise.py RUN_DIR [RUN_DIR ...] [--states 256] [--settings tilt=sampled]
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import spearmanr

from evor.data.dataset import load_task
from evor.train import load_run


def selection_noise(run, observations: np.ndarray, settings, seed: int = 0) -> dict:
    agent, state = run.agent, run.state
    n = settings.num_candidates
    obs = jnp.asarray(observations)
    obs_n = jnp.broadcast_to(obs[:, None, :], (obs.shape[0], n, obs.shape[-1]))
    key = jax.random.PRNGKey(seed)
    candidates = agent.sample_actions(state["actor"], obs_n, jax.random.fold_in(key, 0), settings.action_flow_steps)
    score = jax.jit(lambda st, o, c, k: agent.q_star(st, o, c, k, settings))  # arguments, not constants
    first, second = (np.asarray(score(state, obs_n, candidates, jax.random.fold_in(key, i))) for i in (1, 2))
    ranks = [spearmanr(a, b).statistic if np.ptp(a) > 0 and np.ptp(b) > 0 else 1.0 for a, b in zip(first, second)]
    centred = (first - first.mean(axis=1, keepdims=True)) * (second - second.mean(axis=1, keepdims=True))
    return {"states": int(obs.shape[0]), "num_candidates": n,
            "spread": float(np.sqrt(np.mean(first.var(axis=1)))),
            "signal": float(np.sqrt(max(np.mean(centred.sum(axis=1) / (n - 1)), 0.0))),
            "noise": float(np.sqrt(np.mean((first - second) ** 2) / 2)),
            "rank_corr": float(np.nanmean(ranks)),
            "same_pick": float(np.mean(first.argmax(axis=1) == second.argmax(axis=1)))}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--states", type=int, default=256)
    parser.add_argument("--settings", default="", help="comma-separated KEY=VALUE inference overrides")
    args = parser.parse_args()
    overrides = {}
    for item in filter(None, args.settings.split(",")):
        key, value = item.split("=", 1)
        try:
            overrides[key] = int(value) if value.isdigit() else float(value)  # 'inf' too
        except ValueError:
            overrides[key] = value
    print("| run | model | settings | spread | signal | noise | noise/signal | rank corr | same pick |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for path in args.runs:
        run = load_run(path)
        _, _, val = load_task(run.config.task, data_dir=run.config.data_dir, env=False)
        rows = np.random.default_rng(0).choice(len(val), size=args.states, replace=False)
        result = selection_noise(run, val.observations[np.sort(rows)], run.settings(**overrides))
        model = run.agent.config.return_model
        print(f"| {path} | {model} | {args.settings or 'default'} | {result['spread']:.4f} | {result['signal']:.4f} | "
              f"{result['noise']:.4f} | "
              f"{result['noise'] / max(result['signal'], 1e-12):.2f} | {result['rank_corr']:.2f} | "
              f"{result['same_pick']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
