"""Which OGBench datasets evor can generate, and the upstream recipe for each.

The numbers follow OGBench's own dataset-generation commands (data_gen_scripts/commands.sh of the
OGBench repository): 'play' manipulation data comes from the non-Markovian plan oracles with action
noise 0.1 and noise smoothing 0.5; 'navigate' pointmaze data from the noisy subgoal oracle with
Gaussian action noise 0.5. Validation episodes are a tenth of the training episodes.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from evor.errors import DataError
from evor.interrupts import interrupts_deferred


@dataclasses.dataclass(frozen=True)
class DatasetRecipe:
    name: str  # dataset name, e.g. 'cube-single-play-v0'
    env_name: str  # the goal-conditioned environment the oracle drives, e.g. 'cube-single-v0'
    family: str  # 'cube' | 'scene' | 'puzzle' | 'pointmaze'
    num_episodes: int  # training episodes (validation: num_episodes // 10)
    episode_steps: int  # recorded steps per episode (max_episode_steps upstream)
    noise: float  # action-noise scale of the oracle
    noise_smoothing: float = 0.5  # plan oracles only

    @property
    def num_val_episodes(self) -> int:
        return max(1, self.num_episodes // 10)


_MANIP = [
    ("cube-single", "cube", 1000),
    ("cube-double", "cube", 1000),
    ("cube-triple", "cube", 3000),
    ("scene", "scene", 1000),
    ("puzzle-3x3", "puzzle", 1000),
    ("puzzle-4x4", "puzzle", 1000),
]
_MAZE = [("medium", 1000, 1001), ("large", 1000, 1001), ("giant", 500, 2001), ("teleport", 1000, 1001)]

RECIPES: dict[str, DatasetRecipe] = {}
for _env, _family, _episodes in _MANIP:
    RECIPES[f"{_env}-play-v0"] = DatasetRecipe(
        name=f"{_env}-play-v0", env_name=f"{_env}-v0", family=_family,
        num_episodes=_episodes, episode_steps=1001, noise=0.1)
for _maze, _episodes, _steps in _MAZE:
    RECIPES[f"pointmaze-{_maze}-navigate-v0"] = DatasetRecipe(
        name=f"pointmaze-{_maze}-navigate-v0", env_name=f"pointmaze-{_maze}-v0", family="pointmaze",
        num_episodes=_episodes, episode_steps=_steps, noise=0.5)

# Locomotion datasets whose generation needs OGBench's downloaded expert policies: usable when the
# user supplies the official files, never generated here.
EXPERT_POLICY_FAMILIES = ("antmaze", "humanoidmaze", "antsoccer")

# OGBench's environment families (a dataset name starts with one) and its single tasks per environment.
OGBENCH_FAMILIES = ("cube", "scene", "puzzle", "pointmaze", "antmaze", "humanoidmaze", "antsoccer", "visual")
NUM_SINGLE_TASKS = 5

_TASK_RE = re.compile(r"^(?P<dataset>.+?)-singletask(?:-task(?P<task>\d+))?-(?P<version>v\d+)$")


def make_env(env_name: str, **kwargs):
    """An OGBench environment built through gymnasium, with Ctrl-C held while MuJoCo starts up: raised
    inside its initialisation an interrupt can be lost or mangled (evor/interrupts.py)."""
    with interrupts_deferred():
        import gymnasium
        import ogbench  # noqa: F401  (registers the environments; evor/__init__.py set MUJOCO_GL)

        return gymnasium.make(env_name, **kwargs)


def reset_reproducibly(env, seed: int):
    """env.reset(seed=seed), made to give the same episode bit for bit in any process and after any
    history, which OGBench's reset alone does not do on a task (evaluation) environment:
    - a manipulation task reset settles the goal scene by stepping the physics with
      `self.action_space.sample()`, and its `action_space` is a property that builds a new, unseeded
      Box on every access, so those actions come from OS entropy. The state is put back afterwards,
      except `qacc_warmstart`, the solver's starting guess, which carries their last bits into the
      episode's first steps; a contact-rich episode then goes its own way. Cleared here, the solver
      starts from zero, as after `mj_resetData`. (Data collection does not settle a goal scene, and
      the generator's datasets are reproducible without this.)
    - locomaze draws its start noise from numpy's global generator and settles with its own
      persistent, unseeded action space: both are seeded for the reset, and the global generator is
      put back afterwards.
    """
    unwrapped = getattr(env, "unwrapped", env)  # any environment with reset(seed=) works
    saved = np.random.get_state()
    np.random.seed(seed % 2**32)  # its seeds are 32-bit
    if hasattr(getattr(unwrapped, "action_space", None), "seed"):
        unwrapped.action_space.seed(seed)
    try:
        ob, info = env.reset(seed=seed)
    finally:
        np.random.set_state(saved)
    data = getattr(unwrapped, "_data", None)  # manipspace
    if data is None:
        data = getattr(unwrapped, "data", None)  # locomaze
    if hasattr(data, "qacc_warmstart"):
        data.qacc_warmstart[:] = 0
    return ob, info


def subtask_successes(env) -> tuple[bool, ...] | None:
    """Whether each subtask of the current task is in its goal state now, or None for an environment
    without subtasks (locomaze, a test double). A manipulation task is solved when all are, and its
    single-task reward is their count minus their number (cube: each cube at its target; puzzle: each
    button in its goal colour; scene: the cube, the two buttons, the drawer, the window, in that order).
    This reads the same private check OGBench computes its reward and success from; it has no side
    effects, so asking it after a step changes nothing."""
    check = getattr(getattr(env, "unwrapped", env), "_compute_successes", None)
    if check is None:
        return None

    def flat(value):
        if isinstance(value, (list, tuple)):
            return [bool(x) for item in value for x in flat(item)]
        return [bool(value)]

    return tuple(flat(check()))


def get_recipe(dataset_name: str) -> DatasetRecipe:
    if dataset_name in RECIPES:
        return RECIPES[dataset_name]
    known = ", ".join(sorted(RECIPES))
    if dataset_name.split("-")[0] in EXPERT_POLICY_FAMILIES:
        raise DataError(
            f"Dataset '{dataset_name}' cannot be generated here: OGBench produced it with expert "
            f"locomotion policies that are only distributed with the official dataset download. "
            f"Place the official files '{dataset_name}.npz' and '{dataset_name}-val.npz' in the data "
            f"directory to use it. Datasets evor can generate: {known}.")
    raise DataError(f"Unknown dataset '{dataset_name}'. Datasets evor can generate: {known}.")


@dataclasses.dataclass(frozen=True)
class TaskName:
    """An OGBench single-task name split into its parts."""

    task: str  # e.g. 'cube-single-play-singletask-task2-v0'
    dataset: str  # e.g. 'cube-single-play-v0'
    task_id: int | None  # None means the environment's default task


def parse_task_name(task: str) -> TaskName:
    """'cube-single-play-singletask-task2-v0' -> dataset 'cube-single-play-v0', task 2.

    A bare dataset name ('cube-single-play-v0') is read as its default single task.
    """
    match = _TASK_RE.match(task)
    if match:
        dataset = f"{match['dataset']}-{match['version']}"
        task_id = int(match["task"]) if match["task"] else None
        _check_known(task, dataset, task_id)
        return TaskName(task=task, dataset=dataset, task_id=task_id)
    if re.match(r"^.+-v\d+$", task) and "singletask" not in task:
        head, version = task.rsplit("-", 1)
        _check_known(task, task, None)
        return TaskName(task=f"{head}-singletask-{version}", dataset=task, task_id=None)
    raise DataError(
        f"Cannot read task name '{task}': expected an OGBench single-task name such as "
        f"'cube-single-play-singletask-task2-v0' or a dataset name such as 'cube-single-play-v0'.")


def _check_known(task: str, dataset: str, task_id: int | None) -> None:
    """Name an unknown environment or task number as such, before anyone looks for its dataset."""
    if dataset.split("-")[0] not in OGBENCH_FAMILIES:
        raise DataError(f"Unknown OGBench task '{task}': '{dataset}' is not a dataset of an OGBench environment "
                        f"(families: {', '.join(OGBENCH_FAMILIES)}). Datasets evor can generate: "
                        f"{', '.join(sorted(RECIPES))}.")
    if task_id is not None and not 1 <= task_id <= NUM_SINGLE_TASKS:
        raise DataError(f"Unknown task number {task_id} in '{task}': OGBench single-task environments have tasks "
                        f"1-{NUM_SINGLE_TASKS} (e.g. '{dataset.rsplit('-', 1)[0]}-singletask-task1-"
                        f"{dataset.rsplit('-', 1)[1]}').")
