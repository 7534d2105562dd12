"""Training configs: the typed TrainConfig, presets (data files in evor/presets), config files, and how a
saved config is read back (fields added later, resuming with the run's own config).

Agent and inference fields live in each agent's Config and Settings dataclasses; a TrainConfig holds
them as plain dicts so that it serialises to config.json and back without loss.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from importlib import resources
from pathlib import Path

from evor.agents import AGENTS, get_agent_class
from evor.agents.evor import InferenceSettings
from evor.data.registry import parse_task_name
from evor.errors import ConfigError, EvorError
from evor.rundir import read_run_config


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    task: str = "cube-single-play-singletask-task2-v0"  # OGBench single task (or dataset = default task)
    agent_name: str = "evor"  # which agent (see evor.agents.AGENTS)
    agent: dict = dataclasses.field(default_factory=dict)  # agent config fields (EVORConfig)
    inference: dict = dataclasses.field(default_factory=dict)  # inference settings used for periodic evaluation
    seed: int = 0
    batch_size: int = 256
    total_steps: int = 30000
    log_every: int = 500  # updates fused per device call; metrics leave the device this often
    eval_every: int = 10000  # 0 disables periodic evaluation
    eval_episodes: int = 20
    checkpoint_every: int = 5000
    # Checkpoints at multiples of this step are never pruned (0: only the newest three are kept), so a long
    # run's learning curve can be evaluated afterwards (`evor eval RUN --step S`) without periodic evaluations
    keep_checkpoints_every: int = 0
    data_dir: str | None = None  # default ~/.ogbench/data or $OGBENCH_DATA_DIR
    success_timing: str = "post"  # OGBench success flag before ('pre', 1.2.x default) or after ('post', 1.1.x) the step
    preset: str | None = None  # the preset this config started from, for the record

    def validate(self) -> None:
        if self.total_steps < 1 or self.batch_size < 1 or self.log_every < 1:
            raise ConfigError("total_steps, batch_size and log_every must be >= 1.")
        for name in ("total_steps", "eval_every", "checkpoint_every"):
            value = getattr(self, name)
            if value % self.log_every:
                raise ConfigError(f"{name} ({value}) must be a multiple of log_every ({self.log_every}).")
        if self.keep_checkpoints_every < 0 or self.keep_checkpoints_every % self.checkpoint_every:
            raise ConfigError(f"keep_checkpoints_every ({self.keep_checkpoints_every}) must be 0 or a multiple of "
                              f"checkpoint_every ({self.checkpoint_every}).")
        if self.success_timing not in ("pre", "post"):
            raise ConfigError(f"success_timing must be 'pre' or 'post', got '{self.success_timing}'.")
        if self.eval_episodes < 1:
            raise ConfigError(f"eval_episodes must be >= 1, got {self.eval_episodes}.")
        parse_task_name(self.task)
        agent_cls = get_agent_class(self.agent_name)
        agent_config(agent_cls, self.agent).validate()
        inference_settings(agent_cls, self.inference).validate()


def _matches(value, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    if origin is tuple:
        return isinstance(value, (list, tuple)) and all(_matches(v, args[0]) for v in value)
    return True


def _build(cls, fields: dict, what: str):
    """A config dataclass from plain values, rejecting unknown fields and wrong types by name."""
    if not isinstance(fields, dict):
        raise ConfigError(f"Invalid {what}: expected a mapping of field names to values, got {type(fields).__name__}.")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ConfigError(f"Unknown {what} field(s): {', '.join(unknown)}. Known: {', '.join(sorted(known))}.")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in fields.items():
        if not _matches(value, hints[name]):
            raise ConfigError(f"Invalid {what} field '{name}': {value!r} is not of type "
                              f"{getattr(hints[name], '__name__', str(hints[name]))}.")
        if hints[name] is float:
            value = float(value)
        values[name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


def load_config_file(path: str | os.PathLike) -> dict:
    """Fields of a TrainConfig from a JSON file (merged over a preset by `make_config`)."""
    path = Path(path).expanduser()
    try:
        values = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: config file could not be read: {exc.strerror or exc}.") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}.") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a config file must hold a JSON object of config fields.")
    values.pop("_about", None)
    return values


def agent_config(agent_cls, fields: dict):
    return _build(agent_cls.Config, fields, "agent config")


def inference_settings(agent_cls, fields: dict) -> InferenceSettings:
    return _build(agent_cls.Settings, fields, "inference setting")


def available_presets() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("evor.presets").iterdir() if p.name.endswith(".json"))


def load_preset(name: str) -> dict:
    path = resources.files("evor.presets") / f"{name}.json"
    if not path.is_file():
        raise ConfigError(f"Unknown preset '{name}'; available: {', '.join(available_presets())}.")
    values = json.loads(path.read_text())
    values.pop("_about", None)
    return values


def make_config(preset: str = "cpu", **overrides) -> TrainConfig:
    """A TrainConfig from a preset; `agent` and `inference` overrides merge into the preset's."""
    values = load_preset(preset)
    agent_name = overrides.get("agent_name") or values.get("agent_name") or TrainConfig.agent_name
    agent_cls = get_agent_class(agent_name) if isinstance(agent_name, str) else None
    for nested, schema in (("agent", "Config"), ("inference", "Settings")):
        extra = overrides.pop(nested, None) or {}
        if not isinstance(extra, dict):
            raise ConfigError(f"Invalid '{nested}' settings: expected a mapping, got {extra!r}.")
        # A preset serves every agent: its fields apply where the chosen agent has them, but a field no
        # agent has is a typo and is refused. What the user sets is checked strictly.
        known = {f.name for f in dataclasses.fields(getattr(agent_cls, schema))} if agent_cls else set()
        anywhere = {f.name for cls in AGENTS.values() for f in dataclasses.fields(getattr(cls, schema))}
        typos = sorted(set(values.get(nested, {})) - anywhere)
        if typos:
            raise ConfigError(f"Preset '{preset}' sets {nested} field(s) that no agent has: {', '.join(typos)}.")
        preset_fields = {k: v for k, v in values.get(nested, {}).items() if k in known}
        values[nested] = {**preset_fields, **extra}
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["preset"] = preset
    # Per-task defaults an agent declares (FQL's alpha and discount per family) fill what neither the
    # preset nor the user set.
    task_defaults = getattr(agent_cls, "task_defaults", None) if agent_cls else None
    if task_defaults is not None:
        defaults = task_defaults(str(values.get("task", TrainConfig.task)))
        values["agent"] = {**{k: v for k, v in defaults.items() if k not in values["agent"]}, **values["agent"]}
    config = _build(TrainConfig, values, "training config")
    config.validate()
    return config


def config_json(config: TrainConfig) -> dict:
    """The config as written to config.json: agent and inference settings resolved to every field, so
    a run keeps its meaning when a library default changes later."""
    agent_cls = get_agent_class(config.agent_name)
    resolved = dataclasses.replace(config, agent=dataclasses.asdict(agent_config(agent_cls, config.agent)),
                                   inference=dataclasses.asdict(inference_settings(agent_cls, config.inference)))
    return json.loads(json.dumps(dataclasses.asdict(resolved)))


# Fields added to an agent's config or settings after runs were written with the full-field config.json:
# (agent, section, field) -> the value that reproduces the behaviour before the field existed. A saved
# config without the field means that value. Other absent fields still count as different.
FIELDS_ADDED_LATER = {
    ("evor", "agent", "horizon"): 1,
    ("evor", "agent", "cutoff_returns"): "every_row",  # Monte-Carlo targets integrated per row before
    ("evor", "agent", "cutoff_samples"): 4,
    ("evor", "agent", "cutoff_refresh_every"): 250,
    ("evor", "inference", "return_noise"): "independent",
    ("evor", "inference", "tilt"): "exact",
    ("qc", "agent", "target_selection"): "target",  # QC chose its TD target's next chunk by the target critics
    ("evor", "agent", "return_model"): "flow",
    ("evor", "agent", "return_bins"): 101,
    ("evor", "agent", "return_bin_sigma"): 0.75,
    ("fql", "agent", "target_horizon"): 1,
    ("ifql", "agent", "target_horizon"): 1,
    ("evor", "agent", "target_candidates"): 32,  # used only by next_action 'greedy', added with it
}


def with_added_fields(saved: dict, agent_name: str) -> dict:
    """A saved config with FIELDS_ADDED_LATER filled in where it lacks them."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in saved.items()}
    for (name, section, field), before in FIELDS_ADDED_LATER.items():
        if name == agent_name and isinstance(out.get(section), dict) and field not in out[section]:
            out[section][field] = before
    return out


def saved_config(run_dir: str | os.PathLike, missing: str = "is not a run directory") -> dict:
    """A run's config.json as today's code reads it: the fields added since it was written filled in with
    the values that reproduce it (FIELDS_ADDED_LATER). Missing or damaged files are named errors."""
    saved = read_run_config(Path(run_dir), missing)
    return with_added_fields(saved, saved.get("agent_name", TrainConfig.agent_name))


# Fields a resumed run may change. None of them alters what is learned up to a given step: the training
# RNG chain is split once per `log_every` updates whatever they are, evaluation and validation keys are
# off that chain, and `total_steps` only says where the loop stops. So a run continued to a larger
# `total_steps` is, update for update, the run that was started with it (tests/test_train.py).
SCHEDULE_FIELDS = ("total_steps", "eval_every", "checkpoint_every", "keep_checkpoints_every")


def resume_differences(saved: dict, requested: dict) -> list[str]:
    """What forbids continuing a run saved with `saved` under `requested`: every differing field except
    the schedule ones (SCHEDULE_FIELDS)."""
    def without_schedule(config: dict) -> dict:
        return {k: v for k, v in config.items() if k not in SCHEDULE_FIELDS}

    return _config_differences(without_schedule(saved), without_schedule(requested))


def resume_config(run_dir: str | os.PathLike, explicit: dict, preset: str | None = None) -> TrainConfig:
    """The config a run continues with: its own config.json. `explicit` holds only the fields the user
    gave on the resume command (nested `agent`/`inference` dicts allowed); any that differs from the saved
    value is refused by name, so `--resume` alone always continues the run as it was started. The schedule
    (SCHEDULE_FIELDS) may change: `--steps` extends a finished run."""
    run_dir = Path(run_dir).expanduser()
    saved = saved_config(run_dir, missing="cannot be resumed: it is not a run directory")
    requested = {k: dict(v) if isinstance(v, dict) else v for k, v in saved.items()}
    for key, value in explicit.items():
        if key in ("agent", "inference") and isinstance(value, dict):
            requested[key] = {**requested.get(key, {}), **value}
        else:
            requested[key] = value
    if preset is not None:
        requested["preset"] = preset
    differences = resume_differences(saved, json.loads(json.dumps(requested)))
    if differences:
        raise EvorError(f"Cannot resume {run_dir}: the options given differ from its config.json "
                        f"({'; '.join(differences)}). Leave them out to continue the run as it was started.")
    config = _build(TrainConfig, {**saved, **{k: requested[k] for k in SCHEDULE_FIELDS if k in requested}},
                    "training config")
    config.validate()
    return config


def _config_differences(saved: dict, requested: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(saved) | set(requested)):
        a, b = saved.get(key, "(absent)"), requested.get(key, "(absent)")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: saved {a!r}, requested {b!r}")
    return out
