"""Do two EVOR runs rank the same candidates alike? (docs/ablations.md, "Why 10-step targets act worse")

At validation states of RUN_A's task, N candidates are drawn from RUN_A's pi_ref; every run given scores
the same candidates with its own acting readout of Q* (its run's inference settings), averaged over
R independent readouts, i.e. the value one readout estimates. Printed: for each pair of runs, the mean
over states of the Spearman correlation of their candidate values; for each run, that of one readout
with its own average (how much of its ranking survives one readout's noise).

    python benchmarks/ranking_agreement.py RUN_A RUN_B [RUN_C ...] [--states 128] [--readouts 16]
        [--num-return-samples M] [--tau-q T]

--num-return-samples and --tau-q read every run at that setting instead of its own (a run whose agent
has no such setting keeps its own): how much of a flow's ranking one readout keeps as M grows.
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np


def main(argv=None) -> int:
    from evor.data.dataset import load_task
    from evor.diagnostics import acting_readouts, draw_candidates, spearman_rows
    from evor.errors import EvorError
    from evor.train import load_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--states", type=int, default=128)
    parser.add_argument("--readouts", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-return-samples", type=int, default=None, help="M for every run (default: its own)")
    parser.add_argument("--tau-q", type=float, default=None, help="tau_Q for every run (default: its own)")
    args = parser.parse_args(argv)
    if len(args.runs) < 2 or args.states < 1 or args.readouts < 2:
        parser.error("give at least two runs, --states >= 1 and --readouts >= 2")
    try:
        runs = [load_run(path) for path in args.runs]
    except EvorError as error:
        parser.error(str(error))
    first = runs[0]
    requested = {"num_return_samples": args.num_return_samples, "tau_q": args.tau_q}
    try:
        settings = [run.settings(**{k: v for k, v in requested.items() if hasattr(run.agent.Settings, k)})
                    for run in runs]
    except EvorError as error:
        parser.error(str(error))
    if any(run.config.task != first.config.task for run in runs):
        parser.error("all runs must be of one task")
    _, _, val = load_task(first.config.task, data_dir=first.config.data_dir, env=False)
    rng = np.random.default_rng(args.seed)
    states = val.observations[np.sort(rng.choice(len(val.observations), args.states, replace=False))]
    key = jax.random.PRNGKey(args.seed)
    values = {i: [] for i in range(len(runs))}  # per run: (R, B, N) chunks
    for start in range(0, args.states, 16):
        key, candidate_key, value_key = jax.random.split(key, 3)
        obs_n, candidates = draw_candidates(first, jnp.asarray(states[start:start + 16], jnp.float32), candidate_key)
        for i, run in enumerate(runs):
            values[i].append(np.asarray(acting_readouts(run, obs_n, candidates, jax.random.fold_in(value_key, i),
                                                        args.readouts, settings[i])))
    values = {i: np.concatenate(v, axis=1) for i, v in values.items()}
    averages = {i: v[1:].mean(axis=0) for i, v in values.items()}  # readout 0 left out: one independent readout
    n = settings[0].num_candidates
    read_at = ", ".join(f"{k}={v}" for k, v in requested.items() if v is not None) or "each run's own settings"
    print(f"{args.states} validation states of {first.config.task}, {n} candidates from {args.runs[0]}'s pi_ref, "
          f"{args.readouts} readouts each, read at {read_at}")
    for i, path in enumerate(args.runs):
        rho = float(np.mean(spearman_rows(values[i][0], averages[i])))
        print(f"  [{i}] {path}: one readout vs its own average: Spearman {rho:.2f}")
    for i in range(len(runs)):
        for j in range(i + 1, len(runs)):
            rho = float(np.mean(spearman_rows(averages[i], averages[j])))
            print(f"  [{i}] vs [{j}] averages: Spearman {rho:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
