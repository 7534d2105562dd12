"""Side-by-side comparison of agents on the same task, preset and seeds.

Every agent is trained (or resumed, or reused when finished) with the same data pipeline, networks,
loop and evaluation; then each final checkpoint is evaluated with the agent's default inference
settings. Prints one table: success mean +- std over seeds, a 95% bootstrap interval of the mean,
and training updates/s per agent; writes it as JSON and markdown next to the runs.

    python benchmarks/compare.py --tasks cube-single-play-singletask-task2-v0 \
        --agents evor,qc1,qc5,fql,ifql --seeds 0,1,2 --preset cpu --episodes 50 --out runs/compare
"""

import argparse
import json
from pathlib import Path

import numpy as np

from evor.data.files import atomic_write_json, atomic_write_text
from evor.train import latest_checkpoint, load_run, make_config, train

# Agent labels -> (agent name, agent config overrides).
AGENT_LABELS = {
    "evor": ("evor", {}),
    "qc1": ("qc", {"horizon": 1}),
    "qc5": ("qc", {"horizon": 5}),
    "fql": ("fql", {}),
    "ifql": ("ifql", {}),
}


def bootstrap_interval(values, num=10_000, seed=0, level=0.95):
    """Percentile bootstrap interval of the mean."""
    values = np.asarray(values, np.float64)
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(num, len(values)), replace=True).mean(axis=1)
    return float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, (1 + level) / 2))


def run_cell(task, label, seed, preset, steps, episodes, out):
    agent_name, agent_overrides = AGENT_LABELS[label]
    config = make_config(preset, task=task, seed=seed, agent_name=agent_name, agent=agent_overrides,
                         total_steps=steps)
    run_dir = Path(out) / task / label / f"seed{seed}"
    done = latest_checkpoint(run_dir)
    if done is None or not done.name.endswith(f"{config.total_steps:08d}.pkl"):
        train(config, run_dir, resume=done is not None)
    result_path = run_dir / "compare_eval.json"
    if result_path.exists():
        result = json.loads(result_path.read_text())
    else:
        run = load_run(run_dir)
        result = run.evaluate(run.settings(), episodes, seed=20_000 + seed)
        atomic_write_json(result_path, result)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rate = float(np.median([r["steps_per_second"] for r in rows[1:]] or [rows[0]["steps_per_second"]]))
    return result["success_rate"], rate


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", default="cube-single-play-singletask-task2-v0")
    parser.add_argument("--agents", default="evor,qc1,qc5,fql,ifql")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--out", default="runs/compare")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    table = []
    for task in args.tasks.split(","):
        for label in args.agents.split(","):
            if label not in AGENT_LABELS:
                raise SystemExit(f"unknown agent label '{label}'; choose from {', '.join(AGENT_LABELS)}")
            cells = [run_cell(task, label, s, args.preset, args.steps, args.episodes, args.out) for s in seeds]
            success = [c[0] for c in cells]
            low, high = bootstrap_interval(success)
            table.append({"task": task, "agent": label, "seeds": seeds, "success": success,
                          "mean": float(np.mean(success)), "std": float(np.std(success)), "ci95": [low, high],
                          "updates_per_second": float(np.mean([c[1] for c in cells]))})
    lines = [f"Preset {args.preset}, {args.episodes} evaluation episodes per seed, seeds {seeds}", "",
             "| task | agent | success (mean ± std) | 95% bootstrap CI | updates/s |", "|---|---|---|---|---|"]
    for row in table:
        lines.append(f"| {row['task']} | {row['agent']} | {100 * row['mean']:.1f} ± {100 * row['std']:.1f} | "
                     f"[{100 * row['ci95'][0]:.1f}, {100 * row['ci95'][1]:.1f}] | {row['updates_per_second']:.1f} |")
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    atomic_write_json(Path(args.out) / "compare.json", {"preset": args.preset, "episodes": args.episodes,
                                                         "rows": table})
    atomic_write_text(Path(args.out) / "compare.md", markdown)


if __name__ == "__main__":
    main()
