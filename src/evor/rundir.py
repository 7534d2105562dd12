"""The run directory's format: its file names, and how its metrics are written and read back.

  config.json        the full resolved config (agent and inference settings included; evor.config)
  versions.json      library versions, platform, devices, dataset facts and sidecar
  metrics.jsonl      one JSON row per logged step (losses, validation losses, steps/s, evaluations);
                     metrics.csv holds the same rows for spreadsheets
  checkpoints/       step_XXXXXXXX.ckpt (evor.checkpoints)
  sweep.json, eval.json, quickstart_eval.json   evaluation results (evor.sweep), read by evor report
  compare_eval.json  a study cell's final evaluation (evor.bench)
  diagnostics.json   `evor diagnose`
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

CONFIG = "config.json"
VERSIONS = "versions.json"
METRICS = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
DIAGNOSTICS = "diagnostics.json"
CELL_RESULT = "compare_eval.json"
# Every file of evaluation results the library writes (`evor sweep`, `evor eval`, `evor quickstart`).
EVALUATION_FILES = ("sweep.json", "eval.json", "quickstart_eval.json")


def is_run_dir(path: Path) -> bool:
    return (Path(path) / CONFIG).exists() and (Path(path) / METRICS).exists()


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
