"""Environment steps per second of `evor data generate` with 1 and 2 worker processes.

Prints both rates and their ratio, measured in the same run on the same episodes (same seed), and
checks that the files are byte-identical. Usage:
    python benchmarks/generate_speed.py [--dataset cube-single-play-v0] [--episodes 20]
"""

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

from evor.data.generate import generate_dataset
from evor.data.registry import get_recipe


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="cube-single-play-v0")
    parser.add_argument("--episodes", type=int, default=20, help="training episodes (+10%% validation)")
    args = parser.parse_args()
    recipe = get_recipe(args.dataset)
    steps = (args.episodes + max(1, args.episodes // 10)) * recipe.episode_steps
    rates, digests = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            out = Path(tmp) / f"w{workers}"
            started = time.perf_counter()
            paths = generate_dataset(args.dataset, out_dir=out, episodes=args.episodes, workers=workers,
                                     show_progress=False)
            elapsed = time.perf_counter() - started  # includes process start, env build and compressed write
            rates[workers] = steps / elapsed
            digests[workers] = hashlib.sha256(paths["train"].read_bytes()).hexdigest()
            print(f"workers={workers}: {steps} steps in {elapsed:.1f} s -> {rates[workers]:.0f} steps/s")
    print(f"ratio 2 workers / 1 worker: {rates[2] / rates[1]:.2f}x")
    print(f"byte-identical across worker counts: {digests[1] == digests[2]}")


if __name__ == "__main__":
    main()
