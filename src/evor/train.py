"""Training: the fused loop over one or several seeds, runs (`Run`: a trained agent with its config,
ready to act and evaluate), resumption, and `fit` for in-memory datasets.

Configs live in evor.config, checkpoints in evor.checkpoints, the run directory's files in evor.rundir.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from evor.agents import build_agent, get_agent_class
from evor.agents.base import Agent
from evor.agents.evor import InferenceSettings
from evor.checkpoints import (  # noqa: F401
    CHECKPOINTS_KEPT,
    checkpoint_name,
    checkpoint_step,
    checkpoints,
    latest_checkpoint,
    legacy_checkpoints,
    load_checkpoint,
    load_latest_valid_checkpoint,
    refuse_legacy,
    save_checkpoint,
)
from evor.config import (  # noqa: F401  (the config API, also reachable as evor.train.*)
    FIELDS_ADDED_LATER,
    TrainConfig,
    _build,
    agent_config,
    available_presets,
    config_json,
    inference_settings,
    load_config_file,
    load_preset,
    make_config,
    resume_config,
    resume_differences,
    saved_config,
    with_added_fields,
)
from evor.data.dataset import load_task, read_sidecar
from evor.data.files import atomic_write_json
from evor.data.generate import library_versions, machine_description
from evor.data.registry import parse_task_name
from evor.errors import ConfigError, EvorError, ResumeConflict
from evor.evaluate import OGBenchEnv, compute_context, evaluate_policy, evaluation_seed
from evor.progress import progress_bar
from evor.rundir import CONFIG, VERSIONS, claim, read_versions, truncate_metrics, write_metrics

_config_json = config_json  # older name, kept for callers


# --------------------------------------------------------------------------- checkpoints


def _to_numpy(tree):
    return jax.tree.map(lambda x: np.asarray(x), tree)


def state_template(agent):
    """The structure, shapes and dtypes of `agent`'s training state, traced without computing it."""
    return jax.eval_shape(agent.init, jax.random.PRNGKey(0))


# --------------------------------------------------------------------------- runs


@dataclasses.dataclass
class Run:
    """A trained (or training) agent with its config, data facts and state."""

    run_dir: Path
    config: TrainConfig
    agent: Any
    state: Any
    step: int
    _compiled: dict = dataclasses.field(default_factory=dict, repr=False)  # settings -> jitted act

    def settings(self, preset: str | None = None, **overrides) -> InferenceSettings:
        """The run's inference settings, with a named preset's fields (`agent.inference_presets`, e.g.
        EVOR's 'fast') and then `overrides` on top."""
        fields = dict(self.config.inference)
        if preset is not None:
            presets = getattr(self.agent, "inference_presets", {})
            if preset not in presets:
                raise ConfigError(f"Unknown inference preset '{preset}' for {self.config.agent_name}; "
                                  f"available: {', '.join(presets) or 'none'}.")
            fields.update(presets[preset])
        fields.update({k: v for k, v in overrides.items() if v is not None})
        settings = inference_settings(type(self.agent), fields)
        settings.validate()
        return settings

    def policy(self, settings: InferenceSettings, rows: str = "auto"):
        """(obs batch (B, d), key) -> actions, jitted once per setting (the state is an argument, not a
        constant). `key` is one key for the batch, or one key per row (B, 2): each row is acted on as if
        alone, with its own key.

        rows='map' computes the rows one after another inside the call, so a row's action is bitwise the
        same whatever else is in the batch (evaluation results do not depend on the pool size); on a CPU
        this costs nothing, as one row at N >= 16 already saturates the cores. rows='vmap' batches them
        (much faster on a GPU; last-bit differences between batch sizes). 'auto': map on CPU, else vmap.
        """
        mode = batch_mode(rows)
        if (settings, mode) not in self._compiled:
            def act_row(state, obs, key):
                return self.agent.act(state, obs[None], key, settings)[0]

            if mode == "vmap":
                act_rows = jax.vmap(act_row, in_axes=(None, 0, 0))
            else:
                def act_rows(state, obs, keys):
                    return jax.lax.map(lambda row: act_row(state, *row), (obs, keys))

            self._compiled[(settings, mode)] = jax.jit(act_rows)
        act = self._compiled[(settings, mode)]

        def policy(obs, key):
            obs = jnp.asarray(obs, jnp.float32)
            keys = key if jnp.ndim(key) == 2 else jax.random.split(key, obs.shape[0])
            return act(self.state, obs, keys)

        return policy

    def env_factory(self) -> OGBenchEnv:
        return OGBenchEnv(_env_name(self.config.task), self.config.success_timing)

    def make_env(self):
        return self.env_factory()()

    def evaluate(self, settings: InferenceSettings, num_episodes: int, seed: int = 0,
                 show_progress: bool = False, pool_size: int = 10, workers: int | None = None,
                 discount: float | None = None, rows: str = "auto") -> dict:
        """Evaluate in lockstep on `pool_size` environments spread over `workers` processes
        (default: one per core, at most 2 and never more than the pool); `rows` as in `policy`."""
        if workers is None:
            workers = default_eval_workers(pool_size)
        label = f"eval N={settings.num_candidates}" if hasattr(settings, "num_candidates") else "eval"
        result = evaluate_policy(self.env_factory(), self.policy(settings, rows), num_episodes, seed=seed,
                                 pool_size=pool_size, workers=workers, show_progress=show_progress, desc=label,
                                 action_horizon=getattr(self.agent, "action_horizon", 1), discount=discount)
        result["settings"] = dataclasses.asdict(settings)
        result["step"] = self.step
        return result


def default_eval_workers(pool_size: int) -> int:
    return min(len(os.sched_getaffinity(0)), 2, pool_size)


def _env_name(task: str) -> str:
    parsed = parse_task_name(task)
    parts = parsed.task.split("-")
    pos = parts.index("singletask")
    return "-".join(parts[: pos - 1] + parts[pos:])  # drop the dataset type ('play'), as OGBench does


def _agent_for(config: TrainConfig, observation_dim: int, action_dim: int, reward_bounds) -> Agent:
    agent_cls = get_agent_class(config.agent_name)
    return build_agent(agent_cls, agent_config(agent_cls, config.agent), observation_dim, action_dim, reward_bounds)


def train(config: TrainConfig, run_dir: str | os.PathLike, resume: bool = False, show_progress: bool = True,
          stop_after: int | None = None) -> Run:
    """Train (or resume) a run. `stop_after` stops early at that step (for tests of resumption)."""
    return train_seeds(config, [config.seed], [run_dir], resume, show_progress, stop_after)[0]


def _prepare_run_dir(config: TrainConfig, run_dir: Path, resume: bool) -> None:
    config_path = run_dir / CONFIG
    if resume:
        saved = saved_config(run_dir, missing="cannot be resumed: it is not a run directory")
        refuse_legacy(run_dir)
        differences = resume_differences(saved, config_json(config))
        if differences:
            raise ResumeConflict(run_dir, differences, "Set the saved values explicitly (--set) to continue it.")
        reached = latest_checkpoint(run_dir)
        if reached is not None and checkpoint_step(reached) > config.total_steps:
            raise EvorError(f"Cannot resume {run_dir} to total_steps {config.total_steps}: it has already trained "
                            f"{checkpoint_step(reached)} steps. A run can be extended, not shortened "
                            f"(evaluate an earlier checkpoint with --step instead).")
    elif config_path.exists() and (checkpoints(run_dir) or legacy_checkpoints(run_dir)):
        raise EvorError(f"{run_dir} already holds a run; use --resume to continue it or choose another directory.")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EvorError(f"Cannot create run directory '{run_dir}': {exc.strerror}.") from None


def _resume_payloads(run_dirs: list[Path], template) -> list[dict] | None:
    """The checkpoints to continue from: each run's newest valid one, or, for seeds trained together,
    the newest step that every seed has (a kill between two seeds' writes leaves them one save apart)."""
    for run_dir in run_dirs:
        refuse_legacy(run_dir)
    if len(run_dirs) == 1:
        payload = load_latest_valid_checkpoint(run_dirs[0], template)
        return None if payload is None else [payload]
    common = set.intersection(*({checkpoint_step(p) for p in checkpoints(d)} for d in run_dirs))
    for step in sorted(common, reverse=True):
        try:
            return [load_checkpoint(d / "checkpoints" / checkpoint_name(step), template) for d in run_dirs]
        except EvorError as exc:
            warnings.warn(f"{exc} Falling back to the previous common checkpoint.", stacklevel=2)
    return None


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _unstack(tree, index: int):
    return jax.tree.map(lambda x: x[index], tree)


BATCH_MODES = ("auto", "vmap", "map")


def batch_mode(mode: str = "auto") -> str:
    """How independent computations (seeds, evaluation rows) share a device. 'vmap' batches them (every
    matmul gets a batch dimension): a large win on a GPU, where one computation leaves most of the
    device idle. 'map' runs them one after another inside the same compiled call (lax.map): on a CPU,
    which one computation already saturates, XLA's batched matmuls are slower than plain ones
    (benchmarks/seeds.py: 8 vmapped EVOR seeds made 0.37x the updates/s of one). 'auto' picks 'map' on
    a CPU and 'vmap' elsewhere."""
    if mode not in BATCH_MODES:
        raise ConfigError(f"mode must be one of {', '.join(BATCH_MODES)}, got '{mode}'.")
    if mode == "auto":
        return "map" if jax.default_backend() == "cpu" else "vmap"
    return mode


def per_seed(fn, num_seeds: int, mode: str = "auto"):
    """fn over one seed's arguments lifted to seed-stacked arguments and results (see `batch_mode`);
    for one seed the plain function (a size-1 vmap would only add a batch dimension to every matmul)."""
    if num_seeds > 1:
        if batch_mode(mode) == "vmap":
            return jax.vmap(fn)
        return lambda *args: jax.lax.map(lambda a: fn(*a), args)
    add_axis = functools.partial(jax.tree.map, lambda x: x[None])
    return lambda *args: add_axis(fn(*(_unstack(a, 0) for a in args)))


def _due(step: int, config: TrainConfig) -> tuple[bool, bool]:
    """(a checkpoint is due, an evaluation is due) after `step` updates."""
    checkpoint = step % config.checkpoint_every == 0 or step == config.total_steps
    evaluation = bool(config.eval_every) and step % config.eval_every == 0
    return checkpoint, evaluation


def train_seeds(config: TrainConfig, seeds: list[int], run_dirs: list, resume: bool = False,
                show_progress: bool = True, stop_after: int | None = None, mode: str = "auto",
                deadline: float | None = None) -> list[Run]:
    """Train several seeds of one config in one process and one compiled call per chunk, vmapped over
    the seed axis or mapped over it (`mode`, see `batch_mode`). With `deadline` (a `time.time()` value)
    training stops after the first chunk that ends past it and checkpoints there, so a time-boxed run
    (a GPU lease) keeps everything it trained and can be resumed.

    The dataset is loaded once and shared; every seed keeps its own RNG chain (the one it would have
    alone), run directory, metrics and checkpoints, so each directory reads as if it had run alone.
    """
    if len(seeds) != len(run_dirs) or not seeds:
        raise ConfigError(f"train_seeds needs one run directory per seed (got {len(seeds)} seeds and "
                          f"{len(run_dirs)} directories).")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"Seeds must be distinct, got {seeds}.")
    mode = batch_mode(mode)
    configs = [dataclasses.replace(config, seed=seed) for seed in seeds]
    for seed_config in configs:
        seed_config.validate()
    run_dirs = [Path(d).expanduser() for d in run_dirs]
    for seed_config, run_dir in zip(configs, run_dirs):
        _prepare_run_dir(seed_config, run_dir, resume)  # reads and checks only, then creates the directory
    with contextlib.ExitStack() as claims:  # held before the first write, for the whole training
        for run_dir in run_dirs:
            claims.enter_context(claim(run_dir))
        return _train_claimed(config, configs, seeds, run_dirs, resume, show_progress, stop_after, mode, deadline)


def _train_claimed(config, configs, seeds, run_dirs, resume, show_progress, stop_after, mode,
                   deadline) -> list[Run]:

    env, train_set, val_set = load_task(config.task, data_dir=config.data_dir, env=False)
    agent = _agent_for(config, train_set.observation_dim, train_set.action_dim, train_set.reward_bounds())
    # The same for every seed of the process; computed once (the data's digest reads every transition).
    versions = {
        "versions": library_versions(), "platform": platform.platform(), "machine": machine_description(),
        "devices": [str(d) for d in jax.devices()], "compute": compute_context(), "seeds_in_process": seeds,
        "train_data": train_set.summary(), "val_data": val_set.summary(),
        "data_sidecar": read_sidecar(parse_task_name(config.task).dataset, config.data_dir),
        "return_scale": dataclasses.asdict(agent.return_scale) if agent.uses_return_scale else None}
    for seed_config, run_dir in zip(configs, run_dirs):
        atomic_write_json(run_dir / CONFIG, config_json(seed_config))
        atomic_write_json(run_dir / VERSIONS, versions)

    table = agent.make_table(train_set)
    val_table = agent.make_table(val_set)
    num_seeds = len(seeds)
    step = 0
    payloads = _resume_payloads(run_dirs, state_template(agent)) if resume else None
    if payloads is not None:
        state, keys, step = _stack([p["state"] for p in payloads]), _stack([p["key"] for p in payloads]), \
            payloads[0]["step"]
    else:
        split = [jax.random.split(jax.random.PRNGKey(seed)) for seed in seeds]
        keys = jnp.stack([k for k, _ in split])
        state = _stack([agent.init(init_key) for _, init_key in split])
    if resume:
        for run_dir in run_dirs:
            truncate_metrics(run_dir, step)

    train_chunk = jax.jit(per_seed(
        lambda s, k: agent.train_steps(s, table, k, config.log_every, config.batch_size), num_seeds, mode),
        donate_argnums=(0,))
    val_losses = jax.jit(per_seed(lambda s, k: agent.validation_losses(s, val_table, k, config.batch_size),
                                   num_seeds, mode))
    split_keys = jax.jit(jax.vmap(jax.random.split))
    params_finite = jax.jit(jax.vmap(
        lambda s: jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(s)]))))
    eval_settings = inference_settings(type(agent), config.inference)
    end = config.total_steps if stop_after is None else min(stop_after, config.total_steps)

    runs = [Run(run_dir, seed_config, agent, _unstack(state, i), step)
            for i, (seed_config, run_dir) in enumerate(zip(configs, run_dirs))]
    label = f"train {config.agent_name}" + (f" x{num_seeds} seeds" if num_seeds > 1 else "")
    with progress_bar(config.total_steps, label, unit="step", initial=step, disable=not show_progress) as bar:
        while step < end:
            started = time.time()
            both = split_keys(keys)
            keys, chunk_keys = both[:, 0], both[:, 1]
            state, metrics = train_chunk(state, chunk_keys)
            metrics = {k: np.asarray(v) for k, v in metrics.items()}  # one transfer per chunk
            step += config.log_every
            rate = config.log_every / (time.time() - started)
            # Validation keys are off the training chain, so they do not change what is learned.
            metric_keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(seed + 1), step) for seed in seeds])
            val_metrics = val_losses(state, metric_keys)
            metrics.update({k: np.asarray(v) for k, v in val_metrics.items()})
            finite = np.asarray(params_finite(state))
            checkpoint_due, eval_due = _due(step, config)
            out_of_time = deadline is not None and time.time() >= deadline
            checkpoint_due = checkpoint_due or out_of_time
            host_state = _to_numpy(state) if (checkpoint_due or eval_due) else None
            for i, (run, run_dir) in enumerate(zip(runs, run_dirs)):
                seed_metrics = {k: float(v[i]) for k, v in metrics.items()}
                bad = {k: v for k, v in seed_metrics.items() if not np.isfinite(v)}
                if bad or not finite[i]:
                    what = f"non-finite loss {bad}" if bad else "non-finite parameters"
                    others = " Training of the other seeds stopped with it." if num_seeds > 1 else ""
                    raise EvorError(f"Training diverged at step {step} ({config.log_every} steps after the last "
                                    f"good report) in {run_dir}: {what}. Nothing was saved from this point on; the "
                                    f"last checkpoint is {latest_checkpoint(run_dir) or 'none (no checkpoint yet)'}."
                                    + others)
                row = {"step": step, **seed_metrics, "steps_per_second": round(rate, 1)}
                if num_seeds > 1:
                    row["seeds_in_process"] = num_seeds  # steps_per_second is per seed, all seeds together
                run.step = step
                if host_state is not None:
                    run.state = _unstack(host_state, i)
                if eval_due:
                    result = run.evaluate(eval_settings, config.eval_episodes,
                                          seed=evaluation_seed(run.config.seed, step))
                    row.update(eval_success_rate=result["success_rate"], eval_return_mean=result["return_mean"])
                write_metrics(run_dir, row)
                if checkpoint_due:
                    save_checkpoint(run_dir, step, run.state, keys[i], keep_every=config.keep_checkpoints_every)
            bar.update(config.log_every)
            bar.set_postfix({k: f"{float(np.mean(v)):.3g}" for k, v in metrics.items() if k in (
                "actor_loss", "return_loss", "val_return_loss")})
            if out_of_time:
                break
    host_state = _to_numpy(state)
    for i, run in enumerate(runs):
        run.state, run.step = jax.tree.map(jnp.asarray, _unstack(host_state, i)), step
    return runs


def load_run_agent(run_dir: Path):
    """(config, agent) of a run directory, from config.json and versions.json; no checkpoint is read."""
    config = _build(TrainConfig, saved_config(run_dir), "training config")
    train_data = read_versions(run_dir)["train_data"]
    agent = _agent_for(config, train_data["observation_dim"], train_data["action_dim"],
                       (train_data["reward_min"], train_data["reward_max"]))
    return config, agent


def load_run(run_dir: str | os.PathLike, step: int | None = None) -> Run:
    """Load a run's config and its latest (or a given) checkpoint, ready to act and evaluate."""
    run_dir = Path(run_dir).expanduser()
    config, agent = load_run_agent(run_dir)
    refuse_legacy(run_dir)
    if step is not None:
        path = run_dir / "checkpoints" / checkpoint_name(step)
        if not path.exists():
            raise EvorError(f"{run_dir} has no checkpoint at step {step}.")
        payload = load_checkpoint(path, state_template(agent))
    else:
        payload = load_latest_valid_checkpoint(run_dir, state_template(agent))
        if payload is None:
            raise EvorError(f"{run_dir} has no readable checkpoint.")
    return Run(run_dir, config, agent, payload["state"], payload["step"])


def fit(agent, dataset, num_steps: int, batch_size: int = 256, seed: int = 0, chunk: int = 500):
    """Train an agent on an in-memory Dataset without an environment (notebooks, toy problems).

    Returns the trained state. Uses the same fused update as `train`.
    """
    table = agent.make_table(dataset)
    key, init_key = jax.random.split(jax.random.PRNGKey(seed))
    state = agent.init(init_key)
    chunk = min(chunk, num_steps)
    if num_steps % chunk:
        raise ConfigError(f"num_steps ({num_steps}) must be a multiple of chunk ({chunk}).")
    step_fn = jax.jit(lambda s, k: agent.train_steps(s, table, k, chunk, batch_size), donate_argnums=(0,))
    for _ in range(num_steps // chunk):
        key, chunk_key = jax.random.split(key)
        state, _ = step_fn(state, chunk_key)
    return state
