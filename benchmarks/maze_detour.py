"""Where does a pointmaze policy get stuck, and can the data's returns see the way round the wall?

Written for pointmaze-medium task 4 (docs/ablations.md, "Pointmaze task 4"): the start
(16, 20) and the goal (0, 20) lie in one row of the maze with a wall cell between them, so the way
there leaves the start cell *away* from the goal and goes ten cells round. Printed:

1. The data. Monte-Carlo returns-to-go (EVOR's default targets, at the first run's discount) of the
   transitions in the task's start cell, split by whether the action heads towards the goal
   (a . (goal - start) > 0) or away from it. These are returns of the data's behaviour, pi_ref's,
   averaged over the cell: the same both ways says the data's first action does not favour the way
   round on average, not that a value fitted state by state cannot (at 150k updates EVOR's does).
   Also the share of the data's states that are as close to the wall as the agent gets.
2. Each run. For EVOR-like runs, Q* at the start for a unit action at each of 8 headings (which way
   its choice among pi_ref's candidates pushes from there). Then the first episodes of the run's own
   final-evaluation block at its default inference settings: where each ends (x, y and maze cell),
   how far that is from the nearest state in the data, and the share of its steps spent within 0.5
   of the final position (1.0: pinned there all episode).

    python benchmarks/maze_detour.py RUN [RUN ...] [--episodes 5] [--data-dir DIR]

Every run must be of one pointmaze task. Agents that act in chunks (QC-5) run each chunk open-loop,
as `evor eval` does.
"""

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np

from evor.data.dataset import load_task
from evor.data.files import default_data_dir
from evor.data.registry import reset_reproducibly
from evor.data.targets import multistep_targets
from evor.errors import ConfigError, EvorError
from evor.evaluate import evaluation_seed
from evor.train import load_run

REACH_STEPS = 230  # "reaches the goal soon": within this many steps (return above -(1 - g^K) / (1 - g))


def start_cell_returns(env, dataset, discount: float) -> dict:
    """The data's Monte-Carlo returns in the task's start cell, by the action's heading."""
    maze = env.unwrapped
    start, goal = np.asarray(maze.cur_task_info["init_xy"]), np.asarray(maze.cur_task_info["goal_xy"])
    returns = multistep_targets(dataset, discount, horizon=0).partial_returns
    xy = dataset.observations[:, :2]
    half = maze._maze_unit / 2
    in_cell = np.all(np.abs(xy - start) < half, axis=1)
    towards = dataset.actions[:, :2] @ (goal - start) > 0
    reach_return = -(1 - discount**REACH_STEPS) / (1 - discount)  # rewards -1 a step until the goal, then 0
    rows = {}
    for name, chosen in (("towards the goal", in_cell & towards), ("away from the goal", in_cell & ~towards)):
        r = returns[chosen]
        rows[name] = dict(transitions=int(chosen.sum()), mean=float(r.mean()), q90=float(np.quantile(r, 0.9)),
                          q99=float(np.quantile(r, 0.99)), reach_share=float((r > reach_return).mean()))
    return dict(start=start, goal=goal, rows=rows, cell_xy=xy[in_cell])


HEADINGS = ("+x", "+x+y", "+y", "-x+y", "-x", "-x-y", "-y", "+x-y")  # counter-clockwise, eighths of a turn


def heading_values(run, position, keys: int = 16) -> dict[str, float] | None:
    """Q*(s, a) of an EVOR-like run (one with `q_star`) at `position` for unit actions at the 8 headings,
    at its default inference settings, averaged over `keys` draws of the return noise and put back on
    the return scale. Which way its choice among pi_ref's candidates pushes from there; None for agents
    without Q*."""
    if not hasattr(run.agent, "q_star"):
        return None
    angles = np.arange(len(HEADINGS)) * np.pi / 4
    actions = jnp.asarray(np.stack([np.cos(angles), np.sin(angles)], -1), jnp.float32)
    obs = jnp.asarray(np.tile(np.asarray(position, np.float32), (len(angles), 1)))
    settings = run.settings()
    unit = np.mean([np.asarray(run.agent.q_star(run.state, obs, actions, jax.random.PRNGKey(k), settings))
                    for k in range(keys)], axis=0)
    values = run.agent.return_scale.from_unit(unit)
    return {name: float(v) for name, v in zip(HEADINGS, values)}


def rollouts(run, episodes: int, max_steps: int) -> list[dict]:
    """The first `episodes` of the run's final-evaluation block, one environment, default settings."""
    horizon = getattr(run.agent, "action_horizon", 1)  # chunks (QC-5) run open-loop, as in evaluation
    env, policy = run.make_env(), run.policy(run.settings())
    first_seed = evaluation_seed(run.config.seed)
    out = []
    for episode in range(episodes):
        obs, info = reset_reproducibly(env, first_seed + episode)  # the start `evor eval` gives this episode
        key = jax.random.PRNGKey(first_seed + episode)
        path, queue = [], []
        for _ in range(max_steps):
            if not queue:
                key, act_key = jax.random.split(key)
                queue = list(np.asarray(policy(obs[None], act_key))[0].reshape(horizon, -1))
            obs, _, terminated, truncated, info = env.step(queue.pop(0))
            path.append(np.asarray(obs[:2], np.float64))
            if info.get("success") or terminated or truncated:
                break
        path = np.stack(path)
        out.append(dict(success=bool(info.get("success")), steps=len(path), final=path[-1],
                        final_cell=env.unwrapped.xy_to_ij(path[-1]),
                        pinned_share=float((np.linalg.norm(path - path[-1], axis=1) < 0.5).mean())))
    env.close()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    try:
        if args.episodes < 1 or args.max_steps < 1:
            raise ConfigError("--episodes and --max-steps must be >= 1.")
        runs = [load_run(path) for path in args.runs]
        tasks = {run.config.task for run in runs}
        if len(tasks) != 1 or not next(iter(tasks)).startswith("pointmaze"):
            raise ConfigError(f"The runs must share one pointmaze task; got {', '.join(sorted(tasks))}.")
        task = tasks.pop()
        env, dataset, _ = load_task(task, args.data_dir or default_data_dir())
        env.reset(seed=0)  # sets the task's start and goal
        facts = start_cell_returns(env, dataset, runs[0].agent.config.discount)
        env.close()
        print(f"{task}: start {facts['start']}, goal {facts['goal']}")
        print(f"data, start cell: Monte-Carlo returns at discount {runs[0].agent.config.discount} "
              f"(reach share: the goal reached within {REACH_STEPS} steps)")
        for name, row in facts["rows"].items():
            print(f"  action {name:<18} {row['transitions']:>6} transitions  mean {row['mean']:7.2f}  "
                  f"q90 {row['q90']:7.2f}  q99 {row['q99']:7.2f}  reach share {row['reach_share']:.3f}")
        cell_xy = facts["cell_xy"]
        for run in runs:
            print(f"{run.run_dir} ({run.config.agent_name}, step {run.step}):")
            values = heading_values(run, facts["start"])
            if values is not None:
                ranked = sorted(values, key=values.get, reverse=True)
                print("  Q* at the start by heading (unit action, best first; the goal is -x): "
                      + ", ".join(f"{name} {values[name]:.1f}" for name in ranked))
            for i, r in enumerate(rollouts(run, args.episodes, args.max_steps)):
                nearest = float(np.min(np.linalg.norm(dataset.observations[:, :2] - r["final"], axis=1)))
                closer = float(np.mean(np.linalg.norm(cell_xy - facts["goal"], axis=1)
                                       <= np.linalg.norm(r["final"] - facts["goal"])))
                print(f"  episode {i}: {'success' if r['success'] else 'failure'} after {r['steps']} steps, ends at "
                      f"({r['final'][0]:.1f}, {r['final'][1]:.1f}) cell {tuple(int(v) for v in r['final_cell'])}, "
                      f"{nearest:.2f} from the nearest data state; pinned there {r['pinned_share']:.0%} of the "
                      f"episode; start-cell data states at least as close to the goal: {closer:.2%}")
    except EvorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
