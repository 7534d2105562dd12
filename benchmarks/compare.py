"""Side-by-side comparison of agents on the same tasks, preset and seeds.

Every agent is trained (or resumed, or reused when finished) with the same data pipeline, networks,
loop and evaluation; then each final checkpoint is evaluated with the agent's default inference
settings. Prints one table: success mean +- std over seeds, a 95% bootstrap interval of the mean,
training updates/s, the policy's milliseconds per environment step in the batched evaluation (its
inference cost at the default settings), and the reference agent's (--reference, default the first) mean success
minus each agent's with a 95% bootstrap interval of that difference; with several tasks, also one
across-task row per agent (each task weighted equally, seeds resampled within tasks). Writes it as JSON
and markdown next to the runs. With 3 seeds a bootstrap interval is narrower than the truth (it only
sees the spread of 3 numbers): read it as a description of those seeds, not a significance test. The cells run on
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

from evor.agents import parse_label
from evor.bench import Cell, cell_summary, run_local
from evor.data.files import atomic_write_json, atomic_write_text
from evor.errors import ConfigError
from evor.report import bootstrap_difference, stratified_bootstrap


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
    parser.add_argument("--reference", default=None,
                        help="agent the others are compared with (difference of mean success); default: the first")
    args = parser.parse_args()
    tasks, labels = args.tasks.split(","), args.agents.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    for label in labels:
        try:
            parse_label(label)
        except ConfigError as exc:
            raise SystemExit(f"compare.py: {exc}") from None
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

    reference = args.reference or labels[0]
    if reference not in labels:
        raise SystemExit(f"--reference {reference} is not among --agents {args.agents}")
    scores = {}  # (task, label) -> per-seed lists of the finished cells
    for task in tasks:
        for label in labels:
            done = [c for c in cells if (c.task, c.label) == (task, label)]
            if done:
                results = [cell_summary(c) for c in done]
                scores[task, label] = {"seeds": [c.seed for c in done],
                                       "success": [r["success_rate"] for r in results],
                                       "updates_per_second": [r["updates_per_second"] for r in results],
                                       "policy_ms": [r["policy_ms_per_env_step"] for r in results
                                                     if r["policy_ms_per_env_step"] is not None]}

    def row(task_name, label, task_keys):
        """One table row over task_keys (one task, or all of them with each task's seeds as a stratum)."""
        strata = [scores[t, label]["success"] for t in task_keys]
        pooled = np.concatenate(strata)
        low, high = stratified_bootstrap(strata, np.mean)  # seeds resampled within each task
        # Per seed: its success averaged over the tasks (the seeds finished are the same on every task), so
        # the std is across seeds, as papers report it, not across tasks.
        per_seed = np.mean(strata, axis=0)
        entry = {"task": task_name, "agent": label, "seeds": scores[task_keys[0], label]["seeds"],
                 "success": [float(s) for s in per_seed], "mean": float(pooled.mean()), "std": float(per_seed.std()),
                 "ci95": [low, high],
                 "updates_per_second": float(np.mean([u for t in task_keys
                                                      for u in scores[t, label]["updates_per_second"]]))}
        policy_ms = [m for t in task_keys for m in scores[t, label]["policy_ms"]]
        entry["policy_ms_per_env_step"] = float(np.mean(policy_ms)) if policy_ms else None
        if label != reference and all((t, reference) in scores for t in task_keys):
            reference_strata = [scores[t, reference]["success"] for t in task_keys]
            entry["reference"] = reference
            entry["reference_minus_agent"] = float(np.concatenate(reference_strata).mean() - pooled.mean())
            entry["reference_minus_agent_ci95"] = list(bootstrap_difference(reference_strata, strata))
        return entry

    table = [row(task, label, [task]) for task in tasks for label in labels if (task, label) in scores]
    if len(tasks) > 1:
        # Across tasks only where an agent has the same seeds finished on every task: pooled means then
        # weigh every task equally, and the aggregate is not a mix of complete and partial tasks.
        for label in labels:
            seed_sets = [tuple(scores[t, label]["seeds"]) if (t, label) in scores else None for t in tasks]
            if None in seed_sets or len(set(seed_sets)) > 1:
                print(f"[compare] no across-task row for {label}: seeds finished per task differ ({seed_sets})")
                continue
            table.append(row(f"all {len(tasks)} tasks", label, tasks))
    threads = "one core and one XLA thread per run" if args.jobs > 1 else "all cores per run"
    lines = [f"Preset {args.preset}, {args.episodes} evaluation episodes per seed, seeds {seeds}; "
             f"{args.jobs} run(s) at a time, {threads}. Last column: {reference}'s mean success minus the "
             f"agent's, in points, with a 95% bootstrap interval (seeds resampled within each task, "
             f"independently per agent).", "",
             f"| task | agent | seeds | success % (mean ± std) | 95% bootstrap CI | per seed | updates/s | "
             f"policy ms/step | {reference} − agent |",
             "|---|---|---|---|---|---|---|---|---|"]
    for entry in table:
        per_seed = " / ".join(f"{100 * s:.0f}" for s in entry["success"])
        versus = "—"
        policy_ms = "—" if entry["policy_ms_per_env_step"] is None else f"{entry['policy_ms_per_env_step']:.2f}"
        if "reference_minus_agent" in entry:
            low, high = entry["reference_minus_agent_ci95"]
            versus = f"{100 * entry['reference_minus_agent']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"
        lines.append(f"| {entry['task']} | {entry['agent']} | {len(entry['seeds'])} | {100 * entry['mean']:.1f} ± "
                     f"{100 * entry['std']:.1f} | [{100 * entry['ci95'][0]:.1f}, {100 * entry['ci95'][1]:.1f}] | "
                     f"{per_seed} | {entry['updates_per_second']:.1f} | {policy_ms} | {versus} |")
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    atomic_write_json(Path(args.out) / "compare.json", {"preset": args.preset, "episodes": args.episodes,
                                                         "jobs": args.jobs, "overrides": overrides, "reference": reference,
                                                         "rows": table})
    atomic_write_text(Path(args.out) / "compare.md", markdown)


if __name__ == "__main__":
    main()
