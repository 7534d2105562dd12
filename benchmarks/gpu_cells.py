"""Study cells on a GPU inside one short device call: several agents, each with its seeds vmapped in one
process, trained towards --steps for at most --train-seconds, then the last --last checkpoints of every
seed evaluated on the seed's own 50-episode block, all episodes in one batch. Written for the longer
budget of the ablation issue (150k updates on a held-out task, 3 seeds), where one CPU core gives a QC-5
cell 5 updates/s.

Every agent runs in its own process (the GPU interleaves them; each process's host work gets its own
cores), so one slow agent does not hold the others back. A process that reaches --train-seconds stops
after its current chunk and checkpoints there (`train_seeds(deadline=...)`), so the row says how far it
got rather than nothing. A re-run with the same --out resumes every run.

Scores, per seed: each kept checkpoint's success on the seed's final-evaluation block (reset seeds
20000 + 1000 x seed, as `evor bench` and `evor eval`), written to RUN/eval.json in `evor eval`'s format
(its `batching` field names the pool), and RUN/compare_eval.json when the run reached --steps. The
published protocol's score is the mean of the last three checkpoints. The run records (configs,
versions, metrics, evaluations; no checkpoints) go to OUT/records.tar.gz and the figures to
OUT/gpu_cells.json and OUT/gpu_cells.md.

    # on the GPU machine (benchmarks/gpu_check.py says how the simulator stack travels):
    OGBENCH_DATA_DIR=.gpu/data PYTHONPATH=/tmp/site:src python3 benchmarks/gpu_cells.py \\
        --task pointmaze-medium-navigate-singletask-task4-v0 --agents evor,fql,ifql,qc5 --seeds 0,1,2 \\
        --steps 150000 --train-seconds 330 --out $OUT/cells
    # the same code paths on CPU in a few minutes:
    python benchmarks/gpu_cells.py --task pointmaze-medium-navigate-singletask-task4-v0 --agents evor,qc5 \\
        --seeds 0,1 --steps 1000 --checkpoint-every 500 --train-seconds 60 --episodes 2 --out /tmp/cells
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # several processes share the GPU
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", "/tmp/evor-jax-cache")  # seeds' policies compile alike

from evor.bench import Cell  # noqa: E402
from evor.checkpoints import checkpoint_step, checkpoints  # noqa: E402
from evor.data.files import atomic_write_json  # noqa: E402
from evor.evaluate import evaluation_seed  # noqa: E402
from evor.rundir import CELL_RESULT, archive_records, read_metrics  # noqa: E402


def agent_cells(args, label: str) -> list[Cell]:
    overrides = {"eval_every": 0, "total_steps": args.steps}
    if args.checkpoint_every:
        overrides["checkpoint_every"] = args.checkpoint_every
    return [Cell(args.task, label, seed, args.preset, args.episodes, str(Path(args.out) / "runs"),
                 tuple(sorted(overrides.items())), args.data_dir) for seed in args.seeds]


def checkpoint_runs(run_dir: Path, steps: list[int]):
    """The run at each checkpoint of `steps` in turn: one Run object with each checkpoint's state swapped
    in, so its compiled policy is reused (the state is an argument of it, not a constant)."""
    import jax
    import jax.numpy as jnp

    from evor.checkpoints import checkpoint_name, load_checkpoint
    from evor.train import load_run, state_template

    run = None
    for step in steps:
        if run is None:
            run = load_run(run_dir, step=step)
        else:
            payload = load_checkpoint(run_dir / "checkpoints" / checkpoint_name(step), state_template(run.agent))
            run.state, run.step = jax.tree.map(jnp.asarray, payload["state"]), payload["step"]
        yield run


def run_agent(args, label: str) -> dict:
    """One agent's seeds: train (vmapped, until --steps or --train-seconds), then evaluate."""
    import jax

    from evor.checkpoints import latest_checkpoint
    from evor.sweep import sweep
    from evor.train import batch_mode, train_seeds

    cells = agent_cells(args, label)
    config = cells[0].config()
    run_dirs = [cell.run_dir for cell in cells]
    resume = all(latest_checkpoint(d) is not None for d in run_dirs)
    started = time.time()
    runs = train_seeds(config, args.seeds, run_dirs, resume=resume, show_progress=False, mode="auto",
                       deadline=started + args.train_seconds)
    stopped = runs[0].step < args.steps
    train_seconds = time.time() - started
    rates = [row["steps_per_second"] for row in read_metrics(run_dirs[0])[1:]]  # the first chunk compiles

    workers = max(1, args.eval_workers)
    seeds = {}
    for cell in cells:
        kept = sorted(checkpoint_step(p) for p in checkpoints(cell.run_dir))[-args.last:]
        scores = {}
        for run in checkpoint_runs(cell.run_dir, kept):
            step = run.step
            results = sweep(run, {}, {}, args.episodes, evaluation_seed(cell.seed), cell.run_dir / "eval.json",
                            show_progress=False, pool_size=args.episodes, workers=workers, rows=batch_mode())
            result = next(r for r in results if r["step"] == step and r["seed"] == evaluation_seed(cell.seed))
            scores[step] = {k: result[k] for k in ("success_rate", "return_mean", "seconds")}
            if step == args.steps:
                atomic_write_json(cell.run_dir / CELL_RESULT, {k: v for k, v in result.items() if k != "key"})
        seeds[cell.seed] = scores
    return {"agent": label, "task": args.task, "seeds": seeds, "stopped_by_time": stopped,
            "train_seconds": train_seconds, "eval_seconds": time.time() - started - train_seconds,
            "updates_per_second_per_seed": statistics.median(rates) if rates else None,
            "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()], "jax": jax.__version__}


def progress(args, labels, started: float) -> str:
    parts = []
    for label in labels:
        run_dir = agent_cells(args, label)[0].run_dir
        rows = read_metrics(run_dir) if (run_dir / "metrics.jsonl").exists() else []
        step, rate = (rows[-1]["step"], rows[-1].get("steps_per_second", 0.0)) if rows else (0, 0.0)
        parts.append(f"{label} {step}/{args.steps} ({rate:.0f}/s)")
    return f"[{time.time() - started:5.0f}s] " + ", ".join(parts)


def summary_markdown(rows: list[dict], args) -> str:
    lines = [f"# {args.task}: {args.preset} preset, towards {args.steps} updates, seeds "
             f"{','.join(map(str, args.seeds))}, {args.episodes} episodes per checkpoint", "",
             "| agent | steps reached | updates/s per seed | success per checkpoint (by seed) | mean of last "
             f"{args.last}, per seed | mean over seeds | train s | eval s |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['agent']} | failed: {row['error']} | | | | | | |")
            continue
        per_seed, lasts, reached = [], [], []
        for seed, scores in row["seeds"].items():
            steps = sorted(scores, key=int)
            reached.append(int(steps[-1]) if steps else 0)
            per_seed.append(f"s{seed}: " + " / ".join(f"{100 * scores[s]['success_rate']:.0f}" for s in steps))
            if steps:
                lasts.append(100 * sum(scores[s]["success_rate"] for s in steps) / len(steps))
        mean = sum(lasts) / len(lasts) if lasts else float("nan")
        rate = row["updates_per_second_per_seed"]
        lines.append(f"| {row['agent']} | {min(reached, default=0)} | {rate if rate is None else round(rate)} | "
                     f"{'; '.join(per_seed)} | {', '.join(f'{x:.1f}' for x in lasts)} | {mean:.1f} | "
                     f"{row['train_seconds']:.0f} | {row['eval_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--agents", default="evor,fql,ifql,qc5")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=150_000)
    parser.add_argument("--train-seconds", type=float, default=330.0)
    parser.add_argument("--checkpoint-every", type=int, default=0, help="default: the preset's")
    parser.add_argument("--last", type=int, default=3, help="checkpoints evaluated per seed (the newest)")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--eval-workers", type=int, default=0, help="env processes per agent (default: cores/agents)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--agent", default=None, help=argparse.SUPPRESS)  # a child process's one agent
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in str(args.seeds).split(",")]
    if not args.eval_workers:
        args.eval_workers = max(1, len(os.sched_getaffinity(0)) // len(args.agents.split(",")))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    labels = args.agents.split(",")
    out = Path(args.out)
    if args.agent is not None:
        result = run_agent(args, args.agent)
        atomic_write_json(out / f"agent-{args.agent}.json", result)
        return 0

    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    procs = {}
    for label in labels:
        with open(out / f"{label}.log", "w") as log:  # the child holds its own copy of the descriptor
            procs[label] = subprocess.Popen([sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]),
                                             "--agent", label, "--eval-workers", str(args.eval_workers)],
                                            stdout=log, stderr=subprocess.STDOUT)
    # A `timeout` around this script signals this process only: take the agents' processes down with it,
    # so none is left training beside whatever runs next on the GPU.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        while any(p.poll() is None for p in procs.values()):
            time.sleep(15)
            print(progress(args, labels, started), flush=True)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
    rows = []
    for label, proc in procs.items():
        path = out / f"agent-{label}.json"
        if proc.returncode == 0 and path.exists():
            rows.append(json.loads(path.read_text()))
        else:
            tail = (out / f"{label}.log").read_text().strip().splitlines()[-1:] or ["no output"]
            rows.append({"agent": label, "error": f"exit {proc.returncode}: {tail[0][:200]}"})
    atomic_write_json(out / "gpu_cells.json", {"task": args.task, "steps": args.steps, "seeds": args.seeds,
                                               "train_seconds_limit": args.train_seconds, "agents": rows,
                                               "wall_seconds": time.time() - started})
    (out / "gpu_cells.md").write_text(summary_markdown(rows, args))
    if (out / "runs").exists():  # absent when every agent failed before its first run was made
        archived = out / "records"
        archive_records([out / "runs"], archived)
        with tarfile.open(out / "records.tar.gz", "w:gz") as tar:
            tar.add(archived, arcname="records")
    print(summary_markdown(rows, args), flush=True)
    return 0 if all("error" not in row for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
