"""Side-by-side comparison of agents on the same tasks, preset and seeds.

Every agent is trained (or resumed, or reused when finished) with the same data pipeline, networks,
loop and evaluation; then each final checkpoint is evaluated with the agent's default inference
settings. Prints one table: success mean +- std over seeds, a 95% bootstrap interval of the mean,
and training updates/s per agent; writes it as JSON and markdown next to the runs. The cells run on
evor.bench's local queue (see `evor bench` for whole suites and the Ray backend).

    python benchmarks/compare.py --tasks cube-single-play-singletask-task2-v0 \
        --agents evor,qc1,qc5,fql,ifql --seeds 0,1,2 --preset cpu --episodes 50 --out runs/compare --jobs 2

With --jobs J > 1 every cell runs in its own process pinned to one core with a single-threaded XLA
(on the 2-core CPU, two single-threaded EVOR trainings make 59 updates/s together against 33 for one
process using both cores). Cells are queued seed-major, so an interrupted comparison has every agent at
the same number of seeds; re-running resumes unfinished cells from their checkpoints.
"""

import argparse
from pathlib import Path

import numpy as np

from evor.bench import AGENT_LABELS, Cell, cell_summary, run_local
from evor.data.files import atomic_write_json, atomic_write_text
from evor.report import stratified_bootstrap


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", default="cube-single-play-singletask-task2-v0")
    parser.add_argument("--agents", default="evor,qc1,qc5,fql,ifql")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--steps", type=int, default=None, help="override the preset's total_steps")
    parser.add_argument("--no-periodic-eval", action="store_true",
                        help="skip evaluations during training (only the final checkpoint is compared)")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("--table-only", action="store_true",
                        help="train nothing: tabulate the finished cells and name the missing ones")
    args = parser.parse_args()
    tasks, labels = args.tasks.split(","), args.agents.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    for label in labels:
        if label not in AGENT_LABELS:
            raise SystemExit(f"unknown agent label '{label}'; choose from {', '.join(AGENT_LABELS)}")
    overrides = {}
    if args.steps is not None:
        overrides["total_steps"] = args.steps
    if args.no_periodic_eval:
        overrides["eval_every"] = 0
    cells = [Cell(task, label, seed, args.preset, args.episodes, args.out, tuple(sorted(overrides.items())))
             for seed in seeds for task in tasks for label in labels]
    if args.table_only:
        missing = [c for c in cells if not c.done()]
        for cell in missing:
            print(f"[compare] not finished: {cell.task} {cell.label} seed {cell.seed}")
        cells = [c for c in cells if c.done()]
    else:
        failed = run_local(cells, args.jobs)
        if failed:
            raise SystemExit(f"{len(failed)} cell(s) failed; see bench.log in their run directories")

    table = []
    for task in tasks:
        for label in labels:
            done = [c for c in cells if (c.task, c.label) == (task, label)]
            if not done:
                continue
            results = [cell_summary(c) for c in done]
            success = [r["success_rate"] for r in results]
            low, high = stratified_bootstrap([success], np.mean)  # one stratum: a plain bootstrap of the mean
            table.append({"task": task, "agent": label, "seeds": [c.seed for c in done], "success": success,
                          "mean": float(np.mean(success)), "std": float(np.std(success)), "ci95": [low, high],
                          "updates_per_second": float(np.mean([r["updates_per_second"] for r in results]))})
    threads = "one core and one XLA thread per run" if args.jobs > 1 else "all cores per run"
    lines = [f"Preset {args.preset}, {args.episodes} evaluation episodes per seed, seeds {seeds}; "
             f"{args.jobs} run(s) at a time, {threads}", "",
             "| task | agent | seeds | success % (mean ± std) | 95% bootstrap CI | per seed | updates/s |",
             "|---|---|---|---|---|---|---|"]
    for row in table:
        per_seed = " / ".join(f"{100 * s:.0f}" for s in row["success"])
        lines.append(f"| {row['task']} | {row['agent']} | {len(row['seeds'])} | {100 * row['mean']:.1f} ± "
                     f"{100 * row['std']:.1f} | [{100 * row['ci95'][0]:.1f}, {100 * row['ci95'][1]:.1f}] | "
                     f"{per_seed} | {row['updates_per_second']:.1f} |")
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    atomic_write_json(Path(args.out) / "compare.json", {"preset": args.preset, "episodes": args.episodes,
                                                         "jobs": args.jobs, "overrides": overrides, "rows": table})
    atomic_write_text(Path(args.out) / "compare.md", markdown)


if __name__ == "__main__":
    main()
