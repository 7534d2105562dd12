"""Evaluate a policy on an OGBench single-task environment.

Episodes run in lockstep on a small pool of environments so the policy is called once per step for
the whole pool (one batched, jitted call instead of one per episode). Episode i always starts from
`env.reset(seed=seed + i)`.
"""

from __future__ import annotations

import time
from typing import Callable

import jax
import numpy as np

from evor.progress import progress_bar

PolicyFn = Callable[[np.ndarray, jax.Array], np.ndarray]  # (obs batch (P, d), key) -> actions (P, a)


def evaluate_policy(make_env: Callable[[], object], policy: PolicyFn, num_episodes: int, seed: int = 0,
                    pool_size: int = 10, show_progress: bool = False, desc: str = "eval",
                    action_horizon: int = 1) -> dict:
    """Success rate and returns over `num_episodes` episodes.

    With `action_horizon` h > 1 the policy returns chunks (P, h * action_dim) that are executed
    open-loop: an environment asks for a new chunk only when its current one is used up.
    """
    pool_size = max(1, min(pool_size, num_episodes))
    envs = [make_env() for _ in range(pool_size)]
    key = jax.random.PRNGKey(seed)
    next_episode = 0
    slots: list[dict | None] = [None] * pool_size
    observations = None
    results = []
    started = time.time()
    num_steps = 0

    def start(slot: int):
        nonlocal next_episode, observations
        if next_episode >= num_episodes:
            slots[slot] = None
            return
        ob, _ = envs[slot].reset(seed=seed + next_episode)
        if observations is None:
            observations = np.zeros((pool_size, np.size(ob)), np.float32)
        observations[slot] = ob
        slots[slot] = {"episode": next_episode, "return": 0.0, "length": 0, "queue": []}
        next_episode += 1

    for slot in range(pool_size):
        start(slot)
    with progress_bar(num_episodes, desc, unit="ep", disable=not show_progress) as bar:
        while any(s is not None for s in slots):
            if any(r is not None and not r["queue"] for r in slots):
                key, step_key = jax.random.split(key)
                chunks = np.asarray(policy(observations, step_key)).reshape(pool_size, action_horizon, -1)
                for slot, record in enumerate(slots):
                    if record is not None and not record["queue"]:
                        record["queue"] = list(chunks[slot])
            for slot, record in enumerate(slots):
                if record is None:
                    continue
                ob, reward, terminated, truncated, info = envs[slot].step(record["queue"].pop(0))
                num_steps += 1
                record["return"] += float(reward)
                record["length"] += 1
                observations[slot] = ob
                if terminated or truncated:
                    record.pop("queue")
                    record["success"] = float(info.get("success", 0.0))
                    results.append(record)
                    bar.update(1)
                    start(slot)
    for env in envs:
        env.close()
    elapsed = time.time() - started
    results.sort(key=lambda r: r["episode"])
    successes = np.array([r["success"] for r in results])
    returns = np.array([r["return"] for r in results])
    return {
        "episodes": num_episodes,
        "success_rate": float(successes.mean()),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "episode_length_mean": float(np.mean([r["length"] for r in results])),
        "seconds": round(elapsed, 2),
        "ms_per_env_step": round(1000 * elapsed / max(num_steps, 1), 3),
        "per_episode_success": successes.tolist(),
    }
