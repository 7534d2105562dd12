"""Evaluate a policy on an OGBench single-task environment, many episodes at once.

Episodes run in lockstep on a pool of P environments, so the policy is called once per step for the
whole pool (one batched, jitted call for all envs x candidates x return samples instead of one per
episode). With `workers` > 0 the environments live in that many worker processes and step in parallel.

Results do not depend on the pool size or the number of workers: episode i always starts from
`reset_reproducibly(env, seed + i)` (the same start bit for bit, whatever the environment ran before),
and its k-th policy call uses the key fold_in(fold_in(PRNGKey(seed), i), k), whatever else is in the
batch. Sequential evaluation is the special case P = 1, no workers.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import time
from collections.abc import Callable

import jax
import numpy as np

from evor.data.registry import make_env, reset_reproducibly, subtask_successes
from evor.errors import EvorError
from evor.progress import progress_bar

# (obs batch (P, d), one key per row (P, 2)) -> actions (P, h * action_dim)
PolicyFn = Callable[[np.ndarray, jax.Array], np.ndarray]


@dataclasses.dataclass(frozen=True)
class OGBenchEnv:
    """A picklable environment factory (worker processes build their own environments from it)."""

    env_name: str
    success_timing: str = "post"

    def __call__(self):
        return make_env(self.env_name, success_timing=self.success_timing)


def _step(env, action) -> tuple:
    """One step: (observation, reward, episode over, success, subtasks in their goal state or None)."""
    ob, reward, terminated, truncated, info = env.step(action)
    return ob, float(reward), bool(terminated or truncated), float(info.get("success", 0.0)), subtask_successes(env)


def _worker(connection, make_env, count: int):
    """Hold `count` environments; answer ('reset', [(i, seed)]) and ('step', [(i, action)]) messages."""
    envs = [make_env() for _ in range(count)]
    try:
        while True:
            command, payload = connection.recv()
            if command == "reset":
                connection.send([reset_reproducibly(envs[i], seed)[0] for i, seed in payload])
            elif command == "step":
                connection.send([_step(envs[i], action) for i, action in payload])
            else:
                break
    except (EOFError, KeyboardInterrupt):
        # The parent is gone (killed, or Ctrl-C reached the whole process group). It reports what
        # happened; a traceback from every worker would only bury that message.
        pass
    finally:
        for env in envs:
            env.close()
        connection.close()


class EnvPool:
    """P environments, in this process (workers = 0) or spread over worker processes.

    reset/step take {slot: argument} and return {slot: result}; with workers, every worker gets its
    message before any answer is read, so the workers step their environments in parallel.
    """

    def __init__(self, make_env, size: int, workers: int = 0):
        self.size = size
        self.workers = min(workers, size)
        if self.workers == 0:
            self.envs = [make_env() for _ in range(size)]
            return
        # Slot s lives in worker s % W at local index s // W. Spawn, not fork: the parent holds JAX
        # and possibly MuJoCo/EGL state that must not be forked.
        context = multiprocessing.get_context("spawn")
        self.connections, self.processes = [], []
        for w in range(self.workers):
            parent, child = context.Pipe()
            count = len(range(w, size, self.workers))
            process = context.Process(target=_worker, args=(child, make_env, count), daemon=True)
            process.start()
            child.close()
            self.connections.append(parent)
            self.processes.append(process)

    def _exchange(self, command: str, requests: dict) -> dict:
        by_worker: dict[int, list] = {}
        for slot, argument in requests.items():
            by_worker.setdefault(slot % self.workers, []).append((slot, argument))
        for w, items in by_worker.items():
            self.connections[w].send((command, [(slot // self.workers, arg) for slot, arg in items]))
        answers = {}
        for w, items in by_worker.items():
            try:
                replies = self.connections[w].recv()
            except EOFError:
                raise EvorError(f"evaluation worker {w} died (exit code {self.processes[w].exitcode}).") from None
            answers.update({slot: reply for (slot, _), reply in zip(items, replies)})
        return answers

    def reset(self, seeds: dict) -> dict:
        if self.workers == 0:
            return {slot: reset_reproducibly(self.envs[slot], seed)[0] for slot, seed in seeds.items()}
        return self._exchange("reset", seeds)

    def step(self, actions: dict) -> dict:
        if self.workers == 0:
            return {slot: _step(self.envs[slot], action) for slot, action in actions.items()}
        return self._exchange("step", actions)

    def close(self):
        if self.workers == 0:
            for env in self.envs:
                env.close()
            return
        for connection in self.connections:
            try:
                connection.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        for process in self.processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()


@jax.jit
def episode_keys(base_key, episodes, calls):
    """The key of each row: fold_in(fold_in(base, episode), call index)."""
    return jax.vmap(lambda e, c: jax.random.fold_in(jax.random.fold_in(base_key, e), c))(episodes, calls)


# Reset seeds of evaluation episodes (episode i of an evaluation with seed S resets with S + i). Each
# training seed owns its own blocks, so the seeds of a study never share initial states (until evor 0.1,
# a cell's final evaluation used 20000 + seed and seeds 0/1/2 shared 49 of their 50 states), and the
# periodic evaluations of a run never reuse the final one's. At most EPISODE_BLOCK episodes per evaluation.
EPISODE_BLOCK = 1_000


def compute_context() -> dict:
    """How the process that ran an evaluation computed: backend, the cores it could use, XLA's flags.
    Recorded with every result as provenance (a bench cell runs pinned to one core with one XLA
    thread; a plain `evor eval` does not). The same checkpoint read both ways gave the same episodes
    bit for bit once resets were reproducible (docs/results.md, "Reproducible episodes")."""
    return {"backend": jax.default_backend(), "cpu_cores": len(os.sched_getaffinity(0)),
            "xla_flags": os.environ.get("XLA_FLAGS", "")}


def evaluation_seed(training_seed: int, step: int | None = None) -> int:
    """The first reset seed of a run's final evaluation (step None) or of its evaluation at `step`."""
    if step is None:
        return 20_000 + EPISODE_BLOCK * training_seed
    return 1_000_000_000 + 1_000_000 * training_seed + step


# Output name -> episode-record key of the per-subtask flags `_record_subtasks` keeps.
SUBTASK_RECORDS = {"per_episode_subtasks_reached": "subtasks_reached",
                   "per_episode_subtasks_ever_out_of_goal": "subtasks_out_of_goal",
                   "per_episode_subtasks_at_end": "subtasks_at_end"}


def _record_subtasks(record: dict, subtasks) -> None:
    """Fold one step's subtask states (True = in its goal state) into an episode's record: which
    subtasks were ever in their goal state, which were ever out of it, and which are in it now."""
    in_goal = np.asarray(subtasks, bool)
    if record["subtasks_at_end"] is None:
        record["subtasks_reached"] = np.zeros_like(in_goal)
        record["subtasks_out_of_goal"] = np.zeros_like(in_goal)
    record["subtasks_reached"] |= in_goal
    record["subtasks_out_of_goal"] |= ~in_goal
    record["subtasks_at_end"] = in_goal


def evaluate_policy(make_env: Callable[[], object], policy: PolicyFn, num_episodes: int, seed: int = 0,
                    pool_size: int = 10, workers: int = 0, show_progress: bool = False, desc: str = "eval",
                    action_horizon: int = 1, discount: float | None = None) -> dict:
    """Success rate and returns over `num_episodes` episodes (also discounted returns with `discount`).

    Each episode also keeps its best and its last step reward and, where the environment has subtasks
    (`subtask_successes`), which of them it ever had in their goal state, which it ever had out of it,
    and which were in it at its end: the progress an unsolved episode made, which success alone does
    not show (a subtask that starts in its goal state and was ever out of it was undone on the way).
    In OGBench's single-task manipulation environments a step's reward is (subtasks in their goal
    state) - (subtasks); where a task starts with some subtasks in their goal state and must undo them
    on the way (scene task 2 unlocks its buttons to close the drawer and window), only the per-subtask
    record shows progress.

    With `action_horizon` h > 1 the policy returns chunks (P, h * action_dim) that are executed
    open-loop: an environment asks for a new chunk only when its current one is used up.
    `make_env` must be picklable when `workers` > 0 (e.g. an `OGBenchEnv`).
    """
    pool_size = max(1, min(pool_size, num_episodes))
    started = time.time()
    pool = EnvPool(make_env, pool_size, workers)
    base_key = jax.random.PRNGKey(seed)
    next_episode = 0
    slots: list[dict | None] = [None] * pool_size
    observations = None
    results = []
    num_steps = 0
    policy_seconds = 0.0

    def start(new_slots: list[int]):
        nonlocal next_episode, observations
        seeds = {}
        for slot in new_slots:
            if next_episode >= num_episodes:
                slots[slot] = None
                continue
            slots[slot] = {"episode": next_episode, "return": 0.0, "discounted_return": 0.0, "length": 0,
                           "best_step_reward": -np.inf, "last_step_reward": 0.0, "subtasks_reached": None,
                           "subtasks_out_of_goal": None, "subtasks_at_end": None, "calls": 0, "queue": []}
            seeds[slot] = seed + next_episode
            next_episode += 1
        for slot, ob in pool.reset(seeds).items():
            if observations is None:
                observations = np.zeros((pool_size, np.size(ob)), np.float32)
            observations[slot] = ob

    try:
        start(list(range(pool_size)))
        with progress_bar(num_episodes, desc, unit="ep", disable=not show_progress) as bar:
            while any(s is not None for s in slots):
                if any(r is not None and not r["queue"] for r in slots):
                    episodes = np.array([r["episode"] if r else 0 for r in slots], np.int32)
                    calls = np.array([r["calls"] if r else 0 for r in slots], np.int32)
                    tic = time.time()
                    chunks = np.asarray(policy(observations, episode_keys(base_key, episodes, calls)))
                    policy_seconds += time.time() - tic
                    chunks = chunks.reshape(pool_size, action_horizon, -1)
                    for slot, record in enumerate(slots):
                        if record is not None and not record["queue"]:
                            record["queue"] = list(chunks[slot])
                            record["calls"] += 1
                actions = {slot: record["queue"].pop(0) for slot, record in enumerate(slots) if record is not None}
                finished = []
                for slot, (ob, reward, done, success, subtasks) in pool.step(actions).items():
                    record = slots[slot]
                    num_steps += 1
                    record["return"] += reward
                    record["best_step_reward"] = max(record["best_step_reward"], reward)
                    record["last_step_reward"] = reward
                    if subtasks is not None:
                        _record_subtasks(record, subtasks)
                    if discount is not None:
                        record["discounted_return"] += discount ** record["length"] * reward
                    record["length"] += 1
                    observations[slot] = ob
                    if done:
                        for key in ("queue", "calls"):
                            record.pop(key)
                        record["success"] = success
                        results.append(record)
                        finished.append(slot)
                        bar.update(1)
                if finished:
                    start(finished)
    finally:
        pool.close()
    elapsed = time.time() - started
    results.sort(key=lambda r: r["episode"])
    successes = np.array([r["success"] for r in results])
    returns = np.array([r["return"] for r in results])
    out = {
        "episodes": num_episodes,
        "success_rate": float(successes.mean()),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "episode_length_mean": float(np.mean([r["length"] for r in results])),
        "seconds": round(elapsed, 2),
        "ms_per_env_step": round(1000 * elapsed / max(num_steps, 1), 3),
        "policy_ms_per_env_step": round(1000 * policy_seconds / max(num_steps, 1), 3),
        "pool_size": pool_size,
        "workers": pool.workers,
        "compute": compute_context(),
        "per_episode_success": successes.tolist(),
        "per_episode_return": returns.tolist(),
        "per_episode_best_step_reward": [r["best_step_reward"] for r in results],
        "per_episode_last_step_reward": [r["last_step_reward"] for r in results],
    }
    if all(r["subtasks_at_end"] is not None for r in results):
        for name, key in SUBTASK_RECORDS.items():
            out[name] = [r[key].astype(int).tolist() for r in results]
    if discount is not None:
        out["discount"] = discount
        out["per_episode_discounted_return"] = [r["discounted_return"] for r in results]
    return out
