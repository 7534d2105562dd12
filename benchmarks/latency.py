"""Milliseconds per action against the number of candidates N and return samples M (EVOR), for one
observation (a robot acting alone) and for a batch of 10 (lockstep evaluation), through the same
jitted policy that evaluation uses (`Run.policy`: each row acted on with its own key). The baseline
row is N = 1 (plain pi_ref): every figure is also printed as a ratio to it. With several
`--return-models` (the ablation's value models, agents/return_models.py) each row is also printed as a
ratio to the flow's at the same batch, N and M. `--horizon` sets the chunk length (default EVOR's, 5):
a call then decides a chunk of h actions, and `ms_per_env_step` divides by h. docs/speed.md's figures
from before 5-step chunks became the default are single-step EVOR (`--horizon 1`).

    python benchmarks/latency.py --preset cpu --num-candidates 1,4,16,64,256 --num-return-samples 1,8,32
    python benchmarks/latency.py --preset cpu --num-candidates 1,4,16,64 --num-return-samples 8 \
        --return-models flow,mean,hl_gauss
"""

import argparse
import json

import jax

from _synthetic import OBSERVATION_DIM, PausedJobs, block, make_agent, timed
from evor.data.files import atomic_write_json
from evor.train import Run, make_config


def measure_latency(preset: str, num_candidates: list[int], num_return_samples: list[int], batches: list[int],
                    repeats: int = 5, return_model: str = "flow", horizon: int | None = None) -> list[dict]:
    """ms per call and per action of an (untrained) EVOR policy at `preset` sizes; N = 1 is the baseline."""
    agent, _ = make_agent("evor", preset, return_model=return_model, horizon=horizon)
    run = Run(None, make_config(preset), agent, agent.init(jax.random.PRNGKey(0)), 0)
    rows = []
    for batch in batches:
        obs = jax.random.normal(jax.random.PRNGKey(1), (batch, OBSERVATION_DIM))
        base = None
        for n in num_candidates:
            for m in num_return_samples:
                if n == 1 and m != num_return_samples[0]:
                    continue  # N = 1 never samples returns
                act = run.policy(run.settings(num_candidates=n, num_return_samples=m))
                block(act(obs, jax.random.PRNGKey(2)))
                ms = 1000 * timed(lambda: block(act(obs, jax.random.PRNGKey(3))), repeats)
                base = ms if n == 1 or base is None else base
                rows.append({"return_model": return_model, "horizon": agent.action_horizon, "batch": batch, "N": n,
                             "M": m, "ms_per_call": ms, "ms_per_action": ms / batch,
                             "ms_per_env_step": ms / batch / agent.action_horizon, "vs_N1": ms / base})
                print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}),
                      flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--num-candidates", default="1,4,16,64,256")
    parser.add_argument("--num-return-samples", default="1,8,32")
    parser.add_argument("--batch", default="1,10")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--return-models", default="flow", help="comma-separated: flow, mean, hl_gauss")
    parser.add_argument("--horizon", type=int, default=None, help="actions per chunk (default: EVOR's, 5)")
    parser.add_argument("--pause-pattern", default=None, help="SIGSTOP matching processes while measuring")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    with PausedJobs(args.pause_pattern):
        rows = [row for model in args.return_models.split(",")
                for row in measure_latency(args.preset, [int(x) for x in args.num_candidates.split(",")],
                                           [int(x) for x in args.num_return_samples.split(",")],
                                           [int(b) for b in args.batch.split(",")], args.repeats, model, args.horizon)]
    flow = {(r["batch"], r["N"], r["M"]): r["ms_per_call"] for r in rows if r["return_model"] == "flow"}
    print(f"\npreset {args.preset}, horizon {rows[0]['horizon']}, device {jax.devices()[0]}\n\n| model | batch | N | M | "
          f"ms per call | ms per action | ms per env step | vs N=1 | vs flow |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        base = flow.get((r["batch"], r["N"], r["M"]))
        versus = f"{r['ms_per_call'] / base:.2f}x" if base else "n/a"
        print(f"| {r['return_model']} | {r['batch']} | {r['N']} | {r['M']} | {r['ms_per_call']:.2f} | "
              f"{r['ms_per_action']:.2f} | {r['ms_per_env_step']:.2f} | {r['vs_N1']:.1f}x | {versus} |")
    if args.out:
        atomic_write_json(args.out, {"preset": args.preset, "device": str(jax.devices()[0]), "rows": rows})


if __name__ == "__main__":
    main()
