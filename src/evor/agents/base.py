"""The agent interface, in code: what `train`, `Run` (evaluation, sweeps), `evor bench` and the reports
rely on. An agent is a small object describing the algorithm (its config, shapes and networks); its
training state is an explicit pytree passed in and out, never stored on the agent.

To add one: subclass `Agent` in `agents/NAME.py` with a `Config` and a `Settings` dataclass (each with
`validate()`), implement the abstract methods, and register it in `agents/__init__.py`. Everything else
(label, chunking, per-task defaults, inference presets, table refreshes) has a default here.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from evor.agents.common import scan_updates


class Agent(abc.ABC):
    name: ClassVar[str]
    Config: ClassVar[type]  # dataclass of training hyperparameters, with validate()
    Settings: ClassVar[type]  # dataclass of inference settings, with validate()
    # EVOR maps returns to a unit scale read from the data's reward bounds; agents that do set this and
    # take `return_scale` as their fourth constructor argument (`build_agent` passes it only to them).
    uses_return_scale: ClassVar[bool] = False
    inference_presets: ClassVar[dict[str, dict]] = {"default": {}}  # named Settings overrides
    action_horizon: int = 1  # environment steps per act() output (chunked agents: the chunk length)

    config: Any
    observation_dim: int
    action_dim: int

    @staticmethod
    def task_defaults(task: str) -> dict:
        """Config fields that depend on the task (e.g. FQL's alpha per family); the preset and the user win."""
        return {}

    @abc.abstractmethod
    def make_table(self, dataset) -> dict:
        """The device-resident training table built from a Dataset."""

    @abc.abstractmethod
    def init(self, key) -> dict:
        """A fresh training state (a pytree of arrays)."""

    @abc.abstractmethod
    def sample(self, table: dict, key, batch_size: int) -> dict:
        """A training batch drawn from the table inside jitted code."""

    @abc.abstractmethod
    def update(self, state: dict, batch: dict, key) -> tuple[dict, dict]:
        """One gradient step: (new state, scalar metrics)."""

    @abc.abstractmethod
    def validation_losses(self, state: dict, table: dict, key, batch_size: int) -> dict:
        """Losses on a batch of the validation table (metrics named val_*)."""

    @abc.abstractmethod
    def act(self, state: dict, obs, key, settings) -> Any:
        """Actions (B, action_horizon * action_dim) for observations (B, observation_dim)."""

    def table_refresh(self, table: dict):
        """(refresh(state, table, key) -> extra table entries, period in updates), or (None, 0)."""
        return None, 0

    def train_steps(self, state: dict, table: dict, key, num_steps: int, batch_size: int):
        """`num_steps` updates fused in one lax.scan, batches drawn on the device: (state, mean metrics)."""
        refresh, every = self.table_refresh(table)
        return scan_updates(self.update, state, table, key, num_steps, batch_size, sample=self.sample,
                            refresh=refresh, refresh_every=every)
