"""benchmarks/gpu_cells.py on real (tiny) OGBench data: a time-boxed agent keeps what it trained, and
every kept checkpoint is scored on its seed's own episodes with that checkpoint's parameters."""

import json

import numpy as np

from evor.evaluate import evaluation_seed
from evor.train import load_run

TASK = "cube-single-play-singletask-task1-v0"


def _args(gpu_cells, cube_single_data, out, *extra):
    return gpu_cells.parse_args(["--task", TASK, "--agents", "fql", "--seeds", "0,1", "--preset", "tiny",
                                 "--steps", "200", "--checkpoint-every", "50", "--episodes", "2",
                                 "--eval-workers", "1", "--data-dir", str(cube_single_data), "--out", str(out), *extra])


def test_each_kept_checkpoint_is_scored_with_its_own_parameters(cube_single_data, tmp_path, benchmark_script):
    gpu_cells = benchmark_script("gpu_cells")
    args = _args(gpu_cells, cube_single_data, tmp_path)
    row = gpu_cells.run_agent(args, "fql")
    assert not row["stopped_by_time"]
    for seed in (0, 1):
        run_dir = tmp_path / "runs" / TASK / "fql" / f"seed{seed}"
        results = json.loads((run_dir / "eval.json").read_text())["results"]
        assert sorted(r["step"] for r in results) == [100, 150, 200]  # the newest three (args.last)
        assert {r["seed"] for r in results} == {evaluation_seed(seed)}
        assert sorted(row["seeds"][seed]) == [100, 150, 200]
        assert json.loads((run_dir / "compare_eval.json").read_text())["step"] == 200
    table = gpu_cells.summary_markdown([json.loads(json.dumps(row))], args)
    assert "| fql | 200 |" in table


def test_checkpoint_runs_act_as_a_fresh_load_of_each_checkpoint(cube_single_data, tmp_path, benchmark_script):
    """The scored Run is reused with each checkpoint's state swapped in; it must act exactly as that
    checkpoint loaded on its own (cube returns cannot show it: failing episodes all return -length)."""
    import jax

    gpu_cells = benchmark_script("gpu_cells")
    args = _args(gpu_cells, cube_single_data, tmp_path, "--seeds", "0")
    config = gpu_cells.agent_cells(args, "fql")[0].config()
    from evor.train import train

    run_dir = tmp_path / "run"
    train(config, run_dir, show_progress=False)
    obs = np.linspace(-1, 1, 7 * 28, dtype=np.float32).reshape(7, 28)
    actions = []
    for run in gpu_cells.checkpoint_runs(run_dir, [100, 150, 200]):
        fresh = load_run(run_dir, step=run.step)
        settings = fresh.settings()
        np.testing.assert_array_equal(run.policy(settings)(obs, jax.random.PRNGKey(1)),
                                      fresh.policy(settings)(obs, jax.random.PRNGKey(1)))
        actions.append(np.asarray(run.policy(settings)(obs, jax.random.PRNGKey(1))))
    assert not np.allclose(actions[0], actions[2]), "checkpoints 100 and 200 must act differently"


def test_a_spent_time_box_keeps_the_first_chunk_and_says_so(cube_single_data, tmp_path, benchmark_script):
    gpu_cells = benchmark_script("gpu_cells")
    args = _args(gpu_cells, cube_single_data, tmp_path, "--train-seconds", "0")
    row = gpu_cells.run_agent(args, "fql")
    assert row["stopped_by_time"]
    for seed in (0, 1):
        run_dir = tmp_path / "runs" / TASK / "fql" / f"seed{seed}"
        assert sorted(row["seeds"][seed]) == [50]  # the tiny preset's first chunk, checkpointed at the deadline
        assert not (run_dir / "compare_eval.json").exists()
