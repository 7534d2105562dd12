"""50-episode evaluation: vectorised (episodes in lockstep, one batched policy call per step, envs in
worker processes) against sequential (one episode after another, one policy call per env step), on the
same episode seeds, checking that the per-episode results are identical.

    python benchmarks/eval_speed.py --run runs/.../seed0          # a trained run
    python benchmarks/eval_speed.py --task cube-single-play-singletask-task2-v0   # untrained EVOR, cpu preset
"""

import argparse
import json

import jax

from _synthetic import PausedJobs, make_agent
from evor.data.files import atomic_write_json
from evor.train import Run, load_run, make_config


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default=None, help="a run directory (default: an untrained EVOR at --preset)")
    parser.add_argument("--task", default="cube-single-play-singletask-task2-v0")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--horizon", type=int, default=None,
                        help="actions per chunk of the untrained EVOR (default: EVOR's, 5; docs/speed.md's earlier figures: 1)")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--num-candidates", type=int, default=None, help="N (default: the run's setting)")
    parser.add_argument("--layouts", default="1x0,10x0,10x2,25x2,50x2",
                        help="POOLxWORKERS[:vmap] layouts; the first is the baseline (1x0 = sequential); "
                             ":vmap batches the pool's rows (default on CPU: rows mapped, bitwise identical)")
    parser.add_argument("--pause-pattern", default=None, help="SIGSTOP matching processes while measuring")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.run:
        run = load_run(args.run)
    else:
        agent, _ = make_agent("evor", args.preset, horizon=args.horizon)
        run = Run(None, make_config(args.preset, task=args.task), agent, agent.init(jax.random.PRNGKey(0)), 0)
    settings = run.settings(num_candidates=args.num_candidates)
    rows = []
    with PausedJobs(args.pause_pattern):
        run.evaluate(settings, 2, seed=0, pool_size=1, workers=0)  # compile the batch-1 policy once
        for layout in args.layouts.split(","):
            shape, _, row_mode = layout.partition(":")
            pool, workers = (int(x) for x in shape.split("x"))
            row_mode = row_mode or "auto"
            if pool > 1:
                run.evaluate(settings, pool, seed=0, pool_size=pool, workers=0, rows=row_mode)  # compile this batch
            result = run.evaluate(settings, args.episodes, seed=1000, pool_size=pool, workers=workers, rows=row_mode)
            base = rows[0] if rows else None
            row = {"pool": pool, "workers": workers, "rows": row_mode, "seconds": result["seconds"],
                   "policy_ms_per_env_step": result["policy_ms_per_env_step"],
                   "success_rate": result["success_rate"],
                   "speedup": 1.0 if base is None else base["seconds"] / result["seconds"],
                   "identical_to_baseline": True if base is None else
                   (result["per_episode_success"] == base["per_episode_success"] and
                    result["per_episode_return"] == base["per_episode_return"]),
                   "per_episode_success": result["per_episode_success"],
                   "per_episode_return": result["per_episode_return"]}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if not k.startswith("per_episode")}), flush=True)
    print(f"\n{args.episodes} episodes of {run.config.task}, settings {settings}\n\n| pool | workers | rows | seconds | "
          f"policy ms per env step | success | speed-up vs sequential | identical episodes |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['pool']} | {r['workers']} | {r['rows']} | {r['seconds']:.1f} | {r['policy_ms_per_env_step']:.2f} | "
              f"{r['success_rate']:.2f} | {r['speedup']:.2f}x | {r['identical_to_baseline']} |")
    if args.out:
        atomic_write_json(args.out, {"task": run.config.task, "rows": rows})


if __name__ == "__main__":
    main()
