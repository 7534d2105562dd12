"""The in-memory offline dataset, and every way of getting one: OGBench files, a user's own files.

A `Dataset` is a flat table of transitions (s, a, r, s', m) plus `ends`, which marks the last
transition of each recorded trajectory. `masks` and `ends` are different things:
- `masks[t] = 0` where the episode truly ended at s' (do not bootstrap from s');
- `ends[t] = 1` where the recorded trajectory stops after transition t (s' is the last state we
  have; bootstrapping from it is still valid unless `masks[t] = 0`).
Multi-step targets walk along a trajectory up to `ends`; TD backups stop at `masks`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from evor.data.files import data_dir_path, dataset_files, is_validation_file
from evor.data.registry import EXPERT_POLICY_FAMILIES, RECIPES, parse_task_name
from evor.errors import DataError
from evor.interrupts import interrupts_deferred

ACTION_BOUND = 1.0
_ACTION_TOLERANCE = 1e-4  # float32 round-off on actions that were clipped to +-1


@dataclasses.dataclass(frozen=True)
class Dataset:
    observations: np.ndarray  # (T, obs_dim) float32
    actions: np.ndarray  # (T, action_dim) float32, within [-1, 1]
    rewards: np.ndarray  # (T,) float32
    masks: np.ndarray  # (T,) float32; 0 where the episode truly ended (no bootstrap)
    ends: np.ndarray  # (T,) float32; 1 at the last transition of each recorded trajectory
    next_observations: np.ndarray  # (T, obs_dim) float32
    source: str = "<memory>"  # where it came from, for messages

    def __len__(self) -> int:
        return int(self.observations.shape[0])

    @property
    def observation_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])

    @property
    def num_trajectories(self) -> int:
        return int(self.ends.sum())

    def reward_bounds(self) -> tuple[float, float]:
        return float(self.rewards.min()), float(self.rewards.max())

    def summary(self) -> dict:
        low, high = self.reward_bounds()
        return {
            "source": self.source,
            "transitions": len(self),
            "trajectories": self.num_trajectories,
            "observation_dim": self.observation_dim,
            "action_dim": self.action_dim,
            "reward_min": low,
            "reward_max": high,
            "reward_mean": float(self.rewards.mean()),
            "terminal_fraction": float(1.0 - self.masks.mean()),
            "sha256": self.digest(),
        }

    def digest(self) -> str:
        """SHA-256 of every array, in a fixed order: two runs trained on the same transitions have the same
        digest. Recorded because a dataset regenerated on another machine can differ in its last bits
        (docs/results.md, "Regenerated datasets"), and then a re-run cannot match its record bit for bit."""
        digest = hashlib.sha256()
        for name in ("observations", "actions", "rewards", "masks", "ends", "next_observations"):
            array = np.ascontiguousarray(getattr(self, name))
            digest.update(f"{name}{array.dtype}{array.shape}".encode())
            digest.update(memoryview(array).cast("B"))
        return digest.hexdigest()

    @classmethod
    def random(cls, num: int, observation_dim: int, action_dim: int, episode_length: int, seed: int = 0) -> Dataset:
        """Transitions with random contents (Gaussian observations, uniform actions, rewards in {-1, 0},
        no terminations, trajectories cut every `episode_length` rows): for speed benchmarks and for
        tests of code paths whose results do not depend on what the data means."""
        rng = np.random.default_rng(seed)
        obs = rng.normal(size=(num, observation_dim)).astype(np.float32)
        ends = np.zeros(num, np.float32)
        ends[episode_length - 1::episode_length] = 1
        return cls.from_arrays("random", observations=obs, next_observations=np.roll(obs, -1, 0),
                               actions=rng.uniform(-1, 1, (num, action_dim)).astype(np.float32),
                               rewards=-rng.integers(0, 2, num).astype(np.float32),
                               masks=np.ones(num, np.float32), ends=ends)

    @classmethod
    def from_arrays(cls, source: str, **arrays) -> Dataset:
        """Validate and build: every check names the source, the key and the problem."""
        required = ("observations", "actions", "rewards", "masks", "ends", "next_observations")
        for key in required:
            if key not in arrays or arrays[key] is None:
                raise DataError(f"{source}: key '{key}' is missing.")
        out = {}
        for key in required:
            value = np.asarray(arrays[key])
            if value.dtype.kind not in "biuf":
                raise DataError(f"{source}: key '{key}' has dtype {value.dtype}; expected numbers.")
            out[key] = value.astype(np.float32, copy=False)
        length = out["observations"].shape[0] if out["observations"].ndim else 0
        if length == 0:
            raise DataError(f"{source}: the dataset is empty (no transitions).")
        for key, ndim in (("observations", 2), ("actions", 2), ("next_observations", 2),
                          ("rewards", 1), ("masks", 1), ("ends", 1)):
            value = out[key]
            if value.ndim == ndim + 1 and ndim == 1 and value.shape[-1] == 1:
                value = out[key] = value[:, 0]  # (T, 1) columns are accepted as (T,)
            if value.ndim != ndim:
                raise DataError(f"{source}: key '{key}' has shape {value.shape}; expected {ndim} dimension(s).")
            if value.shape[0] != length:
                raise DataError(f"{source}: key '{key}' has {value.shape[0]} rows but 'observations' has "
                                f"{length}; all keys must have one row per transition.")
        if out["next_observations"].shape[1] != out["observations"].shape[1]:
            raise DataError(f"{source}: 'next_observations' has width {out['next_observations'].shape[1]} but "
                            f"'observations' has {out['observations'].shape[1]}.")
        for key, value in out.items():
            bad = ~np.isfinite(value)
            if bad.any():
                first = int(np.argwhere(bad)[0][0])
                raise DataError(f"{source}: key '{key}' has {int(bad.sum())} non-finite value(s) (NaN or inf), "
                                f"the first in row {first}.")
        peak = float(np.abs(out["actions"]).max())
        if peak > ACTION_BOUND + _ACTION_TOLERANCE:
            row = int(np.argmax(np.abs(out["actions"]).max(axis=1)))
            raise DataError(f"{source}: key 'actions' has values outside [-1, 1] (largest magnitude {peak:.4g}, "
                            f"row {row}). Rescale actions to [-1, 1] before importing.")
        for key in ("masks", "ends"):
            if not np.isin(out[key], (0.0, 1.0)).all():
                raise DataError(f"{source}: key '{key}' must contain only 0 and 1.")
        ends = out["ends"].copy()
        ends[-1] = 1.0  # the table's last row always closes a trajectory
        out["ends"] = ends
        return cls(source=source, **out)


# --------------------------------------------------------------------------- reading npz files safely


def inspect_npz(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shapes and dtypes of the arrays in an .npz file, reading only headers."""
    if not path.exists():
        raise DataError(f"{path}: file not found.")
    try:
        with zipfile.ZipFile(path) as archive:
            out = {}
            for name in archive.namelist():
                if not name.endswith(".npy"):
                    continue
                with archive.open(name) as f:
                    version = np.lib.format.read_magic(f)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(f)
                out[name[:-4]] = (shape, dtype)
            return out
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable .npz file (truncated or corrupt?): {exc}.") from None


def check_ogbench_file(path: Path, need_qpos: bool = True) -> None:
    """Check an OGBench-format file's keys, shapes and dtypes before anything loads it."""
    header = inspect_npz(path)
    required = ["observations", "actions", "terminals"] + (["qpos"] if need_qpos else [])
    for key in required:
        if key not in header:
            raise DataError(f"{path}: key '{key}' is missing (found: {', '.join(sorted(header)) or 'nothing'}).")
    length = header["observations"][0][0] if header["observations"][0] else 0
    if length == 0:
        raise DataError(f"{path}: the dataset is empty (key 'observations' has no rows).")
    for key, (shape, dtype) in header.items():
        if dtype.kind not in "biuf":
            raise DataError(f"{path}: key '{key}' has dtype {dtype}; expected numbers.")
        if not shape or shape[0] != length:
            raise DataError(f"{path}: key '{key}' has shape {shape} but 'observations' has {length} rows; "
                            f"all keys must have one row per step.")


def _load_npz_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path}: could not be read (truncated or corrupt?): {exc}.") from None


# --------------------------------------------------------------------------- OGBench tasks


def read_sidecar(dataset_name: str, data_dir: str | os.PathLike | None = None) -> dict | None:
    """The dataset's sidecar `NAME.json` (how it was generated: recipe, seed, episode counts, versions), or
    None where it has none (an imported file). A damaged sidecar is a DataError naming it."""
    path = dataset_files(dataset_name, data_dir).sidecar
    if not path.exists():
        return None
    remedy = f"regenerate the dataset with `evor data generate {dataset_name}`, or move the sidecar aside."
    try:
        sidecar = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"Cannot read the dataset sidecar {path} ({exc}); {remedy}") from None
    if not isinstance(sidecar, dict):
        raise DataError(f"{path} is not a dataset sidecar (expected a JSON object); {remedy}")
    return sidecar


def _missing_data_message(dataset: str, paths: tuple[Path, Path], data_dir) -> str:
    missing = ", ".join(str(p) for p in paths if not p.exists())
    if dataset.split("-")[0] in EXPERT_POLICY_FAMILIES:
        return (f"Dataset '{dataset}' is not present ({missing}). It needs OGBench's expert locomotion "
                f"policies and cannot be generated here; download the official files '{dataset}.npz' and "
                f"'{dataset}-val.npz' on a machine with internet access and place them in {paths[0].parent}.")
    if dataset not in RECIPES:
        raise DataError(f"Unknown dataset '{dataset}'. Datasets evor can generate: {', '.join(sorted(RECIPES))}.")
    out = f" --out {data_dir}" if data_dir is not None else ""
    return (f"Dataset '{dataset}' is not present ({missing}). Generate it first with:\n"
            f"    evor data generate {dataset}{out}\n"
            f"(add --episodes 100 for a small version; the full dataset takes about 30 core-minutes per "
            f"million transitions).")


def load_task(task: str, data_dir: str | os.PathLike | None = None, env: bool = True):
    """The evaluation environment and the train/validation datasets of an OGBench single task.

    `task` is an OGBench single-task name ('cube-single-play-singletask-task2-v0') or a dataset
    name (its default task). Returns (env, train, val); env is None when `env=False`.
    Rewards and masks are relabelled for the task by OGBench's own code.
    """
    parsed = parse_task_name(task)
    train_path, val_path, _ = dataset_files(parsed.dataset, data_dir)
    if not (train_path.exists() and val_path.exists()):
        raise DataError(_missing_data_message(parsed.dataset, (train_path, val_path), data_dir))
    for path in (train_path, val_path):
        check_ogbench_file(path)
    try:
        # Deferred: a Ctrl-C inside MuJoCo's start-up can be lost or mangled (evor/interrupts.py).
        with interrupts_deferred():
            import ogbench  # imported late: MUJOCO_GL must be set first (evor/__init__.py)

            environment, train, val = ogbench.make_env_and_datasets(parsed.task, dataset_path=str(train_path))
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"{train_path} or {val_path}: could not be read (truncated or corrupt?): {exc}.") from None
    except gym_errors() as exc:
        raise DataError(f"Task '{task}' is not an OGBench single-task environment: {exc}.") from None
    train_set = _from_ogbench(train, str(train_path))
    val_set = _from_ogbench(val, str(val_path))
    if not env:
        environment.close()
        environment = None
    return environment, train_set, val_set


def gym_errors():
    import gymnasium

    return (gymnasium.error.Error,)


def _from_ogbench(d: dict[str, np.ndarray], source: str) -> Dataset:
    return Dataset.from_arrays(
        source,
        observations=d["observations"],
        actions=d["actions"],
        rewards=d["rewards"],
        masks=d["masks"],
        ends=d["terminals"],  # OGBench 'terminals' mark where a recorded trajectory stops
        next_observations=d["next_observations"],
    )


# --------------------------------------------------------------------------- a user's own data


_TERMINATION_KEYS = ("terminals", "terminations")
_TIMEOUT_KEYS = ("timeouts", "truncations")


def import_dataset(path: str | os.PathLike) -> Dataset:
    """Read a user's dataset (.npz, or HDF5 with D4RL or Minari layout) into a validated Dataset.

    Keys: observations, actions, rewards, terminals (or terminations: the episode truly ended),
    timeouts (or truncations: the recording was cut), optional next_observations, and optional `ends`
    (with next_observations: where each recorded trajectory stops, as `save_dataset` writes it). A file in
    OGBench's own layout (with `qpos`, without timeouts) reads `terminals` as trajectory cut-offs. Minari HDF5 files
    (one group per episode, observations one longer than actions) are read episode by episode.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: file not found.")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        arrays = _load_npz_arrays(path)
    elif suffix in (".h5", ".hdf5"):
        arrays = _load_hdf5(path)
    else:
        raise DataError(f"{path}: unsupported file type '{suffix}'; use .npz, .h5 or .hdf5.")
    return _transitions_from_arrays(arrays, str(path))


def _load_hdf5(path: Path) -> dict[str, np.ndarray]:
    try:
        import h5py
    except ImportError:
        raise DataError(f"{path}: reading HDF5 files needs h5py, which is not installed: "
                        f"pip install 'evor[hdf5]'.") from None

    try:
        with h5py.File(path, "r") as f:
            episode_groups = sorted((k for k in f.keys() if isinstance(f[k], h5py.Group) and k.startswith("episode")),
                                    key=lambda k: int(k.split("_")[-1]) if k.split("_")[-1].isdigit() else k)
            if episode_groups:
                return _minari_to_flat(path, [f[k] for k in episode_groups])
            return {k: f[k][...] for k in f.keys() if isinstance(f[k], h5py.Dataset)}
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {exc}.") from None


def _minari_to_flat(path: Path, groups) -> dict[str, np.ndarray]:
    parts: dict[str, list] = {k: [] for k in ("observations", "next_observations", "actions", "rewards",
                                              "terminals", "timeouts")}
    for g in groups:
        for key in ("observations", "actions", "rewards"):
            if key not in g:
                raise DataError(f"{path}: episode group '{g.name}' has no key '{key}'.")
        obs = np.asarray(g["observations"][...])
        steps = len(g["actions"])
        if obs.shape[0] != steps + 1:
            raise DataError(f"{path}: in '{g.name}', 'observations' has {obs.shape[0]} rows; Minari layout "
                            f"needs one more than 'actions' ({steps}).")
        parts["observations"].append(obs[:-1])
        parts["next_observations"].append(obs[1:])
        parts["actions"].append(g["actions"][...])
        parts["rewards"].append(g["rewards"][...])
        term = next((g[k][...] for k in _TERMINATION_KEYS if k in g), np.zeros(steps))
        trunc = next((g[k][...] for k in _TIMEOUT_KEYS if k in g), np.zeros(steps))
        parts["terminals"].append(term)
        parts["timeouts"].append(trunc)
    return {k: np.concatenate(v) for k, v in parts.items()}


def _from_ogbench_layout(arrays: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """OGBench's own files (observations, actions, terminals, qpos, ...; no timeouts) use `terminals` for
    where a recorded trajectory stops, not for a true termination (D4RL's meaning). Read them that way:
    `terminals` become cut-offs, and terminations come only from `masks` if the file has them."""
    if "qpos" not in arrays or "terminals" not in arrays or any(k in arrays for k in _TIMEOUT_KEYS + ("terminations",)):
        return arrays
    if "rewards" not in arrays:
        raise DataError(f"{source}: an OGBench dataset file (observations, actions, terminals, qpos) has no rewards: "
                        f"OGBench computes them per task. Put it in the data directory as NAME.npz (with "
                        f"NAME-val.npz) and train on one of its tasks, e.g. `evor train --task "
                        f"NAME-singletask-task1-v0`.")
    out = {k: v for k, v in arrays.items() if k != "terminals"}
    out["timeouts"] = arrays["terminals"]
    masks = arrays.get("masks")
    out["terminations"] = np.zeros(len(arrays["observations"])) if masks is None else 1.0 - np.asarray(masks)
    return out


def _transitions_from_arrays(arrays: dict[str, np.ndarray], source: str) -> Dataset:
    arrays = _from_ogbench_layout(arrays, source)
    for key in ("observations", "actions", "rewards"):
        if key not in arrays:
            raise DataError(f"{source}: key '{key}' is missing (found: {', '.join(sorted(arrays)) or 'nothing'}).")
    known = ("observations", "actions", "rewards", "next_observations", "ends") + _TERMINATION_KEYS + _TIMEOUT_KEYS
    for key in (k for k in known if k in arrays):
        column = np.asarray(arrays[key])
        if column.dtype.kind not in "biuf":
            raise DataError(f"{source}: key '{key}' has dtype {column.dtype}; expected numbers.")
        if column.ndim == 0:
            raise DataError(f"{source}: key '{key}' is a single value; expected one row per transition.")
    length = len(arrays["observations"])
    if length == 0:
        raise DataError(f"{source}: the dataset is empty (key 'observations' has no rows).")
    term_key = next((k for k in _TERMINATION_KEYS if k in arrays), None)
    timeout_key = next((k for k in _TIMEOUT_KEYS if k in arrays), None)
    if term_key is None and timeout_key is None:
        raise DataError(f"{source}: needs 'terminals' (or 'terminations') and/or 'timeouts' (or 'truncations') "
                        f"to know where episodes end.")
    for key in [k for k in ("actions", "rewards", term_key, timeout_key, "next_observations", "ends") if k in arrays]:
        if len(arrays[key]) != length:
            raise DataError(f"{source}: key '{key}' has {len(arrays[key])} rows but 'observations' has {length}.")
    terminated = np.asarray(arrays[term_key]).reshape(length, -1)[:, 0] > 0 if term_key else np.zeros(length, bool)
    truncated = np.asarray(arrays[timeout_key]).reshape(length, -1)[:, 0] > 0 if timeout_key else np.zeros(length, bool)
    observations = np.asarray(arrays["observations"])
    if observations.ndim != 2:
        raise DataError(f"{source}: key 'observations' has shape {observations.shape}; expected (transitions, dim).")
    if "next_observations" in arrays:
        keep = np.ones(length, bool)
        next_obs = np.asarray(arrays["next_observations"])
        # evor's own files (`save_dataset`) say where trajectories stop: a termination need not end one
        # (OGBench single tasks go on after success)
        ends = np.asarray(arrays["ends"]).reshape(length) > 0 if "ends" in arrays else terminated | truncated
    else:
        # s'_t = s_{t+1} inside an episode. A step cut by a timeout (or the table's last row) has no
        # recorded s' and is dropped; a true termination keeps its row, s' is never bootstrapped from.
        next_obs = np.concatenate([observations[1:], observations[-1:]])
        keep = ~(truncated & ~terminated)
        keep[-1] = keep[-1] and terminated[-1]
        next_obs = np.where(terminated[:, None], observations, next_obs)
        # A kept row closes its trajectory if the episode terminated there or the next row was dropped.
        ends = terminated | ~np.concatenate([keep[1:], [False]])
    if not keep.any():
        raise DataError(f"{source}: no usable transitions (every step ends an episode without a next observation).")
    return Dataset.from_arrays(
        source,
        observations=observations[keep],
        actions=np.asarray(arrays["actions"])[keep],
        rewards=np.asarray(arrays["rewards"])[keep],
        masks=(~terminated[keep]).astype(np.float32),
        ends=ends[keep].astype(np.float32),
        next_observations=next_obs[keep],
    )


def save_dataset(dataset: Dataset, path: str | os.PathLike) -> Path:
    """Write a validated Dataset as an .npz that `import_dataset` reads back unchanged."""
    from evor.data.files import atomic_write_npz

    path = Path(path).expanduser()
    atomic_write_npz(path, {
        "observations": dataset.observations, "actions": dataset.actions, "rewards": dataset.rewards,
        "terminals": 1.0 - dataset.masks, "timeouts": dataset.ends * dataset.masks,
        "next_observations": dataset.next_observations, "ends": dataset.ends,
    })
    return path


def list_datasets(data_dir: str | os.PathLike | None = None) -> list[dict]:
    """What is present in the data directory: names, sizes and sidecar facts."""
    directory = data_dir_path(data_dir)
    if not directory.exists():
        return []
    rows = []
    for train in sorted(directory.glob("*.npz")):
        if is_validation_file(train):
            continue
        name = train.name[:-4]
        val = dataset_files(name, directory).val
        row = {"name": name, "train_mb": round(train.stat().st_size / 2**20, 1),
               "val_mb": round(val.stat().st_size / 2**20, 1) if val.exists() else None,
               "generator": "unknown (no sidecar)"}
        try:
            meta = read_sidecar(name, directory)
        except DataError:
            row["generator"] = "unreadable sidecar"
        else:
            if meta is not None:
                row.update(generator=f"{meta.get('generator')} v{meta.get('generator_version')}",
                           seed=meta.get("seed"), train_episodes=meta.get("train_episodes"),
                           val_episodes=meta.get("val_episodes"), train_transitions=meta.get("train_transitions"),
                           ogbench=meta.get("versions", {}).get("ogbench"),
                           mujoco=meta.get("versions", {}).get("mujoco"))
        rows.append(row)
    return rows
