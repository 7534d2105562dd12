"""Multi-step TD targets along the dataset's own trajectories.

For transition t and horizon n the target is
    y_t = sum_{k<K} gamma^k r_{t+k} + gamma^K * m * z'(s_boot, a'),
where the walk stops early (K < n) at a true termination (m = 0: no bootstrap) or where the recorded
trajectory is cut (`ends`: bootstrap from the last recorded next state). Horizon 1 is ordinary
one-step TD; horizon 0 means Monte-Carlo returns-to-go, bootstrapping only where a trajectory is cut.
Valid for any critic of the *behaviour* policy, whose trajectories the dataset contains.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from evor.data.dataset import Dataset


@dataclasses.dataclass(frozen=True)
class MultiStepTargets:
    partial_returns: np.ndarray  # (T,) sum_{k<K} gamma^k r_{t+k}
    bootstrap_discounts: np.ndarray  # (T,) gamma^K * mask at the last step (0 after a termination)
    bootstrap_rows: np.ndarray  # (T,) int: row whose next_observation is the bootstrap state


def multistep_targets(dataset: Dataset, discount: float, horizon: int) -> MultiStepTargets:
    if horizon < 0:
        raise ValueError(f"target horizon must be >= 0 (0 = Monte-Carlo), got {horizon}")
    rewards = dataset.rewards.astype(np.float64)
    masks = dataset.masks.astype(np.float64)
    # A walk continues from t to t+1 only inside a trajectory that did not terminate at t.
    continues = (masks > 0) & (dataset.ends == 0)
    continues[-1] = False
    rows = np.arange(len(dataset))
    if horizon == 0:
        return _monte_carlo(rewards, masks, continues, discount)
    partial, disc, boot = rewards.copy(), discount * masks, rows.copy()
    for _ in range(horizon - 1):  # extend every walk by one step, vectorised over t
        nxt = np.minimum(rows + 1, len(rows) - 1)
        partial = np.where(continues, rewards + discount * partial[nxt], rewards)
        disc = np.where(continues, discount * disc[nxt], discount * masks)
        boot = np.where(continues, boot[nxt], rows)
    return MultiStepTargets(partial.astype(np.float32), disc.astype(np.float32), boot.astype(np.int32))


def _monte_carlo(rewards, masks, continues, discount) -> MultiStepTargets:
    count = len(rewards)
    partial = np.empty(count)
    disc = np.empty(count)
    boot = np.empty(count, np.int64)
    for t in range(count - 1, -1, -1):  # one backward sweep
        if continues[t]:
            partial[t] = rewards[t] + discount * partial[t + 1]
            disc[t] = discount * disc[t + 1]
            boot[t] = boot[t + 1]
        else:
            partial[t] = rewards[t]
            disc[t] = discount * masks[t]
            boot[t] = t
    return MultiStepTargets(partial.astype(np.float32), disc.astype(np.float32), boot.astype(np.int32))


def cutoff_states(targets: MultiStepTargets) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct rows whose next state some target bootstraps from with non-zero weight, each row's
    index into them). With Monte-Carlo targets these are the states where recorded trajectories are
    cut: one per trajectory at most, ~1000 in a 1M-transition OGBench dataset. Rows that bootstrap
    nothing (weight 0) get index 0; their weight makes the entry irrelevant. A dataset in which nothing
    bootstraps still gets one entry, so tables keep a non-empty shape."""
    bootstrapping = targets.bootstrap_discounts > 0
    rows, index = np.unique(targets.bootstrap_rows[bootstrapping], return_inverse=True)
    row_index = np.zeros(len(targets.bootstrap_rows), np.int32)
    row_index[bootstrapping] = index
    if rows.size == 0:
        rows = np.zeros(1, np.int64)
    return rows.astype(np.int64), row_index
