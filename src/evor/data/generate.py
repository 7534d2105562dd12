"""Generate OGBench datasets locally with the oracles that ship inside the `ogbench` wheel.

The recipe follows OGBench's published data-generation procedure (see `registry.py`); the code is
ours. What we add:
- every episode draws from its own random streams, seeded from (seed, episode index), so the files are
  byte-identical whatever the number of worker processes;
- arrays are preallocated at their final size (every episode records exactly `episode_steps` steps);
- files are written to a temporary name and renamed, so an interrupted run leaves no final file;
- finished episodes are saved every `SHARD_EPISODES` episodes in a hidden `.NAME.partial/` directory
  beside the output, so an interrupted or killed run loses at most one shard's work: the same command
  resumes it, and the files come out byte-identical to an uninterrupted run's.

File layout (as OGBench's own files): `observations`, `actions`, `terminals` (1 at the last recorded
step of each episode), `qpos`, `qvel`, and `button_states` for environments with buttons.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

import evor  # noqa: F401  (sets MUJOCO_GL before ogbench is imported)
from evor.data.files import atomic_write_json, atomic_write_npz, data_dir_path, dataset_files
from evor.data.registry import DatasetRecipe, get_recipe, make_env
from evor.errors import DataError
from evor.interrupts import interrupts_deferred
from evor.progress import progress_bar

GENERATOR_VERSION = "1"
SHARD_EPISODES = 20  # episodes per saved shard of a partial run: a kill loses at most this many


# --------------------------------------------------------------------------- episode rollouts


def episode_seed(seed: int, episode_index: int) -> int:
    """A 32-bit seed for one episode, independent of which worker runs it."""
    return int(np.random.SeedSequence([seed, episode_index]).generate_state(1)[0])


class _EpisodeRunner:
    """Owns one environment (and its oracles) and records whole episodes."""

    def __init__(self, recipe: DatasetRecipe):
        self.recipe = recipe
        kwargs = dict(terminate_at_goal=False, max_episode_steps=recipe.episode_steps)
        if recipe.family != "pointmaze":
            kwargs["mode"] = "data_collection"
        # Ctrl-C held for the whole start-up, not only make_env's: the oracles import SciPy, whose
        # compiled modules turn an interrupt during their initialisation into "ImportError:
        # initialization failed" (seen in CI with SIGINT 1.5 s after launch; evor/interrupts.py).
        with interrupts_deferred():
            self.env = make_env(recipe.env_name, **kwargs)
            self.has_buttons = False
            if recipe.family == "pointmaze":
                self._init_maze_cells()
            else:
                self._init_oracles()
                self.env.reset(seed=0)
                self.has_buttons = hasattr(self.env.unwrapped, "_cur_button_states")

    # Manipulation: the plan (non-Markovian) oracles, one per kind of sub-task.
    def _init_oracles(self):
        from ogbench.manipspace.oracles.plan.button_plan import ButtonPlanOracle
        from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle
        from ogbench.manipspace.oracles.plan.drawer_plan import DrawerPlanOracle
        from ogbench.manipspace.oracles.plan.window_plan import WindowPlanOracle

        noise = dict(env=self.env, noise=self.recipe.noise, noise_smoothing=self.recipe.noise_smoothing)
        if self.recipe.family == "cube":
            self.oracles = {"cube": CubePlanOracle(**noise)}
        elif self.recipe.family == "scene":
            self.oracles = {
                "cube": CubePlanOracle(**noise),
                "button": ButtonPlanOracle(**noise),
                "drawer": DrawerPlanOracle(**noise),
                "window": WindowPlanOracle(**noise),
            }
        else:  # puzzle: the gripper stays closed and only presses buttons
            self.oracles = {"button": ButtonPlanOracle(**noise, gripper_always_closed=True)}

    def _stacking_probability(self) -> float:
        # Per-episode probability of stacking a cube on another when a new target is set.
        name = self.recipe.env_name
        if "single" in name:
            return 0.0
        if "double" in name:
            return float(np.random.uniform(0.0, 0.25))
        if "triple" in name:
            return float(np.random.uniform(0.05, 0.35))
        return 0.5

    def _manipulation_episode(self, seed: int) -> dict[str, np.ndarray]:
        env, steps = self.env, self.recipe.episode_steps
        np.random.seed(seed)
        attempt = 0
        while True:
            attempt += 1
            # The first reset seeds env.np_random; scene retries continue the same stream.
            ob, info = env.reset(seed=seed if attempt == 1 else None)
            p_stack = self._stacking_probability()
            oracle = self.oracles[info["privileged/target_task"]]
            oracle.reset(ob, info)
            record = self._empty_record(ob, info)
            done, t = False, 0
            while not done:
                action = np.clip(np.asarray(oracle.select_action(ob, info), dtype=np.float64), -1, 1)
                next_ob, _, terminated, truncated, info = env.step(action)
                done = terminated or truncated
                if oracle.done:  # sub-task finished: pick a new target and its oracle
                    oracle_ob, oracle_info = env.unwrapped.set_new_target(p_stack=p_stack)
                    oracle = self.oracles[oracle_info["privileged/target_task"]]
                    oracle.reset(oracle_ob, oracle_info)
                self._store(record, t, ob, action, info)
                ob, t = next_ob, t + 1
            self._check_length(t, steps)
            if self.recipe.family != "scene" or self._scene_is_healthy(record["qpos"]):
                record["terminals"][-1] = True
                return record
            if attempt >= 100:
                raise DataError(f"{self.recipe.name}: 100 unhealthy scene episodes in a row (seed {seed}).")

    @staticmethod
    def _scene_is_healthy(qpos: np.ndarray) -> bool:
        # The cube must stay visible unless it is in the drawer, else goal images become ambiguous.
        cube_xyz = qpos[:, 14:17]
        too_far_right = (cube_xyz[:, 1] >= 0.29).any()
        left_outside_drawer = ((cube_xyz[:, 1] <= -0.3) & ((cube_xyz[:, 2] < 0.06) | (cube_xyz[:, 2] > 0.08))).any()
        return not (too_far_right or left_outside_drawer)

    # Pointmaze: the noisy subgoal oracle moves towards the next waypoint on the shortest path.
    def _init_maze_cells(self):
        maze = self.env.unwrapped.maze_map
        free = lambda i, j: maze[i, j] == 0  # noqa: E731
        self.all_cells, self.vertex_cells = [], []
        for i in range(maze.shape[0]):
            for j in range(maze.shape[1]):
                if not free(i, j):
                    continue
                self.all_cells.append((i, j))
                vertical_hall = free(i - 1, j) and free(i + 1, j) and not free(i, j - 1) and not free(i, j + 1)
                horizontal_hall = free(i, j - 1) and free(i, j + 1) and not free(i - 1, j) and not free(i + 1, j)
                if not (vertical_hall or horizontal_hall):
                    self.vertex_cells.append((i, j))  # goals are drawn from junctions and dead ends

    def _maze_episode(self, seed: int) -> dict[str, np.ndarray]:
        env, unwrapped, steps = self.env, self.env.unwrapped, self.recipe.episode_steps
        np.random.seed(seed)
        unwrapped.action_space.seed(seed)
        init_ij = self.all_cells[np.random.randint(len(self.all_cells))]
        goal_ij = self.vertex_cells[np.random.randint(len(self.vertex_cells))]
        ob, info = env.reset(seed=seed, options=dict(task_info=dict(init_ij=init_ij, goal_ij=goal_ij)))
        record, done, t = None, False, 0
        while not done:
            subgoal_xy, _ = unwrapped.get_oracle_subgoal(unwrapped.get_xy(), unwrapped.cur_goal_xy)
            direction = subgoal_xy - unwrapped.get_xy()
            direction = direction / (np.linalg.norm(direction) + 1e-6)
            action = np.clip(direction + np.random.normal(0, self.recipe.noise, direction.shape), -1, 1)
            next_ob, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            if info["success"]:  # navigate: a new goal as soon as the current one is reached
                unwrapped.set_goal(self.vertex_cells[np.random.randint(len(self.vertex_cells))])
            if record is None:
                record = self._empty_record(ob, info)
            self._store(record, t, ob, action, info)
            ob, t = next_ob, t + 1
        self._check_length(t, steps)
        record["terminals"][-1] = True
        return record

    def _check_length(self, t: int, steps: int):
        if t != steps:
            raise DataError(f"{self.recipe.name}: an episode ended after {t} steps, expected {steps}.")

    def _empty_record(self, ob, info) -> dict[str, np.ndarray]:
        steps = self.recipe.episode_steps
        qpos = info.get("prev_qpos", info.get("qpos"))
        qvel = info.get("prev_qvel", info.get("qvel"))
        record = {
            "observations": np.zeros((steps, np.size(ob)), np.float32),
            "actions": np.zeros((steps, self.env.action_space.shape[0]), np.float32),
            "terminals": np.zeros((steps,), bool),
            "qpos": np.zeros((steps, np.size(qpos)), np.float32),
            "qvel": np.zeros((steps, np.size(qvel)), np.float32),
        }
        if self.has_buttons:
            record["button_states"] = np.zeros((steps, np.size(info["prev_button_states"])), np.int64)
        return record

    def _store(self, record, t, ob, action, info):
        record["observations"][t] = ob
        record["actions"][t] = action
        record["qpos"][t] = info["prev_qpos"]
        record["qvel"][t] = info["prev_qvel"]
        if self.has_buttons:
            record["button_states"][t] = info["prev_button_states"]

    def run(self, seed: int) -> dict[str, np.ndarray]:
        if self.recipe.family == "pointmaze":
            return self._maze_episode(seed)
        return self._manipulation_episode(seed)


# --------------------------------------------------------------------------- worker processes

_WORKER_RUNNER: _EpisodeRunner | None = None


def _worker_init(recipe: DatasetRecipe):
    global _WORKER_RUNNER
    _WORKER_RUNNER = _EpisodeRunner(recipe)


def _worker_episode(job: tuple[int, int]) -> tuple[int, dict[str, np.ndarray]]:
    episode_index, seed = job
    return episode_index, _WORKER_RUNNER.run(seed)


# --------------------------------------------------------------------------- the public entry point


def generate_dataset(
    dataset_name: str,
    out_dir: str | os.PathLike | None = None,
    episodes: int | None = None,
    workers: int = 2,
    seed: int = 0,
    show_progress: bool = True,
) -> dict[str, Path]:
    """Generate `NAME.npz`, `NAME-val.npz` and `NAME.json` (sidecar) in `out_dir`.

    `episodes` is the number of training episodes (default: the upstream recipe's); validation gets
    a tenth of it, at least one.
    """
    recipe = get_recipe(dataset_name)
    if episodes is not None and episodes < 1:
        raise DataError(f"--episodes must be at least 1, got {episodes}.")
    if workers < 1:
        raise DataError(f"--workers must be at least 1, got {workers}.")
    num_train = episodes if episodes is not None else recipe.num_episodes
    num_val = max(1, num_train // 10)
    num_episodes = num_train + num_val
    out_dir = data_dir_path(out_dir)
    _ensure_writable(out_dir)

    steps = recipe.episode_steps
    request = {"dataset": dataset_name, "seed": seed, "train_episodes": num_train, "val_episodes": num_val,
               "generator_version": GENERATOR_VERSION}
    partial = _PartialRun(out_dir / f".{dataset_name}.partial", request)
    arrays: dict[str, np.ndarray] | None = None

    def place(index: int, record: dict[str, np.ndarray]):
        nonlocal arrays
        if arrays is None:  # preallocate the final arrays from the first episode's shapes
            arrays = {k: np.zeros((num_episodes * steps,) + v.shape[1:], v.dtype) for k, v in record.items()}
        for key, value in record.items():
            arrays[key][index * steps:(index + 1) * steps] = value

    for index, record in partial.saved_episodes():
        place(index, record)
    done = set(partial.saved_indices)
    jobs = [(i, episode_seed(seed, i)) for i in range(num_episodes) if i not in done]
    if done and show_progress:
        print(f"resuming {dataset_name}: {len(done)} of {num_episodes} episodes already saved in {partial.directory}",
              file=sys.stderr)
    started = time.time()

    def finished(index: int, record: dict[str, np.ndarray]):
        place(index, record)
        partial.add(index, record, seconds=time.time() - started)
        bar.update(steps)

    with progress_bar(total=num_episodes * steps, initial=len(done) * steps, desc=f"generate {dataset_name}",
                      unit="step", disable=not show_progress) as bar:
        try:
            if workers == 1:
                runner = _EpisodeRunner(recipe) if jobs else None
                for index, ep_seed in jobs:
                    finished(index, runner.run(ep_seed))
            elif jobs:
                context = mp.get_context("spawn")  # no inherited MuJoCo/JAX state in the workers
                with context.Pool(workers, initializer=_worker_init, initargs=(recipe,)) as pool:
                    for index, record in pool.imap_unordered(_worker_episode, jobs, chunksize=1):
                        finished(index, record)
        except BaseException:
            partial.flush(seconds=time.time() - started)  # keep every finished episode for the next call
            if partial.saved_indices:
                print(f"evor: {len(partial.saved_indices)} of {num_episodes} episodes of {dataset_name} are saved "
                      f"in {partial.directory}; the same command resumes from there.", file=sys.stderr)
            raise
    # Pending episodes are not flushed here: the final files are written next, and then the shards go.
    elapsed = partial.seconds_before + (time.time() - started)

    split = num_train * steps
    train = {k: v[:split] for k, v in arrays.items()}
    val = {k: v[split:] for k, v in arrays.items()}
    paths = dataset_files(dataset_name, out_dir)._asdict()
    atomic_write_npz(paths["train"], train)
    atomic_write_npz(paths["val"], val)
    atomic_write_json(paths["sidecar"], {
        "dataset": dataset_name,
        "generator": "evor",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "train_episodes": num_train,
        "val_episodes": num_val,
        "episode_steps": steps,
        "train_transitions": num_train * (steps - 1),
        "val_transitions": num_val * (steps - 1),
        "recipe": {"env_name": recipe.env_name, "family": recipe.family, "noise": recipe.noise,
                   "noise_smoothing": recipe.noise_smoothing if recipe.family != "pointmaze" else None},
        "workers": workers,
        "seconds": round(elapsed, 2),  # over every call that worked on it, when it was resumed
        "resumed_episodes": len(done),
        "versions": library_versions(),
        "machine": machine_description(),
    })
    partial.remove()
    return paths


class _PartialRun:
    """The finished episodes of a generation that has not written its files yet.

    A directory with `request.json` (what is being generated, and the seconds spent so far) and shards
    `shard-XXXXX.npz`, each holding whole episodes and their indices. Shards are written atomically
    before the request's seconds are updated, so a kill at any point leaves a readable directory. Only
    evor writes these files and they are read with `allow_pickle=False`.
    """

    def __init__(self, directory: Path, request: dict):
        self.directory, self.request = directory, request
        self.pending: list[tuple[int, dict[str, np.ndarray]]] = []
        self.saved_indices: set[int] = set()
        self.seconds_before = 0.0  # spent by earlier calls, read from request.json
        self.shards: list[Path] = []
        manifest = directory / "request.json"
        if not manifest.exists():
            return
        try:
            saved = json.loads(manifest.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"'{manifest}' is unreadable ({exc}); delete '{directory}' to start over.") from None
        asked = {k: saved.get(k) for k in request}
        if asked != request:
            differs = ", ".join(f"{k} {asked[k]} there, {request[k]} now" for k in request if asked[k] != request[k])
            raise DataError(f"'{directory}' holds a partial generation with other options ({differs}). Rerun with "
                            "its options to resume it, or delete the directory to start over.")
        self.seconds_before = float(saved.get("seconds", 0.0))
        self.shards = sorted(directory.glob("shard-*.npz"))

    def saved_episodes(self):
        """Yield (episode index, record) for every episode in the saved shards."""
        for shard in self.shards:
            try:
                with np.load(shard, allow_pickle=False) as f:
                    indices = f["episode_index"]
                    columns = {k: f[k] for k in f.files if k != "episode_index"}
            except (OSError, ValueError, KeyError) as exc:
                raise DataError(f"'{shard}' is unreadable ({exc}); delete '{self.directory}' to start over.") from None
            steps = len(next(iter(columns.values()))) // max(len(indices), 1)
            for j, index in enumerate(indices.tolist()):
                self.saved_indices.add(index)
                yield index, {k: v[j * steps:(j + 1) * steps] for k, v in columns.items()}

    def add(self, index: int, record: dict[str, np.ndarray], seconds: float):
        self.pending.append((index, record))
        if len(self.pending) >= SHARD_EPISODES:
            self.flush(seconds)

    def flush(self, seconds: float):
        """Write the pending episodes as one shard; `seconds`: spent by this call so far."""
        if not self.pending:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        indices = [index for index, _ in self.pending]
        shard = {k: np.concatenate([record[k] for _, record in self.pending]) for k in self.pending[0][1]}
        shard["episode_index"] = np.asarray(indices, np.int64)
        path = self.directory / f"shard-{len(self.shards):05d}.npz"
        atomic_write_npz(path, shard)
        self.shards.append(path)
        self.saved_indices.update(indices)
        self.pending = []
        atomic_write_json(self.directory / "request.json", {**self.request, "seconds": round(self.seconds_before + seconds, 2)})

    def remove(self):
        shutil.rmtree(self.directory, ignore_errors=True)


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("evor", "ogbench", "mujoco", "dm_control", "gymnasium", "numpy", "jax", "jaxlib", "flax", "optax"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    import platform

    out["python"] = platform.python_version()
    out["evor_source"] = source_revision()
    return out


# Vector instruction sets that decide which compiled code paths MuJoCo and XLA take (and so the last bits
# of their floating-point results).
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def machine_description() -> dict:
    """The CPU a process ran on: its model, vector instruction sets and (x86 Linux) exact part and microcode
    revision. Recorded with every dataset and run because regenerating a MuJoCo manipulation dataset from
    the same seed and code has given files that differ in their last bits on some machines (docs/results.md,
    "Regenerated datasets"): with this, two records say whether they ran on the same kind of CPU."""
    import platform

    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:  # the first processor's entry; all cores of a machine are alike
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
                if not line.strip():
                    break
    except OSError:  # not Linux: the model from platform, no flags
        pass
    flags = set(fields.get("flags", "").split())
    described = {"cpu": fields.get("model name") or platform.processor() or platform.machine(),
                 "cpu_simd": [flag for flag in SIMD_FLAGS if flag in flags]}
    # The model name is shared by parts that differ (one "AMD EPYC" name covers several generations);
    # x86 Linux also gives the exact part and its microcode revision.
    identity = [(label, fields.get(key)) for label, key in (
        ("family", "cpu family"), ("model", "model"), ("stepping", "stepping"), ("microcode", "microcode"))]
    if all(value for _, value in identity):
        described["cpu_id"] = " ".join(f"{label} {value}" for label, value in identity)
    return described


def source_revision(source: Path | None = None) -> str:
    """The git commit evor was imported from ('+dirty' when its source has uncommitted changes), or
    'not a git checkout' (an installed wheel): results can then name the code that produced them.
    `source` (default: this package's directory) is what is checked."""
    import subprocess

    source = source or Path(__file__).resolve().parents[1]  # src/evor
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        if commit.returncode != 0:
            return "not a git checkout"
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no", "--", "."],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not a git checkout"
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _ensure_writable(directory: Path):
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"Cannot create output directory '{directory}': {exc.strerror}.") from None
    if not os.access(directory, os.W_OK):
        raise DataError(f"Output directory '{directory}' is not writable.")
