"""Reports: runs aggregated over seeds and tasks, as markdown + PNG figures + one self-contained HTML page.

Scores per run (every figure says which one it shows):
  final                 success of the final checkpoint at the agent's default inference settings, from
                        the run's own evaluation files (compare_eval.json, or the matching setting in
                        sweep.json / eval.json / quickstart_eval.json), else its last periodic
                        evaluation if that was at the end.
  last three            the published protocol's score: the mean of the last three periodic
                        evaluations; for a run trained without them (eval_every 0), the mean of its last
                        three kept checkpoints evaluated at the default settings (`evor eval RUN --step
                        all`), the last at its final step. Shown next to final, never replacing it.
  best during training  the highest periodic evaluation. Optimistic: it picks a checkpoint by its
                        test score. Shown for reference, never as the result.

Aggregates over seeds (per task) and over tasks and seeds (per environment): mean +- std, and the
interquartile mean (IQM, the mean of the middle 50%: robust to an outlier seed; Agarwal et al. 2021)
with a 95% percentile interval from a stratified bootstrap (seeds resampled within each task).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import html
import io
import json
from pathlib import Path

import numpy as np

from evor.data.files import atomic_path, atomic_write_json, atomic_write_text
from evor.errors import EvorError
from evor.rundir import (
    CELL_RESULT,
    CONFIG,
    EVALUATION_FILES,
    find_runs,
    kept_cell_results,
    read_cell_result,
    read_diagnostics,
    read_metrics,
    read_results,
    read_run_config,
)

BOOTSTRAP_SAMPLES = 2000


# --------------------------------------------------------------------------- statistics


def iqm(scores) -> float:
    """Interquartile mean: drop floor(n/4) scores from each end, average the rest."""
    from scipy.stats import trim_mean

    values = np.asarray(scores, np.float64).ravel()
    if values.size == 0:
        raise ValueError("iqm of no scores")
    return float(trim_mean(values, 0.25))


def stratified_bootstrap(strata: list, statistic=iqm, num: int = BOOTSTRAP_SAMPLES, seed: int = 0,
                         level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of statistic(pooled scores) with every stratum (a task's seeds) resampled
    with replacement on its own, so each task keeps its weight."""
    rng = np.random.default_rng(seed)
    strata = [np.asarray(s, np.float64) for s in strata]
    values = np.empty(num)
    for i in range(num):
        values[i] = statistic(_resample_within(rng, strata))
    return float(np.quantile(values, (1 - level) / 2)), float(np.quantile(values, (1 + level) / 2))


def _resample_within(rng, strata) -> np.ndarray:
    """Every stratum's scores resampled with replacement on their own, then pooled."""
    return np.concatenate([s[rng.integers(0, len(s), len(s))] for s in strata])


def bootstrap_difference(strata_a: list, strata_b: list, num: int = BOOTSTRAP_SAMPLES, seed: int = 0,
                         level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of mean(A) - mean(B) over pooled scores, each method's seeds resampled on their
    own within each task (stratum). The two methods' runs are independent: the same seed number gives
    different networks to different agents, so seeds are not paired."""
    if len(strata_a) != len(strata_b):
        raise ValueError(f"both methods need the same tasks (strata): {len(strata_a)} != {len(strata_b)}")
    rng = np.random.default_rng(seed)
    strata_a = [np.asarray(s, np.float64) for s in strata_a]
    strata_b = [np.asarray(s, np.float64) for s in strata_b]
    values = np.array([_resample_within(rng, strata_a).mean() - _resample_within(rng, strata_b).mean()
                       for _ in range(num)])
    return float(np.quantile(values, (1 - level) / 2)), float(np.quantile(values, (1 + level) / 2))


# --------------------------------------------------------------------------- reading runs


@dataclasses.dataclass
class RunRecord:
    path: Path
    task: str
    environment: str
    method: str
    seed: int
    final: float | None
    final_source: str
    best_during_training: float | None
    curve: list[tuple[int, float]]  # (step, periodic evaluation success)
    sweep: list[dict]  # sweep results: settings, success, costs
    diagnostics: dict | None
    default_settings: dict  # the agent's default inference settings (the scaling plots vary N alone)
    # The published protocol's score (method.md, Protocol): the mean of the last three periodic
    # evaluations, when the run has at least three and the last is at its final step; else the same over
    # its evaluated checkpoints (checkpoints_last_three).
    published: float | None = None
    # (step, success, episodes) of every checkpoint evaluated at the default inference settings, by step
    checkpoint_scores: list[tuple[int, float, int]] = dataclasses.field(default_factory=list)
    checkpoints_last_three: float | None = None  # the mean of the last three, the last at the final step


# What makes two runs of one label different methods: training fields and the agent's own fields. The
# evaluation schedule, logging and paths do not change what is trained.
_TRAINING_FIELDS = ("total_steps", "batch_size")


def method_label(config: dict) -> str:
    """The agent's label ('fql', 'evor-mean', ...) plus, in brackets, every agent or training field that
    differs from what its preset and the task's defaults give, e.g. 'fql[alpha=10]': runs of one label
    trained differently are never pooled as one method, and the table says how they differ."""
    from evor.agents import label_of, parse_label
    from evor.config import config_json, make_config, with_added_fields

    # A field absent from an older config.json means its value from before it existed (horizon 1 for EVOR).
    saved = with_added_fields(config, config["agent_name"])
    label = label_of(config["agent_name"], saved.get("agent", {}))
    if "preset" not in config:  # nothing to compare against
        return label
    name, label_fields = parse_label(label)
    try:
        expected = config_json(make_config(config["preset"], agent_name=name, task=config["task"],
                                           agent=dict(label_fields)))
    except EvorError:  # a preset or field this version does not know: the label alone is all we can say
        return label
    differs = [f"{k}={_short(v)}" for k, v in sorted(saved.get("agent", {}).items())
               if k in expected["agent"] and v != expected["agent"][k]]
    differs += [f"{k}={_short(saved[k])}" for k in _TRAINING_FIELDS if k in saved and saved[k] != expected[k]]
    return f"{label}[{', '.join(differs)}]" if differs else label


def _short(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return "x".join(map(str, value))
    return str(value)


def _differences(settings: dict, defaults: dict) -> dict:
    """The inference settings of a result that differ from the defaults. A field a results file lacks was
    either added later (it then had its old behaviour, SETTINGS_ADDED_LATER) or left at its default."""
    from evor.sweep import SETTINGS_ADDED_LATER

    values = {name: settings.get(name, SETTINGS_ADDED_LATER.get(name, default)) for name, default in defaults.items()}
    return {name: value for name, value in values.items() if value != defaults[name]}


def _only_candidates_differ(settings: dict, defaults: dict) -> bool:
    """True if a sweep result used the default inference settings in everything but N."""
    return set(_differences(settings, defaults)) <= {"num_candidates"}


def environment_of(task: str) -> str:
    return task.split("-singletask")[0]


def _default_settings(config: dict) -> dict:
    from evor.agents import get_agent_class
    from evor.train import inference_settings

    return dataclasses.asdict(inference_settings(get_agent_class(config["agent_name"]), config.get("inference", {})))


def read_run(path: Path) -> RunRecord:
    config = read_run_config(path)
    missing = [key for key in ("task", "seed", "total_steps") if key not in config]
    if missing:
        raise EvorError(f"{path / CONFIG} lacks {', '.join(missing)}: it is not a config saved by evor's training.")
    rows = read_metrics(path)
    curve = [(r["step"], r["eval_success_rate"]) for r in rows if r.get("eval_success_rate") is not None]
    final, source = None, "none yet (the run is unfinished or lacks its final evaluation)"
    defaults = _default_settings(config)
    sweep = []
    for name in EVALUATION_FILES:
        if (path / name).exists():
            sweep += read_results(path / name)
    result = read_cell_result(path / CELL_RESULT) if (path / CELL_RESULT).exists() else None
    if result is not None and result.get("step", config["total_steps"]) == config["total_steps"]:
        final, source = result["success_rate"], f"{CELL_RESULT} ({result['episodes']} episodes)"
    else:  # no cell result, or one of a run since extended to more steps
        last_step = max((r.get("step", 0) for r in sweep), default=None)
        matching = [r for r in sweep if not _differences(r.get("settings") or {}, defaults)
                    and r.get("step") == last_step]
        if matching and last_step == config["total_steps"]:
            final, source = matching[-1]["success_rate"], f"default settings in sweep/eval ({matching[-1]['episodes']} episodes)"
        elif curve and curve[-1][0] == config["total_steps"]:
            final, source = curve[-1][1], "last periodic evaluation"
    diagnostics = read_diagnostics(path)
    kept = [read_cell_result(p) for p in kept_cell_results(path)]  # a continued cell's earlier final scores
    scores = checkpoint_scores(sweep + kept + ([result] if result is not None and "step" in result else []), defaults)
    checkpoints_last_three = (float(np.mean([s for _, s, _ in scores[-3:]]))
                              if len(scores) >= 3 and scores[-1][0] == config["total_steps"] else None)
    published = (float(np.mean([s for _, s in curve[-3:]]))
                 if len(curve) >= 3 and curve[-1][0] == config["total_steps"] else checkpoints_last_three)
    return RunRecord(path, config["task"], environment_of(config["task"]), method_label(config), config["seed"],
                     final, source, max((s for _, s in curve), default=None), curve, sweep, diagnostics, defaults,
                     published, scores, checkpoints_last_three)


def checkpoint_scores(results: list[dict], defaults: dict) -> list[tuple[int, float, int]]:
    """(step, success, episodes) per evaluated checkpoint, from the results at the default inference
    settings, sorted by step. Where one step was evaluated more than once, the result with the most
    episodes counts (the later one on a tie: a cell result comes last), so a quick check never stands in
    for a full evaluation."""
    best: dict = {}
    for result in results:
        if "step" not in result or _differences(result.get("settings") or {}, defaults):
            continue
        step, episodes = result["step"], result.get("episodes", 0)
        if step not in best or episodes >= best[step][2]:
            best[step] = (step, result["success_rate"], episodes)
    return [best[step] for step in sorted(best)]


# --------------------------------------------------------------------------- tables


def task_table(records: list[RunRecord]) -> list[dict]:
    rows = []
    for (task, method), group in _group(records, lambda r: (r.task, r.method)).items():
        finals = [r.final for r in group if r.final is not None]
        best = [r.best_during_training for r in group if r.best_during_training is not None]
        published = [r.published for r in group if r.published is not None]
        row = {"task": task, "method": method, "seeds": sorted(r.seed for r in group), "final_runs": len(finals)}
        if published:
            row.update(published_mean=float(np.mean(published)), published_std=float(np.std(published)),
                       published_runs=len(published))
        if finals:
            row.update(final_mean=float(np.mean(finals)), final_std=float(np.std(finals)), final_iqm=iqm(finals),
                       final_ci95=_interval([finals], stratified_bootstrap))
        if best:
            row.update(best_mean=float(np.mean(best)), best_std=float(np.std(best)))
        rows.append(row)
    return rows


def environment_table(records: list[RunRecord]) -> list[dict]:
    rows = []
    for (environment, method), group in _group(records, lambda r: (r.environment, r.method)).items():
        by_task = _group([r for r in group if r.final is not None], lambda r: r.task)
        strata = [[r.final for r in runs] for runs in by_task.values()]
        if not strata:
            continue
        pooled = np.concatenate(strata)
        rows.append({"environment": environment, "method": method, "tasks": len(strata), "runs": int(pooled.size),
                     "final_iqm": iqm(pooled), "final_ci95": _interval(strata, stratified_bootstrap),
                     "final_mean": float(pooled.mean()),
                     "final_std": float(pooled.std())})
    return rows


def reference_method(records: list[RunRecord]) -> str | None:
    """The method the others are compared with: EVOR at its defaults ('evor5') where the runs have it,
    else the EVOR label with the most runs (a study of single-step EVOR, 'evor1', from before the default
    chunk became 5), else None."""
    from collections import Counter

    from evor.agents import label_of

    counts = Counter(r.method for r in records)
    default = label_of("evor", {})
    if default in counts:
        return default
    evor_labels = sorted((-n, m) for m, n in counts.items() if m.startswith("evor"))
    return evor_labels[0][1] if evor_labels else None


def _interval(strata: list, bootstrap) -> list[float] | None:
    """bootstrap(strata) as [low, high], or None when a task has a single seed: resampling one score always
    returns it, so the interval would show no seed-to-seed spread at all and read as certainty."""
    if min(len(s) for s in strata) < 2:
        return None
    return list(bootstrap(strata))


def difference_table(records: list[RunRecord], reference: str | None = None) -> list[dict]:
    """The reference method's mean final success minus each other method's, per environment and over all
    of them, on the tasks where both have final scores; the 95% interval resamples each method's seeds
    within each task (bootstrap_difference). The reference defaults to reference_method(records)."""
    reference = reference or reference_method(records)
    if reference is None:
        return []
    finals: dict = {}
    for r in records:
        if r.final is not None:
            finals.setdefault((r.environment, r.task, r.method), []).append(r.final)
    methods = sorted({m for _, _, m in finals} - {reference})
    environments = sorted({e for e, _, _ in finals})
    env_of = {t: e for e, t, _ in finals}
    rows = []
    for method in methods:
        for environment in environments + ["all"]:
            tasks = sorted({t for e, t, m in finals if m == method and environment in (e, "all")
                            and (e, t, reference) in finals})
            if not tasks:
                continue
            ours = [finals[(env_of[t], t, reference)] for t in tasks]
            theirs = [finals[(env_of[t], t, method)] for t in tasks]
            rows.append({"environment": environment, "reference": reference, "method": method, "tasks": len(tasks),
                         "reference_runs": sum(map(len, ours)), "method_runs": sum(map(len, theirs)),
                         "difference": float(np.concatenate(ours).mean() - np.concatenate(theirs).mean()),
                         "difference_ci95": _interval(ours + theirs, lambda _: bootstrap_difference(ours, theirs))})
    return rows


@functools.cache
def paper_results() -> dict:
    """Published per-task success (%) of the baselines (evor/paper_results.json) and its protocol."""
    from importlib import resources

    return json.loads(resources.files("evor").joinpath("paper_results.json").read_text())


def paper_table(task_rows: list[dict]) -> list[dict]:
    """Our per-task scores beside the published ones for the same task and method, where a paper has them."""
    published = paper_results()["results"]
    rows = []
    for row in task_rows:
        paper = published.get(row["task"], {}).get(row["method"])
        if paper is not None:
            rows.append({"task": row["task"], "method": row["method"], "seeds": row["seeds"],
                         "final_mean": row.get("final_mean"), "last_three_mean": row.get("published_mean"),
                         "paper": paper / 100})
    return rows


def _group(records, key) -> dict:
    groups: dict = {}
    for record in records:
        groups.setdefault(key(record), []).append(record)
    return dict(sorted(groups.items()))


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


_SHORT_NAMES = {"num_candidates": "N", "num_return_samples": "M"}


def setting_label(settings: dict, defaults: dict) -> str:
    """The inference settings that differ from the defaults, e.g. 'N=8, M=4, return_noise=common'."""
    changed = _differences(settings, defaults)
    return ", ".join(f"{_SHORT_NAMES.get(name, name)}={value}" for name, value in changed.items()) or "defaults"


def sweep_table(records: list[RunRecord]) -> list[dict]:
    """Per task, method and swept setting (at each run's last swept checkpoint): success over seeds and the
    costs, cheapest first. A seed evaluated twice at one setting and episode count counts once (the last)."""
    rows = []
    for (task, method), group in _group([r for r in records if r.sweep], lambda r: (r.task, r.method)).items():
        by_setting: dict = {}
        for record in group:
            last_step = max(result.get("step", 0) for result in record.sweep)
            for result in record.sweep:
                if result.get("step", 0) == last_step:
                    key = (setting_label(result["settings"], record.default_settings), result.get("episodes"))
                    by_setting.setdefault(key, {})[record.seed] = result
        for (label, episodes), per_seed in by_setting.items():
            success = [r["success_rate"] for r in per_seed.values()]
            costs = {name: [r[name] for r in per_seed.values() if r.get(name) is not None]
                     for name in ("policy_ms_per_env_step", "single_action_ms")}
            rows.append({"task": task, "method": method, "setting": label, "episodes": episodes,
                         "seeds": sorted(per_seed), "success_mean": float(np.mean(success)),
                         "success_std": float(np.std(success)),
                         **{name: float(np.mean(v)) if v else None for name, v in costs.items()}})
    def cost(row):
        return row["policy_ms_per_env_step"] or row["single_action_ms"] or 0.0

    return sorted(rows, key=lambda r: (r["task"], r["method"], cost(r), r["setting"]))


def checkpoint_table(records: list[RunRecord]) -> list[dict]:
    """Every run with two or more checkpoints evaluated at the default settings: its score at each, and
    the mean of the last three when it has one. A long run's single checkpoint is not its result."""
    return [{"task": r.task, "method": r.method, "seed": r.seed,
             "scores": [{"step": step, "success": success, "episodes": episodes}
                        for step, success, episodes in r.checkpoint_scores],
             "last_three": r.checkpoints_last_three}
            for r in sorted(records, key=lambda r: (r.task, r.method, r.seed)) if len(r.checkpoint_scores) >= 2]


def _checkpoints_cell(scores: list[dict]) -> str:
    """'30k: 100.0 · 60k: 62.0 · ...' (steps in thousands when all are whole thousands)."""
    in_thousands = all(c["step"] % 1000 == 0 for c in scores)
    return " · ".join(f"{c['step'] // 1000}k: {_pct(c['success'])}" if in_thousands
                      else f"{c['step']}: {_pct(c['success'])}" for c in scores)


def _seeds_cell(row: dict) -> str:
    """The seeds of a task row, saying how many have a final score when some do not (yet)."""
    seeds = ",".join(map(str, row["seeds"]))
    return seeds if row["final_runs"] in (0, len(row["seeds"])) else f"{seeds} ({row['final_runs']} scored)"


def _estimate_cell(value, interval) -> str:
    return f"{_pct(value)} [{_pct(interval[0])}, {_pct(interval[1])}]" if interval else f"{_pct(value)} [— one seed]"


def _table_cells(task_rows, env_rows, sweep_rows=(), difference_rows=(), paper_rows=(), checkpoint_rows=()):
    """(title, header, rows of cells) for each table, shared by markdown and HTML."""
    per_task = ("Per task: final checkpoint (success %)",
                ["task", "method", "seeds", "final mean ± std", "final IQM [95% CI]",
                 "last three evaluations, mean ± std (published protocol; periodic, else evaluated checkpoints)",
                 "best during training, mean ± std (optimistic)"],
                [[r["task"], r["method"], _seeds_cell(r),
                  f"{_pct(r.get('final_mean'))} ± {_pct(r.get('final_std'))}" if "final_mean" in r else "—",
                  _estimate_cell(r["final_iqm"], r["final_ci95"]) if "final_iqm" in r else "—",
                  f"{_pct(r['published_mean'])} ± {_pct(r['published_std'])}" if "published_mean" in r else "—",
                  f"{_pct(r.get('best_mean'))} ± {_pct(r.get('best_std'))}" if "best_mean" in r else "—"]
                 for r in task_rows])
    per_env = ("Per environment: final checkpoint over tasks and seeds (success %)",
               ["environment", "method", "tasks", "runs", "IQM [95% stratified bootstrap CI]", "mean ± std"],
               [[r["environment"], r["method"], str(r["tasks"]), str(r["runs"]),
                 _estimate_cell(r["final_iqm"], r["final_ci95"]),
                 f"{_pct(r['final_mean'])} ± {_pct(r['final_std'])}"] for r in env_rows])
    tables = [per_task, per_env]
    if difference_rows:
        tables.append(("Differences: mean final success of the reference minus the method, on the tasks both ran "
                       "(percentage points; 95% bootstrap interval, seeds resampled within each task)",
                       ["environment", "reference − method", "tasks", "runs (reference / method)", "difference",
                        "95% CI"],
                       [[r["environment"], f"{r['reference']} − {r['method']}", str(r["tasks"]),
                         f"{r['reference_runs']} / {r['method_runs']}", f"{100 * r['difference']:+.1f}",
                         f"[{100 * r['difference_ci95'][0]:+.1f}, {100 * r['difference_ci95'][1]:+.1f}]"
                         if r["difference_ci95"] else "— (a task has one seed)"]
                        for r in difference_rows]))
    if paper_rows:
        tables.append((f"Beside the papers (success %). Theirs: {paper_results()['source']}. Ours: this study's "
                       "budget, often far smaller, so compare orders rather than levels",
                       ["task", "method", "seeds", "ours: final mean", "ours: last three", "paper"],
                       [[r["task"], r["method"], ",".join(map(str, r["seeds"])), _pct(r["final_mean"]),
                         _pct(r["last_three_mean"]), _pct(r["paper"])] for r in paper_rows]))
    if checkpoint_rows:
        tables.append(("Scores per evaluated checkpoint, default inference settings (success %; step: score)",
                       ["task", "method", "seed", "checkpoints", "episodes", "last three"],
                       [[r["task"], r["method"], str(r["seed"]),
                         _checkpoints_cell(r["scores"]),
                         ",".join(sorted({str(c["episodes"]) for c in r["scores"]}, key=int)),
                         _pct(r["last_three"])] for r in checkpoint_rows]))
    if sweep_rows:
        def ms(value):
            return "—" if value is None else f"{value:.2f}"

        tables.append(("Inference settings swept on one checkpoint per seed (success %; setting: what differs "
                       "from the agent's defaults)",
                       ["task", "method", "setting", "seeds", "episodes", "success mean ± std",
                        "policy ms / env step", "ms / action (one observation)"],
                       [[r["task"], r["method"], r["setting"], ",".join(map(str, r["seeds"])), str(r["episodes"]),
                         f"{_pct(r['success_mean'])} ± {_pct(r['success_std'])}", ms(r["policy_ms_per_env_step"]),
                         ms(r["single_action_ms"])] for r in sweep_rows]))
    return tables


# --------------------------------------------------------------------------- figures


def _figures(records: list[RunRecord]) -> dict[str, tuple[str, bytes]]:
    """name -> (caption, PNG bytes), only for figures that have data."""
    try:
        import matplotlib
    except ImportError:
        from evor.errors import EvorError

        raise EvorError("evor report draws its figures with matplotlib, which is not installed: "
                        "pip install 'evor[report]'.") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figures = {}
    tasks = sorted({r.task for r in records})

    def save(fig, name, caption):
        buffer = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buffer, format="png", dpi=110)
        plt.close(fig)
        figures[name] = (caption, buffer.getvalue())

    def panels(count):
        fig, axes = plt.subplots(1, count, figsize=(5 * count, 3.6), squeeze=False)
        return fig, axes[0]

    curved = [t for t in tasks if any(r.curve for r in records if r.task == t)]
    if curved:
        fig, axes = panels(len(curved))
        for ax, task in zip(axes, curved):
            for method, group in _group([r for r in records if r.task == task and r.curve], lambda r: r.method).items():
                steps = sorted({s for r in group for s, _ in r.curve})
                means = [np.mean([v for r in group for s2, v in r.curve if s2 == s]) for s in steps]
                ax.plot(steps, means, marker="o", label=f"{method} ({len(group)} seeds)")
            ax.set(title=task, xlabel="gradient steps", ylabel="success (periodic evaluation)", ylim=(-0.02, 1.02))
            ax.legend(fontsize=8)
        save(fig, "learning_curves.png", "Learning curves: periodic evaluation success, mean over seeds.")

    swept = [t for t in tasks if any(r.sweep for r in records if r.task == t)]
    for x_key, name, label in (("num_candidates", "scaling_vs_candidates.png", "candidates N (log scale)"),
                               ("single_action_ms", "scaling_vs_latency.png", "ms per action, one observation (log)")):
        if not swept:
            break
        fig, axes = panels(len(swept))
        for ax, task in zip(axes, swept):
            for method, group in _group([r for r in records if r.task == task and r.sweep], lambda r: r.method).items():
                points: dict = {}
                for record in group:
                    for result in record.sweep:
                        n = result["settings"].get("num_candidates")
                        if n is None or not _only_candidates_differ(result["settings"], record.default_settings):
                            continue  # a sweep over M, tau or noise: not a point of the N curve
                        points.setdefault(n, []).append((result.get(x_key, n), result["success_rate"]))
                ns = sorted(points)
                xs = [np.mean([p[0] for p in points[n]]) for n in ns]
                ys = [np.mean([p[1] for p in points[n]]) for n in ns]
                errs = [np.std([p[1] for p in points[n]]) for n in ns]
                ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=f"{method} ({len(group)} seeds)")
            ax.set_xscale("log", base=2 if x_key == "num_candidates" else 10)
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set(title=task, xlabel=label, ylabel="success (final checkpoint)", ylim=(-0.02, 1.02))
            ax.legend(fontsize=8)
        save(fig, name, f"Inference-time compute scaling: success vs {label}, mean ± std over seeds, one "
                        "checkpoint per seed, no retraining.")

    diagnosed = [r for r in records if r.diagnostics]
    if diagnosed:
        groups = _group(diagnosed, lambda r: (r.task, r.method))
        fig, axes = panels(2)
        for (task, method), group in groups.items():
            histograms = np.mean([r.diagnostics["validation"]["pit_histogram"] for r in group], axis=0)
            centres = (np.arange(len(histograms)) + 0.5) / len(histograms)
            axes[0].step(centres, histograms, where="mid", label=f"{task} / {method}")
            coverage = group[0].diagnostics["validation"]["coverage"]
            levels = sorted(coverage, key=int)
            observed = [np.mean([r.diagnostics["validation"]["coverage"][k] for r in group]) for k in levels]
            axes[1].plot([int(k) / 100 for k in levels], observed, marker="o", label=f"{task} / {method}")
        axes[0].axhline(1 / len(histograms), color="grey", ls="--", label="calibrated (flat)")
        axes[0].set(title="PIT histogram of validation returns", xlabel="PIT", ylabel="fraction")
        axes[1].plot([0, 1], [0, 1], color="grey", ls="--", label="calibrated")
        axes[1].set(title="Coverage of central intervals", xlabel="nominal", ylabel="observed", xlim=(0, 1), ylim=(0, 1))
        for ax in axes:
            ax.legend(fontsize=7)
        save(fig, "diagnostics.png", "Return-distribution calibration on validation data (evor diagnose): a flat "
                                     "PIT and coverage on the diagonal mean calibrated; a U-shaped PIT and coverage "
                                     "below the diagonal mean too narrow.")
    return figures


# --------------------------------------------------------------------------- output


_LOAD_CHECK = ("<script>window.addEventListener('load', () => { const images = [...document.images]; "
               "document.body.dataset.imagesTotal = images.length; document.body.dataset.imagesLoaded = "
               "images.filter(i => i.complete && i.naturalWidth > 0).length; });</script>")


def write_report(paths, out_dir) -> dict:
    """Aggregate the runs under `paths`; write report.md, report.html, report.json and PNGs to `out_dir`."""
    records = [read_run(p) for p in find_runs(paths)]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    task_rows, env_rows, sweep_rows = task_table(records), environment_table(records), sweep_table(records)
    difference_rows, paper_rows = difference_table(records), paper_table(task_rows)
    checkpoint_rows = checkpoint_table(records)
    tables = _table_cells(task_rows, env_rows, sweep_rows, difference_rows, paper_rows, checkpoint_rows)
    figures = _figures(records)
    for name, (_, png) in figures.items():
        with atomic_path(out_dir / name) as tmp:
            Path(tmp).write_bytes(png)
    runs_note = f"{len(records)} runs from {', '.join(map(str, paths))}."
    sources = sorted({r.final_source.split(" (")[0] for r in records})

    md = ["# evor report", "", runs_note, f"Final scores from: {', '.join(sources)}.", ""]
    for title, header, rows in tables:
        md += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join(cells) + " |" for cells in rows] + [""]
    for name, (caption, _) in figures.items():
        md += [f"![{caption}]({name})", "", f"*{caption}*", ""]
    atomic_write_text(out_dir / "report.md", "\n".join(md))

    page = ["<!doctype html><html><head><meta charset='utf-8'><title>evor report</title><style>",
            "body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}"
            "td,th{border:1px solid #ccc;padding:4px 8px}th{background:#f3f3f3}img{max-width:100%}</style></head>",
            "<body><h1>evor report</h1>", f"<p>{html.escape(runs_note)} Final scores from: "
            f"{html.escape(', '.join(sources))}.</p>"]
    for title, header, rows in tables:
        page.append(f"<h2>{html.escape(title)}</h2><table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header)
                    + "</tr>" + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
                                        for cells in rows) + "</table>")
    for caption, png in figures.values():
        data = base64.b64encode(png).decode()
        page.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    page.append(_LOAD_CHECK + "</body></html>")
    atomic_write_text(out_dir / "report.html", "\n".join(page))
    summary = {"runs": [str(r.path) for r in records], "per_task": task_rows, "per_environment": env_rows,
               "sweeps": sweep_rows, "differences": difference_rows, "beside_papers": paper_rows,
               "checkpoints": checkpoint_rows,
               "figures": list(figures)}
    atomic_write_json(out_dir / "report.json", summary)
    return summary
