"""Device-resident transition tables, sampled inside jitted code.

The whole dataset lives on the device once; a batch is a random gather, so training never returns
to Python between updates.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from evor.data.dataset import Dataset
from evor.data.targets import multistep_targets


def transition_table(dataset: Dataset, discount: float, target_horizon: int) -> dict[str, jnp.ndarray]:
    """Arrays one row per transition, with the multi-step target pieces already joined in.

    `bootstrap_*` describe the state the target bootstraps from (s' for one-step TD); its dataset
    action is only known when that state is not the last of its recorded trajectory.
    """
    targets = multistep_targets(dataset, discount, target_horizon)
    rows = targets.bootstrap_rows
    following = np.minimum(rows + 1, len(dataset) - 1)
    has_next_action = (dataset.ends[rows] == 0).astype(np.float32)
    return {
        "observations": jnp.asarray(dataset.observations),
        "actions": jnp.asarray(dataset.actions),
        "partial_returns": jnp.asarray(targets.partial_returns),
        "bootstrap_discounts": jnp.asarray(targets.bootstrap_discounts),
        "bootstrap_observations": jnp.asarray(dataset.next_observations[rows]),
        "bootstrap_dataset_actions": jnp.asarray(dataset.actions[following]),
        "has_bootstrap_dataset_action": jnp.asarray(has_next_action),
    }


def sample_batch(table: dict[str, jnp.ndarray], key: jax.Array, batch_size: int) -> dict[str, jnp.ndarray]:
    size = table["observations"].shape[0]
    rows = jax.random.randint(key, (batch_size,), 0, size)
    return jax.tree.map(lambda column: column[rows], table)
