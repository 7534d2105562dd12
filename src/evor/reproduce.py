"""Does a re-run reproduce a recorded run? `evor diff RUN RECORD`.

A study's numbers are backed by records (`evor archive`): config, metrics and evaluations. Re-running a
cell at the same config on the same data should give the same numbers bit for bit on the same kind of
machine (training and evaluation are seeded; `docs/results.md`, "Reproducible episodes"). This module
says whether it did, value by value:

  config       every field (fields added since a run was written read as config.saved_config fills
               them), except where the data was read from (data_dir) and the schedule
               (config.SCHEDULE_FIELDS: how far it ran and how often it evaluated and saved, which
               does not change what it learnt up to a step; a difference there is a note)
  metrics      every value both runs logged at the same step, except the training rate
  evaluations  every evaluation the two share (compare_eval.json; sweep.json / eval.json results matched
               by step, settings, reset seed and episode count): success and return per episode and
               their summaries, except how long it took and on what (seconds, ms per step, workers)

Values are compared exactly: a re-run on other hardware or library versions (GPU against CPU, another
XLA) is expected to differ in its last bits, and the report's notes name such differences
(versions.json) so that a mismatch can be told from a bug. Steps or evaluations that only one side has
are listed, not compared: a record archived at 30k and a run continued to 150k still compare on 30k.
Where success differs episode by episode, an exact McNemar test on the shared episodes says whether the
gap is larger than chance (the question to ask of a re-run on other hardware).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from evor.config import SCHEDULE_FIELDS, TrainConfig, saved_config, with_added_fields
from evor.rundir import CELL_RESULT, EVALUATION_FILES, VERSIONS, kept_cell_results, read_metrics, read_results

# What a run's outcome up to a step does not depend on: where its data lay, its schedule, and how fast
# it ran on which machine.
CONFIG_IGNORED = {"data_dir", *SCHEDULE_FIELDS}
METRICS_IGNORED = {"steps_per_second"}
EVALUATION_IGNORED = {"seconds", "ms_per_env_step", "policy_ms_per_env_step", "single_action_ms", "pool_size",
                      "workers", "compute", "key"}
# versions.json entries that say what ran where; differences there are notes, not failures.
VERSION_NOTES = ("versions", "machine", "compute", "devices", "train_data", "val_data", "data_sidecar")
# The commit, the data file's path, and how long generating it took differ between any two runs.
NOTE_IGNORED = {"evor_source", "source", "seconds", "resumed_episodes", "workers"}
ABSENT = object()  # a key one side does not have


@dataclass
class RunDiff:
    """What `diff_runs` found. `differences` are values both sides have that are not equal (the re-run
    does not reproduce if there is any); `only_one_side` lists steps and evaluations one side lacks;
    `notes` are schedule and versions.json differences, which can explain a mismatch but are not one."""

    compared: dict[str, int] = field(default_factory=dict)  # what was compared -> how many values
    differences: list[str] = field(default_factory=list)
    only_one_side: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def reproduces(self) -> bool:
        return not self.differences and sum(self.compared.values()) > 0


def diff_runs(run: Path, record: Path) -> RunDiff:
    run, record = Path(run), Path(record)
    found = RunDiff()
    ours, theirs = saved_config(run), saved_config(record)
    found.compared["config"] = _diff_values("config", ours, theirs, CONFIG_IGNORED, found)
    for key in SCHEDULE_FIELDS:
        if ours.get(key) != theirs.get(key):
            found.notes.append(f"config {key}: {_show(ours.get(key, ABSENT))} here, {_show(theirs.get(key, ABSENT))} in the "
                               "record (a schedule field: compared on the steps both have)")
    _diff_metrics(run, record, found)
    names = (ours.get("agent_name", TrainConfig.agent_name), theirs.get("agent_name", TrainConfig.agent_name))
    for name in (CELL_RESULT, *EVALUATION_FILES):
        _diff_evaluations(name, *(_evaluations(_result_files(path, name), agent)
                                  for path, agent in zip((run, record), names)), found)
    _version_notes(run, record, found)
    return found


def _flat(tree, prefix: str = "") -> dict:
    """{"agent.horizon": 5, ...}: nested dicts flattened to dotted keys (lists stay whole values)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def _diff_values(where: str, ours: dict, theirs: dict, ignored: set, found: RunDiff,
                 may_lack: tuple[str, ...] = ()) -> int:
    """Every value either side has, nested ones included, except under the top-level keys `ignored`,
    compared exactly; each unequal one is a difference, and so is a value one side lacks unless its key
    starts with one of `may_lack` (then it is listed as on one side only). Returns how many were compared."""
    ours, theirs = (_flat({k: v for k, v in tree.items() if k not in ignored}) for tree in (ours, theirs))
    keys = sorted(set(ours) | set(theirs))
    for key in keys:
        a, b = ours.get(key, ABSENT), theirs.get(key, ABSENT)
        if (a is ABSENT or b is ABSENT) and key.startswith(may_lack):
            found.only_one_side.append(f"{where}: {key} missing from {'the record' if b is ABSENT else 'the run'}")
        elif a != b:
            found.differences.append(f"{where} {key}: {_show(a)} here, {_show(b)} in the record")
    return sum(len(v) if isinstance(v, list) else 1 for v in map(ours.get, keys))  # a list counts its items


def _show(value) -> str:
    if value is ABSENT:
        return "absent"
    if isinstance(value, list) and len(value) > 6:
        return f"[{len(value)} values]"
    return json.dumps(value)


def _diff_metrics(run: Path, record: Path, found: RunDiff):
    ours = {row["step"]: row for row in read_metrics(run) if isinstance(row.get("step"), int)}
    theirs = {row["step"]: row for row in read_metrics(record) if isinstance(row.get("step"), int)}
    for side, missing in (("the run", sorted(set(theirs) - set(ours))), ("the record", sorted(set(ours) - set(theirs)))):
        if missing:
            found.only_one_side.append(f"metrics: nothing logged in {side} at {_steps(missing)}")
    # A value logged at a step on one side only (a periodic evaluation another schedule skipped) is listed,
    # not compared: the schedule does not change what either side learnt.
    one_sided: dict[tuple[str, str], list[int]] = {}
    found.compared["metrics"] = 0
    for step in sorted(set(ours) & set(theirs)):
        a, b = ours[step], theirs[step]
        for side, lacking, having in (("the run", a, b), ("the record", b, a)):
            for key in set(having) - set(lacking) - METRICS_IGNORED:
                one_sided.setdefault((key, side), []).append(step)
        shared = set(a) & set(b)
        found.compared["metrics"] += _diff_values(f"metrics at step {step}:", {k: a[k] for k in shared},
                                                  {k: b[k] for k in shared}, METRICS_IGNORED, found)
    for (key, side), steps in sorted(one_sided.items()):
        found.only_one_side.append(f"metrics: {key} missing from {side} at {_steps(steps)}")


def _steps(steps: list[int]) -> str:
    return f"step {steps[0]}" if len(steps) == 1 else f"{len(steps)} steps ({steps[0]} ... {steps[-1]})"


def _result_files(run_dir: Path, name: str) -> list[Path]:
    """The files holding `name`'s results. A study cell trained longer keeps its earlier score beside the
    new one (rundir.kept_cell_result), so a run continued past its record still compares the record's
    final evaluation."""
    files = [run_dir / name] if (run_dir / name).exists() else []
    if name == CELL_RESULT:
        files += kept_cell_results(run_dir)
    return files


def _evaluations(paths: list[Path], agent_name: str) -> dict:
    """Evaluation files' results by what they evaluated: {identity: result}. A cell result is one result;
    sweep and eval files hold a list, identified by step, settings, reset seed and episodes. An older
    file's settings get the inference fields added since, as its config does (FIELDS_ADDED_LATER)."""
    results = [{**r, "settings": with_added_fields({"inference": r["settings"]}, agent_name)["inference"]}
               if isinstance(r.get("settings"), dict) else r for path in paths for r in read_results(path)]
    return {_identity(r): r for r in results}


def _identity(result: dict) -> str:
    settings = result.get("settings")
    settings = json.dumps(settings, sort_keys=True) if settings is not None else "default settings"
    return f"step {result.get('step')}, {settings}, seed {result.get('seed', 'default')}, " \
           f"{result.get('episodes')} episodes"


def _diff_evaluations(name: str, ours: dict, theirs: dict, found: RunDiff):
    labels = _short_labels({**theirs, **ours})  # in the files' order
    for side, lacking, having in (("the run", ours, theirs), ("the record", theirs, ours)):
        for identity in [i for i in labels if i in having and i not in lacking]:
            found.only_one_side.append(f"{name}: missing from {side}: {labels[identity] or identity}")
    for identity in [i for i in labels if i in ours and i in theirs]:
        where = f"{name} ({labels[identity]})" if labels[identity] else name
        a, b = ours[identity], theirs[identity]
        # A per-episode list that one side's evaluation did not keep yet (a record written before it was
        # added) says nothing about whether the episodes match; the lists both sides have do.
        found.compared[name] = found.compared.get(name, 0) + _diff_values(where, a, b, EVALUATION_IGNORED, found,
                                                                          may_lack=("per_episode_",))
        # Say how many episodes differ, not just that the list does.
        for key in ("per_episode_return", "per_episode_success"):
            x, y = a.get(key), b.get(key)
            if isinstance(x, list) and isinstance(y, list) and x != y:
                same = sum(p == q for p, q in zip(x, y))
                found.differences.append(f"{where}: {same} of {max(len(x), len(y))} episodes have the same "
                                         f"{key.removeprefix('per_episode_')}")
        x, y = a.get("per_episode_success"), b.get("per_episode_success")
        if isinstance(x, list) and isinstance(y, list) and len(x) == len(y) and x != y:
            found.differences.append(f"{where}: {_success_gap(x, y)}")


def _success_gap(ours: list, theirs: list) -> str:
    """Whether two evaluations of the same episodes differ in success by more than chance: the exact
    McNemar test, two-sided. Only episodes solved on one side count (b here only, c in the record only);
    if the two policies were equally good, each such episode would fall either way with probability 1/2,
    so p = P(a split at least as uneven as min(b, c) : max(b, c) in b + c fair coin flips). It is what
    tells a re-run on other hardware (whose episodes drift apart in their last bits) from a changed policy."""
    b = sum(bool(p) and not bool(q) for p, q in zip(ours, theirs))
    c = sum(bool(q) and not bool(p) for p, q in zip(ours, theirs))
    n = b + c
    p_value = min(1.0, 2 * sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n) if n else 1.0
    return (f"solved {sum(map(bool, ours))} of {len(ours)} here, {sum(map(bool, theirs))} in the record; "
            f"{b} solved here only, {c} in the record only (exact McNemar test on the same episodes: p = {p_value:.2g})")


def _short_labels(results: dict) -> dict:
    """{identity: "step 30000, num_candidates=16"}: each result named by what varies across the file."""
    fields = {}
    for identity, result in results.items():
        fields[identity] = {"step": result.get("step"), "seed": result.get("seed"), "episodes": result.get("episodes"),
                            **(result.get("settings") or {})}
    varying = [k for k in dict.fromkeys(k for f in fields.values() for k in f)
               if len({json.dumps(f.get(k)) for f in fields.values()}) > 1]
    return {identity: ", ".join(f"{k} {f.get(k)}" for k in varying) for identity, f in fields.items()}


def _version_notes(run: Path, record: Path, found: RunDiff):
    def read(path: Path) -> dict:
        try:
            data = json.loads((path / VERSIONS).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    ours, theirs = read(run), read(record)
    for section in VERSION_NOTES:
        a, b = _flat(ours.get(section, {}), f"{section}."), _flat(theirs.get(section, {}), f"{section}.")
        for key in sorted(set(a) | set(b)):
            if key.rsplit(".", 1)[-1] not in NOTE_IGNORED and a.get(key, ABSENT) != b.get(key, ABSENT):
                found.notes.append(f"{key}: {_show(a.get(key, ABSENT))} here, {_show(b.get(key, ABSENT))} in the record")


def format_diff(run: Path, record: Path, found: RunDiff, limit: int = 20) -> str:
    """The report `evor diff` prints: what was compared, the first `limit` differences, then a verdict."""
    lines = [f"{what}: {count} values compared" for what, count in found.compared.items() if count]
    for title, items in (("differ", found.differences), ("on one side only", found.only_one_side),
                         ("notes", found.notes)):
        if items:
            lines.append(f"{title}:")
            lines += [f"  {item}" for item in items[:limit]]
            if len(items) > limit:
                lines.append(f"  ... and {len(items) - limit} more")
    if found.reproduces:
        lines.append(f"{run} reproduces {record}: every value both have is equal.")
    elif not found.differences:
        lines.append(f"{run} and {record} share nothing to compare.")
    else:
        lines.append(f"{run} does not reproduce {record}: {len(found.differences)} differences.")
    return "\n".join(lines)
