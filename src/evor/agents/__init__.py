"""Agents by name. Each lives in one file that reads next to its equations.

Labels name an agent and its action-chunk length at once, the way results are reported: 'evor', 'fql',
'ifql', 'qc5' (QC with chunks of 5), 'evor5'. An agent whose Config has a `horizon` field acts in
chunks; its label carries the length (QC always, EVOR when it is not 1). This module is the one place
that knows it: suites, reports, run directories and the CLI all go through `label_of`/`parse_label`.
"""

from __future__ import annotations

import dataclasses
import re

from evor.agents.base import Agent
from evor.agents.evor import EVOR
from evor.agents.fql import FQL
from evor.agents.ifql import IFQL
from evor.agents.qc import QC
from evor.errors import ConfigError

AGENTS: dict[str, type[Agent]] = {"evor": EVOR, "qc": QC, "fql": FQL, "ifql": IFQL}
# Labels used in the comparisons and suites so far (for messages; any chunk length parses).
KNOWN_LABELS = ("evor", "evor5", "qc1", "qc5", "fql", "ifql")


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
    """'qc5', 'evor5', 'evor', 'fql', ...: the agent, with its chunk length where it acts in chunks."""
    if agent_name not in chunked_agents():
        return agent_name
    horizon = agent_fields.get("horizon", get_agent_class(agent_name).Config().horizon)
    always = get_agent_class(agent_name).Config().horizon != 1  # QC's default chunk is 5: always named
    return f"{agent_name}{horizon}" if (always or horizon != 1) else agent_name


def parse_label(label: str) -> tuple[str, dict]:
    """(agent name, agent config fields) of a label: 'qc5' -> ('qc', {'horizon': 5})."""
    if label in AGENTS:
        return label, {}
    match = re.fullmatch(r"([a-z]+)(\d+)", label)
    if match and match.group(1) in chunked_agents() and int(match.group(2)) >= 1:
        return match.group(1), {"horizon": int(match.group(2))}
    raise ConfigError(f"Unknown agent '{label}'; choose from {', '.join(KNOWN_LABELS)} (or another chunk length "
                      f"after {' or '.join(chunked_agents())}).")
