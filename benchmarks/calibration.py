"""Calibration of the return flow against exact return distributions, at equal wall time.

MDPs (evor.toy): a 5-state chain with a stochastic behaviour policy and gamma 0.9 (returns span about
10 units), a fork with a bimodal return, and a chain whose goal reward is random (+-5). For every
return-flow target setting (TD flow steps, integrator, target horizon), a fresh return flow is
trained for the same wall-clock budget; then, per state-action, we print Wasserstein-1, the ratio of
learned to true standard deviation, the mean error, and the error of Q*_tau = tau log E exp(Z/tau)
for tau in {0.1, 1, 10} (return units), all as % of the return range [r_min, r_max] / (1 - gamma).

    python benchmarks/calibration.py --seconds 30 [--json out.json]
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from evor.agents.evor import EVOR, EVORConfig, ReturnScale
from evor.data.sampler import transition_table
from evor.toy import ChainMDP, ForkMDP, distribution_moments, wasserstein1

SETTINGS = {
    "1-step euler10 (spec)": dict(target_horizon=1, target_return_flow_steps=10, target_integrator="euler"),
    "1-step euler32": dict(target_horizon=1, target_return_flow_steps=32, target_integrator="euler"),
    "1-step midpoint16": dict(target_horizon=1, target_return_flow_steps=16, target_integrator="midpoint"),
    "1-step rk4x8": dict(target_horizon=1, target_return_flow_steps=8, target_integrator="rk4"),
    "10-step euler10": dict(target_horizon=10, target_return_flow_steps=10, target_integrator="euler"),
    "MC euler10": dict(target_horizon=0, target_return_flow_steps=10, target_integrator="euler"),
}
MDPS = {
    "chain5": ChainMDP(num_states=5),
    "fork": ForkMDP(),
    "chain3-random-goal": ChainMDP(num_states=3, goal_rewards=((-5.0, 0.5), (5.0, 0.5))),
}
TAUS = (0.1, 1.0, 10.0)


def soft_value_np(values, probs, tau):
    top = np.max(values)
    return top + tau * np.log(np.sum(probs * np.exp((values - top) / tau)))


def train_for(agent, dataset, seconds, batch_size, seed, chunk=250):
    table = transition_table(dataset, agent.config.discount, agent.config.target_horizon)
    key, init_key = jax.random.split(jax.random.PRNGKey(seed))
    state = agent.init(init_key)
    step_fn = jax.jit(lambda s, k: agent.train_steps(s, table, k, chunk, batch_size), donate_argnums=(0,))
    key, sub = jax.random.split(key)
    state, _ = step_fn(state, sub)  # compile (and a first chunk) outside the budget
    jax.block_until_ready(state)
    steps, started = chunk, time.perf_counter()
    while time.perf_counter() - started < seconds:
        key, sub = jax.random.split(key)
        state, _ = step_fn(state, sub)
        jax.block_until_ready(state)
        steps += chunk
    return state, steps, time.perf_counter() - started


def measure(agent, state, mdp, eval_steps, samples=4000, seed=123):
    low, high = agent.return_scale.low, agent.return_scale.high
    span = high - low
    rows = []
    key = jax.random.PRNGKey(seed)
    for s, a, label in mdp.state_actions():
        key, sub = jax.random.split(key)
        obs = jnp.asarray(mdp.observe(np.full(samples, s)))
        act = jnp.full((samples, 1), a)
        z = agent.sample_returns(state["return_flow"], obs, act, sub, eval_steps, "euler")[0, :, 0]
        g = np.asarray(agent.return_scale.from_unit(z), np.float64)
        values, probs = mdp.exact(s, a)
        mean, std = distribution_moments(values, probs)
        row = {"pair": label, "w1_pct": 100 * wasserstein1(g, values, probs) / span,
               "std_ratio": float(g.std() / std) if std > 1e-6 else None,
               "mean_err_pct": 100 * (g.mean() - mean) / span}
        for tau in TAUS:
            learned = tau * (np.log(np.mean(np.exp((g - g.max()) / tau))) + g.max() / tau)
            row[f"q_err_pct_tau{tau:g}"] = 100 * (learned - soft_value_np(values, probs, tau)) / span
        rows.append(row)
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30.0, help="training wall time per setting")
    parser.add_argument("--eval-steps", type=int, default=32, help="Euler steps when sampling Z for measurement")
    parser.add_argument("--hidden", default="128,128")
    parser.add_argument("--mdps", default=",".join(MDPS))
    parser.add_argument("--settings", default=None, help="comma-separated subset of setting names")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    hidden = tuple(int(h) for h in args.hidden.split(","))
    chosen = {k: v for k, v in SETTINGS.items() if args.settings is None or k in args.settings.split(",")}
    report = []
    for mdp_name in args.mdps.split(","):
        mdp = MDPS[mdp_name]
        dataset = mdp.dataset(20000, seed=args.seed)
        print(f"\n== {mdp_name}: {args.seconds:.0f} s of training per setting; errors in % of the return range")
        print(f"{'setting':24s} {'steps':>6s} {'maxW1%':>7s} {'std ratio min..max':>19s} {'max|mean|%':>10s} "
              + " ".join(f"{'maxQ*%':>6s}t={t:<4g}" for t in TAUS))
        for name, fields in chosen.items():
            config = EVORConfig(hidden_dims=hidden, discount=mdp.discount, num_return_flows=1, learning_rate=1e-3,
                                **fields)
            scale = ReturnScale.from_rewards(*mdp.reward_bounds, mdp.discount)
            agent = EVOR(config, mdp.observation_dim, 1, scale)
            state, steps, seconds = train_for(agent, dataset, args.seconds, 256, args.seed)
            rows = measure(agent, state, mdp, args.eval_steps)
            ratios = [r["std_ratio"] for r in rows if r["std_ratio"] is not None]
            summary = {"mdp": mdp_name, "setting": name, "steps": steps, "seconds": round(seconds, 1),
                       "max_w1_pct": max(r["w1_pct"] for r in rows), "min_std_ratio": min(ratios),
                       "max_std_ratio": max(ratios), "max_abs_mean_err_pct": max(abs(r["mean_err_pct"]) for r in rows),
                       **{f"max_abs_q_err_pct_tau{t:g}": max(abs(r[f"q_err_pct_tau{t:g}"]) for r in rows)
                          for t in TAUS}, "pairs": rows}
            report.append(summary)
            print(f"{name:24s} {steps:6d} {summary['max_w1_pct']:7.2f} {min(ratios):9.2f}..{max(ratios):<8.2f} "
                  f"{summary['max_abs_mean_err_pct']:10.2f} "
                  + " ".join(f"{summary[f'max_abs_q_err_pct_tau{t:g}']:12.2f}" for t in TAUS), flush=True)
    targets = "targets (chain): W1 <= 1.5%, std ratio in [0.9, 1.1], Q* error <= 2% for every tau"
    print(f"\n{targets}")
    for r in report:
        if r["mdp"] == "chain5":
            ok = (r["max_w1_pct"] <= 1.5 and 0.9 <= r["min_std_ratio"] and r["max_std_ratio"] <= 1.1
                  and all(r[f"max_abs_q_err_pct_tau{t:g}"] <= 2 for t in TAUS))
            print(f"  {r['setting']:24s} {'meets' if ok else 'misses'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
