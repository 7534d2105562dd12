"""Agents by name. Each lives in one file that reads next to its equations.

Labels name an agent and its action-chunk length at once, the way results are reported: 'evor5' (EVOR
acting in chunks of 5, its default), 'evor1' (single-step, the paper's), 'qc5', 'qc1', 'fql', 'ifql'. An
agent whose Config has a `horizon` field acts in chunks; its label carries the length (always when the
default is not 1, as for EVOR and QC; otherwise only when it is not 1), so 'evor' alone parses but
names no length: it is EVOR's default and is written 'evor5'. Before EVOR's default became 5 (docs/
results.md) 'evor' meant single-step EVOR; those runs' configs say horizon 1 and read back as 'evor1'.
This module is the one place that knows it: suites, reports, run directories and the CLI all go through
`label_of`/`parse_label`.

The ablations' variants are named by suffixes, one per field that differs from the agent's default:
'evor1-mean' / 'evor1-hlgauss' (return_model), 'evor1-td10' / 'fql-mc' (target_horizon: 'mc' is 0, the
Monte-Carlo returns-to-go, 'tdN' is N-step), 'evor5-td5-greedy' / 'evor1-td1-dataset' (next_action). So a
suite can list 'evor5-mean' next to 'evor5' and the reports keep them apart.
"""

from __future__ import annotations

import dataclasses
import re

from evor.agents.base import Agent
from evor.agents.evor import EVOR, NEXT_ACTIONS
from evor.agents.fql import FQL
from evor.agents.ifql import IFQL
from evor.agents.qc import QC
from evor.errors import ConfigError

AGENTS: dict[str, type[Agent]] = {"evor": EVOR, "qc": QC, "fql": FQL, "ifql": IFQL}
# Labels used in the comparisons and suites so far (for messages; any chunk length parses).
KNOWN_LABELS = ("evor5", "evor1", "qc1", "qc5", "fql", "ifql", "evor5-mean", "evor1-mean", "evor1-hlgauss", "evor1-td1",
                "fql-mc", "evor5-mean-td5-greedy")
# Label suffix of each value of return_model (agents/return_models.py).
RETURN_MODEL_SUFFIX = {"flow": "flow", "mean": "mean", "hl_gauss": "hlgauss"}
NEXT_ACTION_SUFFIXES = NEXT_ACTIONS  # a label suffix is the next_action's own name ('-greedy', '-dataset')


def get_agent_class(name: str) -> type[Agent]:
    if name not in AGENTS:
        raise ConfigError(f"Unknown agent '{name}'; available: {', '.join(sorted(AGENTS))}.")
    return AGENTS[name]


def build_agent(agent_cls, config, observation_dim: int, action_dim: int, reward_bounds=(-1.0, 0.0)):
    """An agent for data of these shapes; agents that map returns to a unit scale get it from the data's
    reward bounds (method.md, Part 2), the others never see it."""
    if agent_cls.uses_return_scale:
        from evor.agents.evor import ReturnScale

        scale = ReturnScale.from_rewards(reward_bounds[0], reward_bounds[1], config.discount)
        return agent_cls(config, observation_dim, action_dim, scale)
    return agent_cls(config, observation_dim, action_dim)


def chunked_agents() -> tuple[str, ...]:
    """Agents with an action-chunk length (a `horizon` config field)."""
    return tuple(name for name, cls in AGENTS.items() if "horizon" in {f.name for f in dataclasses.fields(cls.Config)})


def label_of(agent_name: str, agent_fields: dict) -> str:
    """'qc5', 'evor5', 'evor', 'fql', 'evor-mean', 'fql-mc', ...: the agent, with its chunk length where it
    acts in chunks and a suffix for each variant field that differs from its default."""
    cls = get_agent_class(agent_name)
    defaults = cls.Config()
    label = agent_name
    if agent_name in chunked_agents():
        horizon = agent_fields.get("horizon", defaults.horizon)
        always = defaults.horizon != 1  # EVOR's and QC's default chunk is 5: always named
        label = f"{agent_name}{horizon}" if (always or horizon != 1) else agent_name
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    if "return_model" in fields and agent_fields.get("return_model", defaults.return_model) != defaults.return_model:
        label += "-" + RETURN_MODEL_SUFFIX[agent_fields["return_model"]]
    if "target_horizon" in fields:
        target_horizon = agent_fields.get("target_horizon", defaults.target_horizon)
        if target_horizon != defaults.target_horizon:
            label += "-mc" if target_horizon == 0 else f"-td{target_horizon}"
    if "next_action" in fields and agent_fields.get("next_action", defaults.next_action) != defaults.next_action:
        label += "-" + agent_fields["next_action"]
    return label


def parse_label(label: str) -> tuple[str, dict[str, int | str]]:
    """(agent name, agent config fields) of a label: 'qc5' -> ('qc', {'horizon': 5}),
    'evor-mean' -> ('evor', {'return_model': 'mean'}), 'fql-td10' -> ('fql', {'target_horizon': 10})."""
    base, *suffixes = label.split("-")
    fields: dict[str, int | str]
    if base in AGENTS:
        name, fields = base, {}
    else:
        match = re.fullmatch(r"([a-z]+)(\d+)", base)
        if not (match and match.group(1) in chunked_agents() and int(match.group(2)) >= 1):
            raise ConfigError(f"Unknown agent '{label}'; choose from {', '.join(KNOWN_LABELS)} (or another chunk "
                              f"length after {' or '.join(chunked_agents())}).")
        name, fields = match.group(1), {"horizon": int(match.group(2))}
    known = {f.name for f in dataclasses.fields(get_agent_class(name).Config)}
    models = {suffix: model for model, suffix in RETURN_MODEL_SUFFIX.items()}
    for suffix in suffixes:
        value: int | str
        if suffix in models and "return_model" in known:
            field, value = "return_model", models[suffix]
        elif (suffix == "mc" or re.fullmatch(r"td[1-9]\d*", suffix)) and "target_horizon" in known:
            field, value = "target_horizon", 0 if suffix == "mc" else int(suffix[2:])
        elif suffix in NEXT_ACTION_SUFFIXES and "next_action" in known:
            field, value = "next_action", suffix
        else:
            takes = ", ".join(f"-{s}" for s in _variant_suffixes(name))
            raise ConfigError(f"Unknown variant '-{suffix}' in agent label '{label}'; "
                              + (f"{name} takes {takes}." if takes else f"{name} has no variants."))
        if field in fields:
            raise ConfigError(f"Agent label '{label}' sets {field} twice.")
        if value == getattr(get_agent_class(name).Config(), field):  # one label per configuration
            raise ConfigError(f"'-{suffix}' is {name}'s default {field}: leave it out of the label '{label}'.")
        fields[field] = value
    return name, fields


def _variant_suffixes(agent_name: str) -> list[str]:
    """The label suffixes an agent takes (its defaults are never named)."""
    defaults = get_agent_class(agent_name).Config()
    suffixes = [suffix for model, suffix in RETURN_MODEL_SUFFIX.items()
                if getattr(defaults, "return_model", model) != model]
    if hasattr(defaults, "target_horizon"):
        suffixes += ["mc"] * (defaults.target_horizon != 0) + ["tdN"]
    if hasattr(defaults, "next_action"):
        suffixes += [suffix for suffix in NEXT_ACTION_SUFFIXES if suffix != defaults.next_action]
    return suffixes
