"""Training throughput: fused updates (lax.scan of K updates, batches drawn on the device, donated
buffers) against the plain loop of the field's reference code (one jitted call per update from Python),
for EVOR, QC and FQL at the `cpu` and `paper` presets. EVOR is measured twice: with its default
Monte-Carlo targets read from the cut-off table, and with the spec's every-row target integration
(`evor-every-row`, or LABEL-every-row for any EVOR label); the ratio is printed as `evor <preset>
speedup vs every-row targets`. Any agent label works, the ablations' variants included (`evor1-mean`,
`evor5-mean`, `fql-mc`, ...: agents/__init__); each EVOR variant's updates/s is also printed as a ratio
to its base label ('evor1' for 'evor1-mean') measured in the same run. 'evor' is EVOR's default (5-step
chunks); docs/speed.md's earlier figures are single-step EVOR, `--agents evor1,evor1-every-row`. Also the
FLOP/s achieved against the fp32 matmul peak measured in the same run (matmul FLOPs per update counted
on the jaxpr with loop trip counts; XLA's cost analysis counts a loop body once and would undercount
the flow integrations).

    python benchmarks/throughput.py --agents evor,evor-every-row,qc,fql --presets cpu,paper \
        [--pause-pattern "compare.py --cell"]
    python benchmarks/throughput.py --agents evor1,evor1-mean,evor1-hlgauss --presets cpu   # the return models
"""

import argparse
import json

import jax

from _synthetic import PausedJobs, block, make_agent, matmul_flops, synthetic_dataset, timed
from evor.agents import parse_label
from evor.agents.common import one_update, plain_step_fn, table_refresh
from evor.data.files import atomic_write_json


def matmul_peak(size: int = 2048, repeats: int = 5) -> float:
    """fp32 GFLOP/s of a large square matmul (what the cores can do at best)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size))
    f = jax.jit(lambda x, y: x @ y)
    block(f(a, a))
    return 2 * size ** 3 / timed(lambda: block(f(a, a)), repeats) / 1e9


# A row that is not an agent label: LABEL-every-row is LABEL with the spec's every-row target integration.
EVERY_ROW = "-every-row"


def agent_of(name: str):
    """(agent, agent config fields) of a row name: an agent label, or a label with EVERY_ROW after it."""
    if name.endswith(EVERY_ROW):
        agent_name, fields = parse_label(name[: -len(EVERY_ROW)])
        return agent_name, {**fields, "cutoff_returns": "every_row"}
    return parse_label(name)


def base_of(name: str) -> str:
    """The label a variant row is compared with: 'evor1-mean' -> 'evor1', 'evor-every-row' -> 'evor'."""
    return name[: -len(EVERY_ROW)] if name.endswith(EVERY_ROW) else name.split("-")[0]


def flops_per_update(agent, table, state, batch_size, refresh_every: int = 1) -> float:
    """Matmul FLOPs of one update, plus its share of a table refresh (1 / refresh_every of one)."""
    refresh, every = table_refresh(agent, table)
    key = jax.random.PRNGKey(0)
    extra = refresh(state, table, key) if refresh is not None else {}
    flops = matmul_flops(lambda s, k: one_update(agent.update, s, {**table, **extra}, k, batch_size, agent.sample),
                         state, key)
    if refresh is not None:
        flops += matmul_flops(lambda s, k: refresh(s, table, k), state, key) / every
    return flops


def measure(name, preset, dataset, steps: int):
    agent_name, fields = agent_of(name)
    agent, batch_size = make_agent(agent_name, preset, **fields)
    table = agent.make_table(dataset)
    key = jax.random.PRNGKey(1)
    flops = flops_per_update(agent, table, agent.init(jax.random.PRNGKey(0)), batch_size)

    fused = jax.jit(lambda s, k: agent.train_steps(s, table, k, steps, batch_size), donate_argnums=(0,))
    state = block(fused(agent.init(jax.random.PRNGKey(0)), key)[0])  # compile + warm up
    start = jax.random.PRNGKey(2)
    holder = {"state": state}

    def run_fused():
        holder["state"], metrics = fused(holder["state"], start)
        block((holder["state"], metrics))

    fused_seconds = timed(run_fused, 2)

    step = plain_step_fn(agent, table, batch_size)
    refresh_fn, every = table_refresh(agent, table)
    refresh = jax.jit(lambda s, k: refresh_fn(s, table, k)) if refresh_fn is not None else None
    extra = refresh(holder["state"], key) if refresh is not None else {}
    holder["state"] = block(step(holder["state"], key, extra)[0])  # compile + warm up

    def run_plain():
        extra = {}
        for index, step_key in enumerate(jax.random.split(start, steps)):
            if refresh is not None and index % every == 0:
                extra = refresh(holder["state"], jax.random.fold_in(start, index))
            holder["state"], metrics = step(holder["state"], step_key, extra)
            float(metrics[next(iter(metrics))])  # the reference loops read a metric every step
        block(holder["state"])

    plain_seconds = timed(run_plain, 2)
    return {"agent": name, "preset": preset, "steps": steps, "batch_size": batch_size,
            "fused_updates_per_second": steps / fused_seconds, "plain_updates_per_second": steps / plain_seconds,
            "gflop_per_update": None if flops is None else flops / 1e9,
            "fused_gflops": None if flops is None else flops * steps / fused_seconds / 1e9}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", default="evor,evor-every-row,qc,fql")
    parser.add_argument("--presets", default="cpu,paper")
    parser.add_argument("--steps", default="cpu=500,paper=250", help="updates timed per preset (at least one "
                        "cut-off table refresh period, 250, so EVOR pays for its refreshes)")
    parser.add_argument("--pause-pattern", default=None, help="SIGSTOP matching processes while measuring")
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    steps = dict((k, int(v)) for k, v in (item.split("=") for item in args.steps.split(",")))
    dataset = synthetic_dataset()
    rows = []
    with PausedJobs(args.pause_pattern):
        peak = matmul_peak()
        print(f"fp32 matmul peak (2048^3, {jax.devices()[0].platform}): {peak:.1f} GFLOP/s")
        for preset in args.presets.split(","):
            for name in args.agents.split(","):
                row = measure(name, preset, dataset, steps.get(preset, 50))
                row["fraction_of_peak"] = None if row["fused_gflops"] is None else row["fused_gflops"] / peak
                rows.append(row)
                print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}),
                      flush=True)
    print(f"\n| agent | preset | GFLOP/update | fused updates/s | plain updates/s | fused/plain | GFLOP/s | of peak "
          f"({peak:.0f}) |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        gflop = "n/a" if r["gflop_per_update"] is None else f"{r['gflop_per_update']:.2f}"
        achieved = "n/a" if r["fused_gflops"] is None else f"{r['fused_gflops']:.0f}"
        fraction = "n/a" if r["fraction_of_peak"] is None else f"{100 * r['fraction_of_peak']:.0f}%"
        print(f"| {r['agent']} | {r['preset']} | {gflop} | {r['fused_updates_per_second']:.2f} | "
              f"{r['plain_updates_per_second']:.2f} | "
              f"{r['fused_updates_per_second'] / r['plain_updates_per_second']:.2f}x | {achieved} | {fraction} |")
    by_name = {(r["agent"], r["preset"]): r for r in rows}
    for (name, preset), row in by_name.items():
        base = by_name.get((base_of(name), preset))
        if base is None or base is row:
            continue
        if name.endswith(EVERY_ROW):
            print(f"{base_of(name)} {preset} speedup vs every-row targets: "
                  f"{base['fused_updates_per_second'] / row['fused_updates_per_second']:.2f}x")
        elif name.startswith("evor"):
            print(f"{name} {preset} updates/s relative to {base_of(name)}: "
                  f"{row['fused_updates_per_second'] / base['fused_updates_per_second']:.2f}x")
    if args.out:
        atomic_write_json(args.out, {"matmul_peak_gflops": peak, "device": str(jax.devices()[0]), "rows": rows})


if __name__ == "__main__":
    main()
