"""Does dataset generation give the same episodes here as elsewhere, and whatever ran before them?

Generates the first N episodes of a dataset's seed twice: each by a fresh episode runner, and all in
sequence by one runner (as a worker process does). Prints, per episode, whether the two agree bit for
bit, then one SHA-256 fingerprint of all N episodes and this machine's CPU (machine_description).
Two machines that print the same fingerprint generate the same first N episodes; run it on two
machines to test whether the CPU is what makes a regenerated dataset differ (docs/results.md,
"Regenerated datasets"). Two versions of a dataset may differ in a few of its 1000 episodes only: to
compare whole files, compare the train_data.sha256 that every run's versions.json records. Usage:
    python benchmarks/generation_fingerprint.py [--dataset scene-play-v0] [--episodes 30] [--seed 0]
"""

import argparse
import hashlib
import json
import time

import numpy as np

from evor.data.generate import _EpisodeRunner, episode_seed, machine_description
from evor.data.registry import get_recipe


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="scene-play-v0")
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    recipe = get_recipe(args.dataset)
    in_sequence = _EpisodeRunner(recipe)
    fingerprint = hashlib.sha256()
    differing, started = 0, time.perf_counter()
    for index in range(args.episodes):
        seed = episode_seed(args.seed, index)
        sequential = in_sequence.run(seed)
        fresh = _EpisodeRunner(recipe).run(seed)
        keys = [k for k in sequential if not np.array_equal(sequential[k], fresh[k])]
        differing += bool(keys)
        print(f"episode {index}: " + (f"differs in {', '.join(keys)}" if keys else "identical"), flush=True)
        for key in sorted(sequential):
            fingerprint.update(key.encode() + np.ascontiguousarray(sequential[key]).tobytes())
    print(f"\n{args.dataset}, seed {args.seed}, episodes 0-{args.episodes - 1}: {differing} of {args.episodes} differ "
          f"between a fresh runner and one that ran the episodes before ({time.perf_counter() - started:.0f} s)")
    print(f"fingerprint {fingerprint.hexdigest()}")
    print(f"machine {json.dumps(machine_description())}")


if __name__ == "__main__":
    main()
