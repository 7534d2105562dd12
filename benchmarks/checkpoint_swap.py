"""Which part of an EVOR run changed between two of its checkpoints: pi_ref's candidates or the value model?

Written for EVOR5-mean on pointmaze task 1 (docs/ablations.md, "Why the chunked scalar critic breaks
late on pointmaze"), whose score fell from 98 at 20k updates to 36 at 30k while its calibration did
not move. Printed:

1. Every mix of pi_ref (the actor) from one kept step and the return model from another, read on the
   run's own final-evaluation episodes at its default inference settings, and pi_ref alone (N = 1) at
   each step: the pure mixes reproduce `evor sweep RUN --step A,B`; the crossed ones say which half
   carries the change. Each read lists its solved episodes (index in the block) for paired tests; for a
   maze, also the share of failed episodes by the cell where they end.
2. At the last state of each episode that fails with pi_ref and the value model both from step B:
   the N candidates acting draws there from B's pi_ref, scored by A's and by B's value model (the run's
   acting readout, mean of R readouts). The Spearman correlation of the two rankings; for each model,
   the candidate it puts first: the way its chunk moves the agent (the sum of its actions as the
   environment clips them, averaged over states), its length and its largest |action| (pi_ref's samples
   are not clipped to the data's [-1, 1]); the value gap between first and median candidate. On a
   plane (the mazes), candidates by the way they mostly move, with the best of each way's value
   against the first; and the dataset's chunks that start near those states, by the same headings,
   with their Monte-Carlo returns (what the data says about each way there).

    python benchmarks/checkpoint_swap.py RUN --steps A,B [--episodes 50] [--readouts 8] [--ranking-only]

Needs an EVOR-like run (its state holds `actor` and the return model's weights) with both steps kept.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np

from evor.data.registry import make_env
from evor.errors import ConfigError, EvorError
from evor.evaluate import OGBenchEnv, evaluate_policy, evaluation_seed

LAST_XY: dict[int, np.ndarray] = {}  # reset seed -> the episode's last observation (in-process envs only)


class _Recording:
    """An environment that remembers each episode's last observation under its reset seed."""

    def __init__(self, env):
        self._env, self._seed = env, None

    def __getattr__(self, name):
        return getattr(self._env, name)

    def reset(self, seed=None, **kwargs):
        self._seed = seed
        ob, info = self._env.reset(seed=seed, **kwargs)
        LAST_XY[seed] = np.asarray(ob, np.float64)
        return ob, info

    def step(self, action):
        out = self._env.step(action)
        LAST_XY[self._seed] = np.asarray(out[0], np.float64)
        return out


@dataclasses.dataclass(frozen=True)
class RecordingEnv(OGBenchEnv):
    def __call__(self):
        return _Recording(make_env(self.env_name, success_timing=self.success_timing))


def fmt(vector) -> str:
    return "(" + ", ".join(f"{v:+.2f}" for v in vector) + ")"


def mixed(run_actor, run_value):
    """A copy of `run_value` acting with `run_actor`'s pi_ref."""
    state = dict(run_value.state)
    state["actor"] = run_actor.state["actor"]
    return dataclasses.replace(run_value, state=state, _compiled={})


def read(run, settings, episodes: int, seed: int):
    """(success rate, episodes' last observations) on `episodes` episodes from reset seed `seed`."""
    factory = run.env_factory()
    env = RecordingEnv(factory.env_name, factory.success_timing)
    result = evaluate_policy(env, run.policy(settings), episodes, seed=seed, pool_size=10, workers=0,
                             action_horizon=getattr(run.agent, "action_horizon", 1))
    last = np.stack([LAST_XY[seed + i] for i in range(episodes)])
    return result, last


def solved_episodes(result) -> str:
    """The solved episodes by their index in the block (reset seed minus the first), for paired tests
    between mixes read on the same episodes (an exact McNemar test needs who solved which)."""
    solved = np.flatnonzero(np.asarray(result["per_episode_success"], bool))
    return ", ".join(str(i) for i in solved) if len(solved) else "none"


HEADINGS = ("+x", "-x", "+y", "-y")


def heading_of(moves: np.ndarray) -> np.ndarray:
    """Index into HEADINGS of the axis and sign each 2-d move mostly goes along."""
    along_x = np.abs(moves[..., 0]) >= np.abs(moves[..., 1])
    return np.where(along_x, np.where(moves[..., 0] > 0, 0, 1), np.where(moves[..., 1] > 0, 2, 3))


def data_chunks_near(dataset, discount: float, horizon: int, points: np.ndarray, radius: float):
    """(heading, count, mean Monte-Carlo return) of the dataset's chunks of `horizon` actions that start
    within `radius` of any of `points` (x, y) and stay inside one trajectory (the return is the chunk's
    first state's, as a chunk critic's target): does the data ever do there what the value model prefers?"""
    from evor.data.targets import multistep_targets

    returns = multistep_targets(dataset, discount, horizon=0).partial_returns
    continues = (dataset.masks > 0) & (dataset.ends == 0)
    n = len(dataset)
    whole, moves = np.ones(n, bool), np.zeros((n, 2))
    for k in range(horizon):
        rows = np.minimum(np.arange(n) + k, n - 1)
        moves += dataset.actions[rows, :2].clip(-1, 1)
        if k < horizon - 1:
            whole &= continues[rows]
    xy = dataset.observations[:, :2]
    near = np.zeros(n, bool)
    for point in points:
        near |= np.linalg.norm(xy - point, axis=1) < radius
    heading = heading_of(moves)
    out = []
    for h, name in enumerate(HEADINGS):
        chosen = near & whole & (heading == h)
        out.append((name, int(chosen.sum()), float(returns[chosen].mean()) if chosen.any() else None))
    return out


def main(argv=None) -> int:
    from evor.data.dataset import load_task
    from evor.diagnostics import acting_readouts, draw_candidates, spearman_rows
    from evor.train import load_run

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("--steps", required=True, help="A,B: two kept checkpoints")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--readouts", type=int, default=8)
    parser.add_argument("--data-radius", type=float, default=0.5,
                        help="count the data's chunks starting this close to the failed states (0: skip)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--ranking-only", action="store_true", help="read only B's own pi_ref and value model, then rank")
    args = parser.parse_args(argv)
    try:
        steps = [int(s) for s in args.steps.split(",") if s.strip().isdigit()]
        if len(steps) != 2 or len(args.steps.split(",")) != 2 or args.episodes < 1 or args.readouts < 1:
            raise ConfigError("--steps takes two steps A,B; --episodes and --readouts must be >= 1.")
        runs = {step: load_run(args.run, step=step) for step in steps}
        a, b = steps
        if not all("actor" in r.state and hasattr(r.agent, "q_star") for r in runs.values()):
            raise ConfigError(f"{args.run} is not an EVOR-like run (no pi_ref and value model to swap).")
        run_b = runs[b]
        settings = run_b.settings()
        seed = evaluation_seed(run_b.config.seed)
        maze = run_b.config.task.startswith(("pointmaze", "antmaze"))
        print(f"{args.run}: {run_b.config.task}, steps {a} and {b}; {args.episodes} episodes from reset seed "
              f"{seed}, N = {settings.num_candidates}, tau_R {settings.tau_r}")
        broken_last = None
        read_steps = [b] if args.ranking_only else steps  # only B's own pair when ranking
        unwrapped = run_b.make_env().unwrapped if maze else None  # maps positions to maze cells
        for actor_step in read_steps:
            if not args.ranking_only:
                alone, _ = read(runs[actor_step], runs[actor_step].settings(num_candidates=1), args.episodes, seed)
                print(f"  pi_ref {actor_step} alone (N = 1): {100 * alone['success_rate']:.0f}% "
                      f"(solved episodes: {solved_episodes(alone)})")
            for value_step in read_steps:
                result, last = read(mixed(runs[actor_step], runs[value_step]), settings, args.episodes, seed)
                line = (f"  pi_ref {actor_step} + value model {value_step}: {100 * result['success_rate']:.0f}% "
                        f"(length {result['episode_length_mean']:.0f}; solved episodes: {solved_episodes(result)})")
                failed = ~np.asarray(result["per_episode_success"], bool)
                if maze and failed.any():
                    cells = collections.Counter(tuple(int(v) for v in unwrapped.xy_to_ij(xy[:2])) for xy in last[failed])
                    line += ("; failures end in cells " + ", ".join(f"{c} x{n}" for c, n in cells.most_common())
                             + f", at (x, y) {fmt(last[failed, :2].mean(axis=0))} on average")
                print(line)
                if actor_step == b and value_step == b:
                    broken_last = last[failed]
        if broken_last is None or not len(broken_last):
            print("  no failed episode at step B: nothing to rank")
            return 0
        obs = jnp.asarray(broken_last, jnp.float32)
        n = settings.num_candidates
        obs_n, candidates = draw_candidates(run_b, obs, jax.random.PRNGKey(0))
        values = {step: np.asarray(acting_readouts(runs[step], obs_n, candidates, jax.random.PRNGKey(1),
                                                   args.readouts)).mean(axis=0) for step in steps}
        horizon = getattr(run_b.agent, "action_horizon", 1)
        chunks = np.asarray(candidates).reshape(obs.shape[0], n, horizon, -1)
        moves = chunks.clip(-1, 1).sum(axis=2)  # what the environment executes, summed over the chunk
        print(f"  at the last state of the {len(broken_last)} failed episodes ({n} candidates from pi_ref {b}):")
        print(f"    Spearman(value {a}, value {b}) over candidates: mean "
              f"{spearman_rows(values[a], values[b]).mean():.2f}")
        print(f"    all candidates: move {fmt(moves.mean(axis=(0, 1)))}, |move| {np.linalg.norm(moves, axis=-1).mean():.2f}, "
              f"largest |action| {np.abs(chunks).max(axis=(2, 3)).mean():.2f}")
        for step in steps:
            first = values[step].argmax(axis=1)
            rows = np.arange(len(first))
            gap = values[step].max(axis=1) - np.median(values[step], axis=1)
            chosen = moves[rows, first]
            print(f"    value {step} first: move {fmt(chosen.mean(axis=0))}, "
                  f"|move| {np.linalg.norm(chosen, axis=-1).mean():.2f}, "
                  f"largest |action| {np.abs(chunks[rows, first]).max(axis=(1, 2)).mean():.2f}, "
                  f"gap to median {gap.mean():.2f} (return units); same first as the other model "
                  f"{np.mean(values[a].argmax(1) == values[b].argmax(1)):.0%}")
        if moves.shape[-1] == 2:  # a plane (the mazes): candidates by the way their chunk mostly moves
            heading = heading_of(moves)
            for h, name in enumerate(HEADINGS):
                has = (heading == h).any(axis=1)
                line = f"    candidates moving {name}: {np.mean((heading == h).sum(axis=1)):.1f} per state"
                for step in steps:
                    best = np.where(heading == h, values[step], -np.inf).max(axis=1)[has]
                    if has.any():
                        behind = np.mean(best - values[step].max(axis=1)[has])
                        line += f"; value {step}: best of them {behind:+.2f} from the first"
                print(line)
        if moves.shape[-1] == 2 and args.data_radius > 0:
            print(f"    the data's {horizon}-step chunks that start within {args.data_radius} of one of these states:")
            _, dataset, _ = load_task(run_b.config.task, args.data_dir, env=False)
            for name, count, mean in data_chunks_near(dataset, run_b.agent.config.discount, horizon,
                                                      broken_last[:, :2], args.data_radius):
                print(f"      moving {name}: {count} chunks" + (f", mean Monte-Carlo return {mean:.1f}" if count else ""))
    except EvorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
