"""Total training throughput for S seeds in one process (S = 1, 4, 8), the way `evor train --seeds`
runs them, vmapped and mapped (see evor.train.batch_mode), against one seed alone measured in the same run.

    python benchmarks/seeds.py --agent evor --preset cpu --seeds 1,4,8 --modes vmap,map
"""

import argparse
import json

import jax

from _synthetic import PausedJobs, block, make_agent, synthetic_dataset, timed
from evor.data.files import atomic_write_json
from evor.train import per_seed


def measure_seeds(agent_name: str, preset: str, seed_counts: list[int], modes: list[str], steps: int,
                  dataset=None) -> list[dict]:
    """Total updates/s of S seeds in one compiled call, per mode; the first row (one seed) is the baseline."""
    agent, batch_size = make_agent(agent_name, preset)
    table = agent.make_table(dataset if dataset is not None else synthetic_dataset())
    rows = []
    for mode, num in [(m, s) for m in modes for s in seed_counts]:
        if num == 1 and rows:
            continue  # one seed runs the same program in every mode
        keys = jax.random.split(jax.random.PRNGKey(0), num)
        state = jax.vmap(agent.init)(keys)
        step = jax.jit(per_seed(lambda s, k: agent.train_steps(s, table, k, steps, batch_size), num, mode),
                       donate_argnums=(0,))
        holder = {"state": block(step(state, keys)[0])}

        def run():
            holder["state"], metrics = step(holder["state"], keys)
            block((holder["state"], metrics))

        seconds = timed(run, 3)
        rows.append({"mode": mode if num > 1 else "-", "seeds": num, "total_updates_per_second": num * steps / seconds,
                     "per_seed_updates_per_second": steps / seconds})
        rows[-1]["vs_one_seed"] = rows[-1]["total_updates_per_second"] / rows[0]["total_updates_per_second"]
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in rows[-1].items()}), flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--agent", default="evor")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--seeds", default="1,4,8")
    parser.add_argument("--steps", type=int, default=50, help="updates per timed call")
    parser.add_argument("--modes", default="vmap,map")
    parser.add_argument("--pause-pattern", default=None, help="SIGSTOP matching processes while measuring")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    with PausedJobs(args.pause_pattern):
        rows = measure_seeds(args.agent, args.preset, [int(s) for s in args.seeds.split(",")],
                             args.modes.split(","), args.steps)
    print(f"\n{args.agent} at preset {args.preset}, device {jax.devices()[0]}\n\n| mode | seeds | total updates/s | "
          f"per seed | vs 1 seed |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['seeds']} | {r['total_updates_per_second']:.1f} | {r['per_seed_updates_per_second']:.1f} | "
              f"{r['vs_one_seed']:.2f}x |")
    if args.out:
        atomic_write_json(args.out, {"agent": args.agent, "preset": args.preset, "rows": rows})


if __name__ == "__main__":
    main()
