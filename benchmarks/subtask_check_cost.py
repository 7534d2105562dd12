"""What evaluation's per-subtask record costs: milliseconds of `subtask_successes` (the check run after
every environment step since 3aaa5d6) against the environment step itself, measured in the same run on
the same states, per OGBench environment. The baseline is `env.step`; the check is printed as a ratio
to it. Actions are uniform random (a policy's actions cost the physics about the same); no dataset or
trained run is needed.

    python benchmarks/subtask_check_cost.py
    python benchmarks/subtask_check_cost.py --envs scene-singletask-task2-v0 --steps 2000
"""

import argparse
import json
import time

import numpy as np

from _synthetic import PausedJobs
from evor.data.files import atomic_write_json
from evor.data.registry import make_env, reset_reproducibly, subtask_successes

DEFAULT_ENVS = ("cube-single-singletask-task1-v0,cube-double-singletask-task1-v0,scene-singletask-task1-v0,"
                "puzzle-3x3-singletask-task1-v0,puzzle-4x4-singletask-task1-v0,pointmaze-medium-singletask-task1-v0")


WARM_UP_STEPS = 20  # the environment's first steps and checks are slower; they are not timed


def measure(env_name: str, steps: int, seed: int = 0) -> dict:
    """Seconds of `steps` env steps and of the subtask check after each, timed separately per step,
    after `WARM_UP_STEPS` untimed ones on the same environment."""
    env = make_env(env_name)
    reset_reproducibly(env, seed)
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    step_seconds = check_seconds = 0.0
    reached = 0
    has_subtasks = subtask_successes(env) is not None
    for step in range(WARM_UP_STEPS + steps):
        action = rng.uniform(low, high).astype(env.action_space.dtype)
        started = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(action)
        checked = time.perf_counter()
        successes = subtask_successes(env)
        if step >= WARM_UP_STEPS:
            check_seconds += time.perf_counter() - checked
            step_seconds += checked - started
            reached += sum(successes) if successes else 0
        if terminated or truncated:
            reset_reproducibly(env, seed := seed + 1)
    env.close()
    return {"env": env_name, "steps": steps, "has_subtasks": has_subtasks,
            "step_ms": 1000 * step_seconds / steps, "check_ms": 1000 * check_seconds / steps,
            "check_over_step": check_seconds / step_seconds, "subtasks_in_goal_summed": int(reached)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--envs", default=DEFAULT_ENVS, help="comma-separated OGBench environment names")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--pause-pattern", default=None, help="SIGSTOP matching processes while measuring")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps must be at least 1 (got {args.steps}): the figures are per timed step")
    rows = []
    with PausedJobs(args.pause_pattern):
        for name in args.envs.split(","):
            rows.append(measure(name, args.steps))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{args.steps} random steps per environment\n\n| environment | env step ms (baseline) | subtask check ms | "
          "check / step |\n|---|---|---|---|")
    for r in rows:
        check = f"{r['check_ms']:.4f}" if r["has_subtasks"] else "none (no subtasks)"
        print(f"| {r['env']} | {r['step_ms']:.3f} | {check} | {r['check_over_step']:.2%} |")
    if args.out:
        atomic_write_json(args.out, {"steps": args.steps, "rows": rows})


if __name__ == "__main__":
    main()
