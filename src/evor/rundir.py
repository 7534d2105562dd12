"""The run directory's format: its file names, and how its metrics are written and read back.

  config.json        the full resolved config (agent and inference settings included; evor.config)
  versions.json      library versions, platform, devices, dataset facts and sidecar
  metrics.jsonl      one JSON row per logged step (losses, validation losses, steps/s, evaluations);
                     metrics.csv holds the same rows for spreadsheets
  checkpoints/       step_XXXXXXXX.ckpt (evor.checkpoints)
  sweep.json, eval.json, quickstart_eval.json   evaluation results (evor.sweep), read by evor report
  compare_eval.json  a study cell's final evaluation (evor.bench)
  compare_eval_step30000.json   an earlier final evaluation, kept when a study trained the cell on
                     to more steps (`kept_cell_result`)
  diagnostics.json   `evor diagnose`
  .in-use            held (flock) by the process training the run or running its study cell, so a second
                     one refuses instead of resuming the same checkpoints beside it (`claim`)

Everything but checkpoints/ (and the CSV copy of the metrics) is the run's *record*: what `evor report`
reads. `evor archive` copies records alone, small enough to commit next to the results they back.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
from pathlib import Path

from evor.data.files import atomic_path, try_lock
from evor.errors import EvorError

CONFIG = "config.json"
VERSIONS = "versions.json"
METRICS = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
DIAGNOSTICS = "diagnostics.json"
CELL_RESULT = "compare_eval.json"
# Every file of evaluation results the library writes (`evor sweep`, `evor eval`, `evor quickstart`).
EVALUATION_FILES = ("sweep.json", "eval.json", "quickstart_eval.json")
RECORD_FILES = (CONFIG, VERSIONS, METRICS, CELL_RESULT, DIAGNOSTICS, *EVALUATION_FILES)
IN_USE = ".in-use"
# What versions.json's train_data must give for a run's agent to be rebuilt (`read_versions`).
TRAIN_DATA_KEYS = ("observation_dim", "action_dim", "reward_min", "reward_max")

_claimed: set[Path] = set()  # run directories this process holds (a claim is re-entrant within it)


@contextlib.contextmanager
def claim(run_dir: Path):
    """Hold `run_dir` for this process while the block runs: a second process that claims it (another
    `evor train --resume`, another `evor bench` over the same cell) gets a clear error instead of training
    the same run beside this one, where both would write the same checkpoints and metrics. The lock is
    the kernel's (flock), so it dies with the process: a crash never leaves a directory claimed."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _claimed:
        yield
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = try_lock(run_dir / IN_USE)
        holder = None if handle else (run_dir / IN_USE).read_text().strip()
    except OSError as exc:
        raise EvorError(f"Cannot use run directory '{run_dir}': {exc.strerror}.") from None
    if handle is None:
        raise EvorError(f"{run_dir} is in use by another evor process (pid {holder or 'unknown'}): wait for it "
                        "to finish, or stop it, before training or evaluating this run here.")
    with handle:
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        _claimed.add(run_dir)
        try:
            yield
        finally:
            _claimed.discard(run_dir)


def is_run_dir(path: Path) -> bool:
    return (Path(path) / CONFIG).exists() and (Path(path) / METRICS).exists()


def find_runs(paths) -> list[Path]:
    """Every run directory at or under `paths`."""
    found = []
    for path in map(Path, paths):
        if not path.exists():
            raise EvorError(f"{path}: no such file or directory.")
        candidates = [path] if (path / CONFIG).exists() else sorted(p.parent for p in path.rglob(CONFIG))
        found += [p for p in candidates if is_run_dir(p)]
    if not found:
        raise EvorError(f"No run directories ({CONFIG} + {METRICS}) under {', '.join(map(str, paths))}.")
    return sorted(set(found))


def kept_cell_result(run_dir: Path, step: int) -> Path:
    """Where a cell result of `step` is kept when its study trains the run on to more steps (the new
    final evaluation takes CELL_RESULT's name)."""
    stem, suffix = os.path.splitext(CELL_RESULT)
    return Path(run_dir) / f"{stem}_step{step}{suffix}"


def kept_cell_results(run_dir: Path) -> list[Path]:
    """The run's kept earlier cell results (`kept_cell_result`), by step."""
    stem, suffix = os.path.splitext(CELL_RESULT)
    name = re.compile(rf"{re.escape(stem)}_step(\d+){re.escape(suffix)}")
    found = [(int(match[1]), p) for p in Path(run_dir).glob(f"{stem}_step*{suffix}") if (match := name.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def archive_records(paths, out) -> list[Path]:
    """Copy the record files of every run under `paths` to `out`, each run at its path relative to the
    argument it was found under (a run given directly keeps its own name). Checkpoints stay behind.
    Every destination is checked before anything is written, and each file is written atomically, so a
    failed archive leaves no half-written file. Returns the archived run directories."""
    out = Path(out).resolve()
    plan: dict[Path, Path] = {}
    for path in map(Path, paths):
        root = path.resolve()
        for run in find_runs([path]):
            run = run.resolve()
            if out == run or out in run.parents or run in out.parents:
                raise EvorError(f"{out}: the archive may not overlap the run {run}.")
            target = out / (run.relative_to(root) if run != root else Path(run.name))
            if target in plan and plan[target] != run:
                raise EvorError(f"{plan[target]} and {run} would both archive to {target}; archive them apart.")
            plan[target] = run
    for target, run in plan.items():
        target.mkdir(parents=True, exist_ok=True)
        for source in [run / name for name in RECORD_FILES] + kept_cell_results(run):
            if source.exists():
                with atomic_path(target / source.name) as tmp:
                    Path(tmp).write_bytes(source.read_bytes())
    return sorted(plan)


def _read_json(path: Path, remedy: str):
    """The JSON value in `path`; an unreadable file or one that is not JSON is a named EvorError that says
    what to do (`remedy`), never a raw traceback."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvorError(f"{path} is unreadable ({exc}); {remedy}") from None


def read_run_config(run_dir: Path, missing: str = "is not a run directory") -> dict:
    """The run's saved config.json as a dict. A missing, unreadable or damaged file is a named EvorError
    (`missing` says what a missing one means to the caller), never a raw JSON traceback."""
    path = Path(run_dir) / CONFIG
    if not path.exists():
        raise EvorError(f"{run_dir} {missing} (no {CONFIG}).")
    saved = _read_json(path, "restore it, or move the run directory aside.")
    if not isinstance(saved, dict) or not isinstance(saved.get("agent_name", ""), str):
        raise EvorError(f"{path} is not a run's config (expected a JSON object with a string agent_name).")
    return saved


def read_versions(run_dir: Path) -> dict:
    """The run's versions.json as a dict. It holds the training data's shapes and reward bounds, which
    rebuilding the run's agent needs, so a missing or damaged file is a named EvorError."""
    path = Path(run_dir) / VERSIONS
    remedy = "restore it from the run's archive or copy, or train the run again."
    if not path.exists():
        raise EvorError(f"{run_dir} has no {VERSIONS}, which its agent is rebuilt from; {remedy}")
    saved = _read_json(path, remedy)
    train_data = saved.get("train_data") if isinstance(saved, dict) else None
    if not isinstance(train_data, dict) or any(key not in train_data for key in TRAIN_DATA_KEYS):
        raise EvorError(f"{path} is not a run's versions file (expected a JSON object whose train_data gives "
                        f"{', '.join(TRAIN_DATA_KEYS)}).")
    return saved


def read_diagnostics(run_dir: Path) -> dict | None:
    """The run's diagnostics.json (`evor diagnose`) as a dict, or None where the run has none. A damaged
    file is a named EvorError, never a raw JSON traceback."""
    path = Path(run_dir) / DIAGNOSTICS
    if not path.exists():
        return None
    saved = _read_json(path, "run `evor diagnose` again, or move it aside.")
    if not isinstance(saved, dict):
        raise EvorError(f"{path} is not a diagnostics file written by evor (expected a JSON object).")
    return saved


def read_metrics(run_dir: Path) -> list[dict]:
    """The logged rows, oldest first; a last line cut short by a crash is skipped, not an error."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def read_results(path: Path) -> list[dict]:
    """The results in an evaluation file: sweep.json and eval.json hold a 'results' list, a cell result
    (CELL_RESULT) is one result. Anything else (unreadable, or JSON of another shape, such as a config
    handed to `evor sweep --out`) is a named EvorError, so that no caller mistakes it for results or
    writes over it."""
    data = _read_json(Path(path), "it is not a results file written by evor.")
    if isinstance(data, dict) and "results" in data:
        results = data["results"]
    elif isinstance(data, dict) and "success_rate" in data:
        results = [data]
    else:
        raise EvorError(f"{path} is not a results file written by evor (no 'results' list and not a cell result).")
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise EvorError(f"{path} is not a results file written by evor (its results are not a list of objects).")
    return results


def read_cell_result(path: Path) -> dict:
    """A study cell's final evaluation (CELL_RESULT): one result, read by `read_results`'s rules."""
    results = read_results(path)
    if len(results) != 1:
        raise EvorError(f"{path} holds {len(results)} results, not one cell result.")
    return results[0]


EVAL_COLUMNS = ["eval_success_rate", "eval_return_mean"]


def write_metrics(run_dir: Path, row: dict):
    with open(run_dir / METRICS, "a") as f:
        f.write(json.dumps(row) + "\n")
    _append_csv(run_dir / METRICS_CSV, [row])


def _append_csv(path: Path, rows: list[dict]):
    """Columns: the first row's keys (the agent's losses) plus evaluation columns; fixed per file."""
    if not rows:
        return
    if path.exists():
        with open(path) as f:
            columns = next(csv.reader(f))
    else:
        columns = [k for k in rows[0] if k not in EVAL_COLUMNS] + EVAL_COLUMNS
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        if f.tell() == 0:
            writer.writeheader()
        writer.writerows(rows)


def truncate_metrics(run_dir: Path, step: int):
    """Drop metric rows past `step` (written after the checkpoint we resume from)."""
    jsonl = run_dir / METRICS
    if not jsonl.exists():
        return
    rows = [row for row in read_metrics(run_dir) if row.get("step", step + 1) <= step]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run_dir / METRICS_CSV).unlink(missing_ok=True)
    _append_csv(run_dir / METRICS_CSV, rows)
