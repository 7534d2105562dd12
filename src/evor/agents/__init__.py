"""Agents by name. Each lives in one file that reads next to its equations."""

from __future__ import annotations

from evor.agents.evor import EVOR
from evor.agents.fql import FQL
from evor.agents.ifql import IFQL
from evor.agents.qc import QC
from evor.errors import ConfigError

AGENTS = {"evor": EVOR, "qc": QC, "fql": FQL, "ifql": IFQL}


def get_agent_class(name: str):
    if name not in AGENTS:
        raise ConfigError(f"Unknown agent '{name}'; available: {', '.join(sorted(AGENTS))}.")
    return AGENTS[name]
