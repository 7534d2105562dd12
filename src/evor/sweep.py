"""Inference-time compute sweeps: one checkpoint evaluated over a grid of inference settings.

Nothing is retrained: N, M, tau_Q, tau_R and flow steps are evaluation-time settings. For every
setting the sweep records success, return, and two costs: the policy's milliseconds per env step
inside the (batched) evaluation, and the latency of one action for one observation, measured on its
own. Results are written after every setting (atomically), and a re-run skips settings already done
with the same episodes, seed and checkpoint step, so an interrupted sweep continues where it stopped.
Sweeps of one checkpoint may run at the same time into the same file: each result is merged into what
the file holds when it is written (under a lock), so no process overwrites another's results.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import itertools
import json
import time
from pathlib import Path

import jax
import numpy as np

from evor.config import FIELDS_ADDED_LATER
from evor.data.files import atomic_write_json
from evor.rundir import read_results

# Inference settings added after results files existed, each with the value that reproduces the behaviour
# from before it existed (evor.config.FIELDS_ADDED_LATER, the one list). At that value a field is left out
# of keys and comparisons, so older sweep and eval results still match (and are skipped, not re-run).
SETTINGS_ADDED_LATER = {field: value for (_, section, field), value in FIELDS_ADDED_LATER.items()
                        if section == "inference"}


def canonical_settings(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if SETTINGS_ADDED_LATER.get(k, object()) != v}


def setting_key(settings, episodes: int, seed: int, step: int) -> str:
    return json.dumps({"settings": canonical_settings(dataclasses.asdict(settings)), "episodes": episodes,
                       "seed": seed, "step": step}, sort_keys=True)


def single_action_ms(run, settings, repeats: int = 10) -> float:
    """Median wall milliseconds of one action for one observation (compiled once beforehand)."""
    policy = run.policy(settings)
    obs = np.zeros((1, run.agent.observation_dim), np.float32)
    jax.block_until_ready(policy(obs, jax.random.PRNGKey(0)))
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(policy(obs, jax.random.PRNGKey(i + 1)))
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def grid_settings(run, grids: dict[str, list], fixed: dict) -> list:
    """Every combination of the grid values, validated before any episode runs."""
    names = list(grids)
    return [run.settings(**fixed, **dict(zip(names, values))) for values in itertools.product(*grids.values())]


def load_results(out: Path) -> list[dict]:
    """The results already in `out`, none when it does not exist yet."""
    return read_results(out) if out.exists() else []


def sweep(run, grids: dict[str, list], fixed: dict, episodes: int, seed: int, out: Path,
          show_progress: bool = True, latency_repeats: int = 10, **batching) -> list[dict]:
    """Evaluate every setting of the grid on one checkpoint; skip settings already in `out`. `batching`
    (pool_size, workers, rows) goes to `Run.evaluate`: how episodes share the device, not which episodes
    run, so it is not part of a result's key."""
    results = load_results(out)
    done = {r.get("key") for r in results}
    todo = grid_settings(run, grids, fixed)
    for index, settings in enumerate(todo):
        key = setting_key(settings, episodes, seed, run.step)
        label = ", ".join(f"{n}={getattr(settings, n)}" for n in (*grids, *fixed)) or "defaults"
        if key in done:
            print(f"[{index + 1}/{len(todo)}] {label}: already done, skipped", flush=True)
            continue
        result = run.evaluate(settings, episodes, seed=seed, show_progress=show_progress, **batching)
        result["key"] = key
        if batching:
            result["batching"] = batching
        result["seed"] = seed
        result["single_action_ms"] = single_action_ms(run, settings, latency_repeats)
        done.add(key)
        print(f"[{index + 1}/{len(todo)}] {label}: success {result['success_rate']:.3f}  "
              f"return {result['return_mean']:.1f}  {result['single_action_ms']:.2f} ms/action  "
              f"({result['seconds']:.0f}s)", flush=True)
        with _locked(out):  # another sweep may have added results since this one read the file
            results = [r for r in load_results(out) if r.get("key") != key] + [result]
            atomic_write_json(out, {"run_dir": str(run.run_dir), "task": run.config.task,
                                    "agent": run.config.agent_name, "step": run.step, "results": results})
    return load_results(out) if out.exists() else results


@contextlib.contextmanager
def _locked(out: Path):
    """An exclusive lock on .OUT.lock for a read-merge-write of OUT (released when the process dies)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
