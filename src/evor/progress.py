"""One progress bar style for all long work: rate, ETA and live metrics."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(total: int, desc: str, unit: str = "it", disable: bool = False, initial: int = 0):
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, dynamic_ncols=True, disable=disable,
                initial=initial, file=sys.stderr, smoothing=0.1)
