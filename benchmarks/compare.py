"""Side-by-side comparison of agents on the same tasks, preset and seeds.

Every agent is trained (or resumed, or reused when finished) with the same data pipeline, networks,
loop and evaluation; then each final checkpoint is evaluated with the agent's default inference
settings. Prints one table: success mean +- std over seeds, a 95% bootstrap interval of the mean,
and training updates/s per agent; writes it as JSON and markdown next to the runs.

    python benchmarks/compare.py --tasks cube-single-play-singletask-task2-v0 \
        --agents evor,qc1,qc5,fql,ifql --seeds 0,1,2 --preset cpu --episodes 50 --out runs/compare --jobs 2

With --jobs J > 1 every cell runs in its own process pinned to one core with a single-threaded XLA
(on the 2-core CPU, two single-threaded EVOR trainings make 59 updates/s together against 33 for one
process using both cores). Cells are queued seed-major, so an interrupted comparison has every agent at
the same number of seeds; re-running resumes unfinished cells from their checkpoints.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

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


def cell_dir(out, task, label, seed) -> Path:
    return Path(out) / task / label / f"seed{seed}"


def run_cell(task, label, seed, preset, overrides, episodes, out):
    """Train (or resume) one cell and evaluate its final checkpoint; results land in compare_eval.json."""
    from evor.data.files import atomic_write_json
    from evor.train import latest_checkpoint, load_run, make_config, train

    agent_name, agent_overrides = AGENT_LABELS[label]
    config = make_config(preset, task=task, seed=seed, agent_name=agent_name, agent=agent_overrides, **overrides)
    run_dir = cell_dir(out, task, label, seed)
    done = latest_checkpoint(run_dir)
    if done is None or not done.name.endswith(f"{config.total_steps:08d}.pkl"):
        train(config, run_dir, resume=done is not None, show_progress=False)
    result_path = run_dir / "compare_eval.json"
    if not result_path.exists():
        run = load_run(run_dir)
        atomic_write_json(result_path, run.evaluate(run.settings(), episodes, seed=20_000 + seed))


def cell_result(run_dir: Path):
    result = json.loads((run_dir / "compare_eval.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rate = float(np.median([r["steps_per_second"] for r in rows[1:]] or [rows[0]["steps_per_second"]]))
    return result["success_rate"], rate


def run_queue(cells, args, overrides):
    """Run cells in at most args.jobs processes; each process is one core, one XLA thread when jobs > 1."""
    pending, running, failed = list(cells), [], []
    cores = sorted(os.sched_getaffinity(0))
    free = list(range(args.jobs))
    while pending or running:
        while pending and free:
            task, label, seed = pending.pop(0)
            if (cell_dir(args.out, task, label, seed) / "compare_eval.json").exists():
                continue
            slot = free.pop(0)
            env = dict(os.environ)
            if args.jobs > 1:
                env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                                    " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
            log = cell_dir(args.out, task, label, seed)
            log.mkdir(parents=True, exist_ok=True)
            command = [sys.executable, __file__, "--cell", task, label, str(seed), "--preset", args.preset,
                       "--episodes", str(args.episodes), "--out", args.out,
                       "--overrides", json.dumps(overrides)]
            core = cores[slot % len(cores)]
            process = subprocess.Popen(command, env=env, stdout=open(log / "compare.log", "a"),
                                       stderr=subprocess.STDOUT,
                                       preexec_fn=(lambda c=core: os.sched_setaffinity(0, {c})) if args.jobs > 1 else None)
            running.append((process, slot, (task, label, seed), time.time()))
            print(f"[start] {task} {label} seed {seed} (slot {slot})", flush=True)
        time.sleep(2)
        for item in list(running):
            process, slot, cell, started = item
            if process.poll() is not None:
                running.remove(item)
                free.append(slot)
                status = "done" if process.returncode == 0 else f"FAILED (exit {process.returncode})"
                if process.returncode:
                    failed.append(cell)
                print(f"[{status}] {' '.join(map(str, cell))} in {time.time() - started:.0f} s", flush=True)
    return failed


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
    parser.add_argument("--cell", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        task, label, seed = args.cell
        run_cell(task, label, int(seed), args.preset, json.loads(args.overrides), args.episodes, args.out)
        return

    from evor.data.files import atomic_write_json, atomic_write_text

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
    cells = [(task, label, seed) for seed in seeds for task in tasks for label in labels]
    failed = run_queue(cells, args, overrides)
    if failed:
        raise SystemExit(f"{len(failed)} cell(s) failed; see compare.log in their run directories: {failed}")

    table = []
    for task in tasks:
        for label in labels:
            cells = [cell_result(cell_dir(args.out, task, label, s)) for s in seeds]
            success = [c[0] for c in cells]
            low, high = bootstrap_interval(success)
            table.append({"task": task, "agent": label, "seeds": seeds, "success": success,
                          "mean": float(np.mean(success)), "std": float(np.std(success)), "ci95": [low, high],
                          "updates_per_second": float(np.mean([c[1] for c in cells]))})
    threads = "one core and one XLA thread per run" if args.jobs > 1 else "all cores per run"
    lines = [f"Preset {args.preset}, {args.episodes} evaluation episodes per seed, seeds {seeds}; "
             f"{args.jobs} run(s) at a time, {threads}", "",
             "| task | agent | success % (mean ± std) | 95% bootstrap CI | per seed | updates/s |",
             "|---|---|---|---|---|---|"]
    for row in table:
        per_seed = " / ".join(f"{100 * s:.0f}" for s in row["success"])
        lines.append(f"| {row['task']} | {row['agent']} | {100 * row['mean']:.1f} ± {100 * row['std']:.1f} | "
                     f"[{100 * row['ci95'][0]:.1f}, {100 * row['ci95'][1]:.1f}] | {per_seed} | "
                     f"{row['updates_per_second']:.1f} |")
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    atomic_write_json(Path(args.out) / "compare.json", {"preset": args.preset, "episodes": args.episodes,
                                                         "jobs": args.jobs, "overrides": overrides, "rows": table})
    atomic_write_text(Path(args.out) / "compare.md", markdown)


if __name__ == "__main__":
    main()
