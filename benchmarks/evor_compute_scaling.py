"""EVOR success vs number of candidates N, over seeds, from one checkpoint per seed.

Trains (or resumes, or reuses) one run per seed at a preset, then evaluates every N on the final
checkpoint without retraining. Prints per-seed and mean +- std success, the N = 1 baseline ratio,
and training updates/s. Usage:
    python benchmarks/evor_compute_scaling.py --task cube-single-play-singletask-task2-v0 \
        --preset cpu --seeds 0,1,2 --num-candidates 1,4,16,64 --episodes 50 --out runs/bench
"""

import argparse
import json
from pathlib import Path

import numpy as np

from evor.checkpoints import checkpoint_step
from evor.rundir import read_metrics
from evor.sweep import sweep
from evor.train import latest_checkpoint, load_run, make_config, train


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="cube-single-play-singletask-task2-v0")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--num-candidates", default="1,4,16,64")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--out", default="runs/bench")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    grid = [int(n) for n in args.num_candidates.split(",")]
    table, rates = {}, {}
    for seed in seeds:
        run_dir = Path(args.out) / args.task / f"evor-{args.preset}-seed{seed}"
        config = make_config(args.preset, task=args.task, seed=seed, total_steps=args.steps)
        done = latest_checkpoint(run_dir)
        if done is None or checkpoint_step(done) != config.total_steps:
            train(config, run_dir, resume=done is not None)
        run = load_run(run_dir)
        rows = read_metrics(run_dir)
        rates[seed] = float(np.median([r["steps_per_second"] for r in rows[1:]] or [rows[0]["steps_per_second"]]))
        out = run_dir / "scaling_eval.json"
        sweep(run, {"num_candidates": grid}, {}, args.episodes, seed=10_000 + seed, out=out)  # skips done N
        results = json.loads(out.read_text())["results"]
        table[seed] = {r["settings"]["num_candidates"]: r["success_rate"] for r in results}
    print(f"\nEVOR on {args.task}, preset {args.preset}, {args.episodes} episodes per setting, seeds {seeds}")
    print("N     " + "  ".join(f"seed{s:<3d}" for s in seeds) + "  mean +- std   vs N=1")
    base = np.mean([table[s][1] for s in seeds]) if all(1 in table[s] for s in seeds) else None
    for n in grid:
        values = np.array([table[s][n] for s in seeds])
        ratio = f"{values.mean() / base:.2f}x" if base else "-"
        print(f"{n:<5d} " + "  ".join(f"{v:7.2f}" for v in values) + f"  {values.mean():.3f} +- {values.std():.3f}  {ratio}")
    print("training updates/s (median over logging windows): " + ", ".join(f"seed{s} {r:.1f}" for s, r in rates.items()))


if __name__ == "__main__":
    main()
