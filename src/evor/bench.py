"""Studies as one command: a suite (tasks x agents x seeds at a preset) expanded into cells, run on a
local process queue or as Ray tasks, skipped when finished and resumed when partial, then reported.

A cell is one training run plus the evaluation of its final checkpoint at the agent's default inference
settings (written to RUN/compare_eval.json, which `evor report` reads as the final score). A cell's
result depends only on its (task, agent, seed, preset, overrides) and on how many cores its process may
use (XLA CPU splits work over them, which changes the last bits). Local cells with --jobs > 1 and Ray
cells each run pinned to one core, so local and Ray runs of the same cell give bitwise the same numbers
(measured: 1 vs 2 cores gave parameters 2.4e-7 apart after 50 updates; XLA's thread flags alone did not
change anything).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

from evor.agents import parse_label
from evor.data.files import atomic_write_json, try_lock
from evor.errors import ConfigError, EvorError
from evor.evaluate import evaluation_seed
from evor.interrupts import Terminated, sigterm_as_interrupt
from evor.rundir import CELL_RESULT, CONFIG, claim, kept_cell_result, read_cell_result, read_metrics

SINGLE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
RESULT_FILE = CELL_RESULT


@dataclasses.dataclass(frozen=True)
class Cell:
    task: str
    label: str
    seed: int
    preset: str
    episodes: int
    out: str
    overrides: tuple = ()  # sorted (key, value) pairs of TrainConfig overrides
    data_dir: str | None = None

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.task / self.label / f"seed{self.seed}"

    def config(self):
        """The cell's training config: its preset, task, seed and agent, with the suite's overrides."""
        from evor.train import make_config

        agent_name, agent_overrides = parse_label(self.label)
        overrides = dict(self.overrides)
        return make_config(self.preset, task=self.task, seed=self.seed, agent_name=agent_name,
                           agent={**agent_overrides, **overrides.pop("agent", {})}, data_dir=self.data_dir, **overrides)

    def check_run_dir(self) -> None:
        """Refuse a run directory that holds another method than the cell's: a label names the agent's
        defaults, and those change (before EVOR's default chunk became 5, 'evor' meant single-step EVOR,
        now 'evor1'), so a finished run under an old label must not be reused or reported as the new one."""
        from evor.config import config_json, resume_differences, saved_config

        if not (self.run_dir / CONFIG).exists():
            return
        expected = config_json(self.config())
        saved = saved_config(self.run_dir)
        differences = resume_differences({k: saved.get(k) for k in ("agent_name", "agent")},
                                         {k: expected[k] for k in ("agent_name", "agent")})
        if differences:
            raise ConfigError(f"{self.run_dir} holds a run of another method than '{self.label}' "
                              f"({'; '.join(differences)}): the label's defaults may have changed since it ran. "
                              f"Give the bench another --out, or move that directory.")

    def done(self) -> bool:
        """Its final evaluation exists and is of the step the cell trains to: a suite whose total_steps
        grew continues the cell's run rather than reporting the shorter one (results written before they
        recorded their step count as done). A directory holding another method is refused (check_run_dir)."""
        self.check_run_dir()
        path = self.run_dir / RESULT_FILE
        if not path.exists():
            return False
        step = read_cell_result(path).get("step")
        return step is None or step == self.config().total_steps

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Cell:
        values = json.loads(text)
        values["overrides"] = tuple(tuple(pair) for pair in values["overrides"])
        return cls(**values)


# --------------------------------------------------------------------------- suites


def available_suites() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("evor.suites").iterdir() if p.name.endswith(".json"))


def load_suite(name_or_path: str) -> dict:
    """A suite by name (evor/suites/NAME.json) or from a JSON file."""
    path = Path(name_or_path)
    if path.suffix == ".json" and path.exists():
        text, source = path.read_text(), str(path)
    elif name_or_path in available_suites():
        text, source = resources.files("evor.suites").joinpath(f"{name_or_path}.json").read_text(), name_or_path
    else:
        raise ConfigError(f"Unknown suite '{name_or_path}'; choose from {', '.join(available_suites())} "
                          f"or give a .json file.")
    try:
        suite = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: invalid JSON ({exc}).") from None
    for key in ("tasks", "agents", "seeds", "preset"):
        if key not in suite:
            raise ConfigError(f"{source}: suite key '{key}' is missing.")
    for label in suite["agents"]:
        try:
            parse_label(label)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return suite


def expand(suite: dict, out: str, agents: list[str] | None = None, seeds: list[int] | None = None,
           preset: str | None = None, tasks: list[str] | None = None) -> list[Cell]:
    """The suite's grid as cells, seed-major (an interrupted study has every agent at the same seeds).
    `tasks` picks a subset of the suite's tasks (one environment of a study, say); unlike agents it may
    not add tasks, so a suite's output directory only ever holds that suite's tasks."""
    from evor.data.registry import parse_task_name

    agents = agents or suite["agents"]
    for label in agents:
        parse_label(label)
    for task in suite["tasks"]:
        parse_task_name(task)
    unknown = [t for t in tasks or [] if t not in suite["tasks"]]
    if unknown:
        raise ConfigError(f"Task(s) {', '.join(unknown)} not in the suite; it has {', '.join(suite['tasks'])}.")
    tasks = tasks or suite["tasks"]
    overrides = tuple(sorted(suite.get("overrides", {}).items()))
    data_dir = suite_data_dir(suite, out)
    return [Cell(task, label, seed, preset or suite["preset"], suite.get("episodes", 50), str(out), overrides,
                 data_dir)
            for seed in (seeds or suite["seeds"]) for task in tasks for label in agents]


def suite_data_dir(suite: dict, out) -> str | None:
    """Where the suite's datasets live: its 'data.dir', else OUT/data when it asks for reduced datasets
    ('data.episodes', so they never mix with full ones), else the default data directory."""
    data = suite.get("data", {})
    if data.get("dir"):
        return str(Path(data["dir"]).expanduser())
    return str(Path(out) / "data") if data.get("episodes") else None


def prepare_data(suite: dict, cells: list[Cell], workers: int = 1) -> None:
    """Generate every dataset the cells need and do not have (before any cell starts)."""
    from evor.data.files import dataset_files
    from evor.data.generate import generate_dataset
    from evor.data.registry import parse_task_name

    data = suite.get("data", {})
    data_dir = cells[0].data_dir if cells else None
    for dataset in sorted({parse_task_name(c.task).dataset for c in cells}):
        train_path, val_path, _ = dataset_files(dataset, data_dir)
        if train_path.exists() and val_path.exists():
            continue
        print(f"[bench] generating {dataset} ({data.get('episodes', 'full')} episodes) -> {train_path.parent}",
              flush=True)
        generate_dataset(dataset, out_dir=data_dir, episodes=data.get("episodes"), workers=workers)


# --------------------------------------------------------------------------- one cell


def run_cell(cell: Cell) -> dict:
    """Train (or resume, or reuse) the cell's run and evaluate its final checkpoint."""
    from evor.checkpoints import checkpoint_step
    from evor.train import latest_checkpoint, load_run, train

    config = cell.config()
    run_dir = cell.run_dir
    with claim(run_dir):  # the whole cell: its training and its final evaluation
        earlier = run_dir / RESULT_FILE
        step = read_cell_result(earlier).get("step") if earlier.exists() else None
        if step is not None and step != config.total_steps:  # the suite now trains this run longer: keep the shorter score
            earlier.rename(kept_cell_result(run_dir, step))
        done = latest_checkpoint(run_dir)
        if done is None or checkpoint_step(done) != config.total_steps:
            train(config, run_dir, resume=done is not None, show_progress=False)
        if not cell.done():
            run = load_run(run_dir)
            atomic_write_json(run_dir / RESULT_FILE, run.evaluate(run.settings(), cell.episodes,
                                                                   seed=evaluation_seed(cell.seed)))
    return cell_summary(cell)


def cell_summary(cell: Cell) -> dict:
    import numpy as np

    result = read_cell_result(cell.run_dir / RESULT_FILE)
    rows = read_metrics(cell.run_dir)
    rate = float(np.median([r["steps_per_second"] for r in rows[1:]] or [rows[0]["steps_per_second"]]))
    return {"task": cell.task, "agent": cell.label, "seed": cell.seed, "success_rate": result["success_rate"],
            "per_episode_success": result["per_episode_success"], "updates_per_second": rate,
            # policy time per environment step inside the batched evaluation (absent in older result files)
            "policy_ms_per_env_step": result.get("policy_ms_per_env_step"),
            "run_dir": str(cell.run_dir)}


# --------------------------------------------------------------------------- backends


def run_local(cells: list[Cell], jobs: int = 1) -> list[Cell]:
    """At most `jobs` cells at once, each in its own process; with jobs > 1 each process is pinned to one
    core with one XLA thread (on 2 cores, two single-threaded EVOR trainings make 59 updates/s together
    against 33 for one process using both). Returns the cells that failed."""
    pending = [c for c in cells if not c.done()]
    for cell in cells:
        if cell.done():
            print(f"[bench] done already: {cell.task} {cell.label} seed {cell.seed}", flush=True)
    running: list = []  # (process, slot, cell, start time); shared so that a stop can reach every cell
    try:
        with sigterm_as_interrupt():
            return _run_queue(pending, running, max(1, jobs))
    except BaseException as stop:  # Ctrl-C, `kill`, or a bug here: no cell may outlive its runner
        # only a terminal's Ctrl-C has reached the cells already; give them a moment to exit on their own
        from_terminal = isinstance(stop, KeyboardInterrupt) and not isinstance(stop, Terminated)
        _stop_cells(running, settle=5.0 if from_terminal else 0.0)
        raise


def _run_queue(pending: list[Cell], running: list, jobs: int) -> list[Cell]:
    """Start cells into free slots until none is pending or running; return those that failed."""
    cores = sorted(os.sched_getaffinity(0))
    failed = []
    while pending or running:
        busy = {slot for _, slot, _, _ in running}
        free = [slot for slot in range(jobs) if slot not in busy]
        for slot in free[:len(pending)]:
            cell = pending.pop(0)
            env = dict(os.environ)
            if jobs > 1:
                env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {SINGLE_THREAD_XLA}".strip()
                env["EVOR_CELL_CORE"] = str(cores[slot % len(cores)])  # the child pins itself before JAX starts
            cell.run_dir.mkdir(parents=True, exist_ok=True)
            with open(cell.run_dir / "bench.log", "a") as log:  # the child keeps its own copy of the handle
                process = subprocess.Popen([sys.executable, "-m", "evor.bench", cell.to_json()], env=env,
                                           stdout=log, stderr=subprocess.STDOUT)
            running.append((process, slot, cell, time.time()))
            print(f"[bench] start {cell.task} {cell.label} seed {cell.seed}", flush=True)
        time.sleep(1)
        for item in list(running):
            process, slot, cell, started = item
            if process.poll() is None:
                continue
            running.remove(item)
            if process.returncode:
                failed.append(cell)
            status = "done" if process.returncode == 0 else f"FAILED (exit {process.returncode}, see {cell.run_dir}/bench.log)"
            print(f"[bench] {status}: {cell.task} {cell.label} seed {cell.seed} in {time.time() - started:.0f} s",
                  flush=True)
    return failed


def _stop_cells(running: list, settle: float, grace: float = 30.0) -> None:
    """Stop the cells of a runner that is itself stopping. After `settle` seconds for them to exit on
    their own (a terminal's Ctrl-C has reached them already), each gets SIGINT, which a cell takes as
    Ctrl-C (its run directory keeps every finished checkpoint, and the same bench command resumes it),
    and is killed if it has not exited `grace` seconds later."""
    processes = [item[0] for item in running]
    deadline = time.time() + settle
    while time.time() < deadline and any(p.poll() is None for p in processes):
        time.sleep(0.1)
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    deadline = time.time() + grace
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for _, _, cell, _ in running:
        print(f"[bench] stopped: {cell.task} {cell.label} seed {cell.seed} (the same command resumes it)", flush=True)


def run_ray(cells: list[Cell], address: str | None = None, num_cpus: float = 1, num_gpus: float = 0) -> list[Cell]:
    """The same cells as Ray tasks on an existing cluster (`address`) or a local Ray instance."""
    try:
        import ray
    except ImportError:
        raise EvorError("The ray backend needs Ray: pip install 'evor[ray]'.") from None
    if not ray.is_initialized():
        ray.init(address=address, runtime_env={"env_vars": {"XLA_FLAGS": SINGLE_THREAD_XLA, "MUJOCO_GL": "disable"}},
                 include_dashboard=False, log_to_driver=False)
    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=0)(_ray_cell)
    todo = [c for c in cells if not c.done()]
    futures = {remote.remote(c.to_json()): c for c in todo}
    failed = []
    while futures:
        ready, _ = ray.wait(list(futures), num_returns=1)
        cell = futures.pop(ready[0])
        try:
            ray.get(ready[0])
            print(f"[bench] done (ray): {cell.task} {cell.label} seed {cell.seed}", flush=True)
        except Exception as exc:  # a task's failure is reported and the others go on
            failed.append(cell)
            print(f"[bench] FAILED (ray): {cell.task} {cell.label} seed {cell.seed}: {exc}", flush=True)
    return failed


def _ray_cell(cell_json: str) -> dict:
    # XLA CPU splits work over the cores a process may use, whatever its thread flags, and the split
    # changes the last bits of training (the module docstring's measurement; evaluation's episodes
    # came out bitwise equal pinned and free, docs/results.md "Reproducible episodes"). Local cells
    # run pinned to one core, so a Ray cell pins itself to one free core too (claimed with a lock
    # file per core, held for the cell's lifetime).
    with _one_core():
        return run_cell(Cell.from_json(cell_json))


class _one_core:
    def __enter__(self):
        import tempfile

        cores = sorted(os.sched_getaffinity(0))
        while True:
            for core in cores:
                handle = try_lock(Path(tempfile.gettempdir()) / f"evor-core-{core}.lock")
                if handle is not None:
                    self.handle = handle
                    os.sched_setaffinity(0, {core})
                    return self
            time.sleep(1)  # more cells than cores on this node: wait for one to finish

    def __exit__(self, *exc):
        self.handle.close()  # releases the lock


# --------------------------------------------------------------------------- the study


def bench(suite_name: str, out: str, agents=None, seeds=None, preset=None, backend: str = "local", jobs: int = 1,
          address: str | None = None, num_gpus: float = 0, tasks: list[str] | None = None) -> dict:
    suite = load_suite(suite_name)
    cells = expand(suite, out, agents, seeds, preset, tasks)
    print(f"[bench] suite {suite_name}: {len(cells)} cells ({sum(c.done() for c in cells)} finished) -> {out}",
          flush=True)
    prepare_data(suite, cells, workers=max(1, jobs))
    started = time.time()
    if backend == "local":
        failed = run_local(cells, jobs)
    elif backend == "ray":
        failed = run_ray(cells, address, num_gpus=num_gpus)
    else:
        raise ConfigError(f"Unknown backend '{backend}'; choose local or ray.")
    if failed:
        raise EvorError(f"{len(failed)} of {len(cells)} cells failed: "
                        + "; ".join(f"{c.task} {c.label} seed {c.seed} ({c.run_dir})" for c in failed)
                        + ". Re-run the same command to retry them; finished cells are kept.")
    from evor.report import write_report

    results = [cell_summary(c) for c in cells]
    summary = {"suite": suite_name, "backend": backend, "cells": results, "seconds": round(time.time() - started, 1)}
    atomic_write_json(Path(out) / "bench.json", summary)
    summary["report"] = write_report([Path(out)], Path(out) / "report")
    return summary


if __name__ == "__main__":  # one cell in its own process (the local backend)
    # The runner stops a cell with SIGINT; a runner started in the background (nohup, `cmd &` in a
    # script) passes SIGINT down ignored, so the cell takes it back as Ctrl-C.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if os.environ.get("EVOR_CELL_CORE"):
        os.sched_setaffinity(0, {int(os.environ["EVOR_CELL_CORE"])})
    import evor  # noqa: F401  (MUJOCO_GL before any environment)

    try:
        run_cell(Cell.from_json(sys.argv[1]))
    except KeyboardInterrupt:
        print("[cell] stopped; its finished checkpoints are kept", flush=True)
        sys.exit(130)
