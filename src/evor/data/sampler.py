"""Device-resident transition tables, sampled inside jitted code.

The whole dataset lives on the device once; a batch is a random gather, so training never returns
to Python between updates.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from evor.data.dataset import Dataset
from evor.data.targets import cutoff_states, multistep_targets

# Table entries that are not one row per transition, so a batch does not gather them: the rows a chunk
# may start at, and the states where trajectories are cut (with return samples there, see agents/evor.py).
SHARED_ENTRIES = ("valid_rows", "cutoff_observations", "cutoff_returns")


def transition_table(dataset: Dataset, discount: float, target_horizon: int,
                     cutoffs: bool = False) -> dict[str, jnp.ndarray]:
    """Arrays one row per transition, with the multi-step target pieces already joined in.

    `bootstrap_*` describe the state the target bootstraps from (s' for one-step TD); its dataset
    action is only known when that state is not the last of its recorded trajectory. With `cutoffs`,
    also the distinct bootstrap states (`cutoff_observations`, shared) and each row's index into them.
    """
    targets = multistep_targets(dataset, discount, target_horizon)
    rows = targets.bootstrap_rows
    following = np.minimum(rows + 1, len(dataset) - 1)
    has_next_action = (dataset.ends[rows] == 0).astype(np.float32)
    table = {
        "observations": jnp.asarray(dataset.observations),
        "actions": jnp.asarray(dataset.actions),
        "partial_returns": jnp.asarray(targets.partial_returns),
        "bootstrap_discounts": jnp.asarray(targets.bootstrap_discounts),
        "bootstrap_observations": jnp.asarray(dataset.next_observations[rows]),
        "bootstrap_dataset_actions": jnp.asarray(dataset.actions[following]),
        "has_bootstrap_dataset_action": jnp.asarray(has_next_action),
    }
    return {**table, **_cutoff_entries(dataset, targets)} if cutoffs else table


def _cutoff_entries(dataset: Dataset, targets) -> dict[str, jnp.ndarray]:
    cutoff_rows, row_index = cutoff_states(targets)
    return {"cutoff_index": jnp.asarray(row_index),
            "cutoff_observations": jnp.asarray(dataset.next_observations[cutoff_rows])}


def gather_rows(table: dict[str, jnp.ndarray], rows: jnp.ndarray) -> dict[str, jnp.ndarray]:
    """The per-transition entries of `table` at `rows` (shared entries are left out)."""
    return {k: v[rows] for k, v in table.items() if k not in SHARED_ENTRIES}


def sample_batch(table: dict[str, jnp.ndarray], key: jax.Array, batch_size: int) -> dict[str, jnp.ndarray]:
    size = table["observations"].shape[0]
    rows = jax.random.randint(key, (batch_size,), 0, size)
    return gather_rows(table, rows)


def action_chunks(dataset: Dataset, discount: float, horizon: int):
    """(the h-step walk's targets, chunks (T, h * action_dim), the rows whose chunk fits its trajectory)."""
    if horizon < 1:
        raise ValueError(f"chunk horizon must be >= 1, got {horizon}")
    walk = multistep_targets(dataset, discount, horizon)
    rows = np.arange(len(dataset))
    last = walk.bootstrap_rows.astype(np.int64)  # last row of the chunk's walk
    terminated = walk.bootstrap_discounts == 0
    valid = (last - rows == horizon - 1) | terminated
    steps = np.minimum(rows[:, None] + np.arange(horizon)[None, :], last[:, None])
    chunks = dataset.actions[steps].reshape(len(dataset), -1)
    valid_rows = np.flatnonzero(valid)
    if valid_rows.size == 0:
        raise ValueError(f"no trajectory in {dataset.source} is long enough for chunks of {horizon} steps")
    return walk, chunks, valid_rows


def chunk_table(dataset: Dataset, discount: float, horizon: int,
                target_horizon: int | None = None, cutoffs: bool = False) -> dict[str, jnp.ndarray]:
    """Rows for action chunks a_{t:t+h} of h consecutive steps within one trajectory.

    - `action_chunks` (T, h * action_dim): the dataset's actions a_t..a_{t+h-1}; after a true
      termination inside the chunk the last action is repeated (those steps never happen).
    - `partial_returns` = sum_{k<K} gamma^k r_{t+k}, K = n or the steps up to a termination;
      `bootstrap_discounts` = gamma^n (0 after a termination); `bootstrap_observations` = s_{t+n}.
      n = h unless `target_horizon` is given (0: Monte-Carlo returns-to-go, bootstrapping only
      where a trajectory is cut; see evor.data.targets). QC bootstraps one chunk ahead; EVOR with
      chunks uses its own target horizon.
    - `valid_rows`: the rows whose chunk fits in its recorded trajectory. A chunk that would run past a
      trajectory cut has no recorded actions to fill it and is never sampled (`sample_chunks`).
    - with `cutoffs`: the distinct bootstrap states and each row's index into them (`transition_table`).
    """
    walk, chunks, valid_rows = action_chunks(dataset, discount, horizon)
    targets = walk if target_horizon is None else multistep_targets(dataset, discount, target_horizon)
    table = {
        "observations": jnp.asarray(dataset.observations),
        "action_chunks": jnp.asarray(chunks),
        "partial_returns": jnp.asarray(targets.partial_returns),
        "bootstrap_discounts": jnp.asarray(targets.bootstrap_discounts),
        "bootstrap_observations": jnp.asarray(dataset.next_observations[targets.bootstrap_rows]),
        "valid_rows": jnp.asarray(valid_rows.astype(np.int32)),
    }
    return {**table, **_cutoff_entries(dataset, targets)} if cutoffs else table


def sample_chunks(table: dict[str, jnp.ndarray], key: jax.Array, batch_size: int) -> dict[str, jnp.ndarray]:
    """A batch of valid chunk rows (drawn uniformly among the valid starts)."""
    valid = table["valid_rows"]
    rows = valid[jax.random.randint(key, (batch_size,), 0, valid.shape[0])]
    return gather_rows(table, rows)
