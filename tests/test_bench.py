"""The study runner: grid expansion, skip and resume, a tiny grid on the local backend, and the same grid
on a local Ray instance giving the same results."""

import json

import jax
import numpy as np
import pytest

from evor.bench import Cell, bench, expand, load_suite
from evor.errors import ConfigError

TASK = "cube-single-play-singletask-task1-v0"


def _suite_file(tmp_path, **extra):
    suite = {"tasks": [TASK], "agents": ["evor", "ifql"], "seeds": [0], "preset": "tiny", "episodes": 2,
             "overrides": {"total_steps": 100, "log_every": 50, "checkpoint_every": 50, "eval_every": 0},
             "data": {"episodes": 2}, **extra}
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(suite))
    return str(path)


def test_grid_expansion_from_suites():
    quick = load_suite("quick")
    cells = expand(quick, "out")
    assert len(cells) == len(quick["tasks"]) * len(quick["agents"]) * len(quick["seeds"])
    assert all(c.data_dir == "out/data" for c in cells)  # reduced datasets never mix with full ones
    manipulation = expand(load_suite("manipulation"), "out", agents=["evor", "qc5"], seeds=[0, 1])
    assert len(manipulation) == 25 * 2 * 2
    assert [(c.seed, c.label) for c in manipulation[:3]] == [(0, "evor"), (0, "qc5"), (0, "evor")]  # seed-major
    assert len({c.run_dir for c in manipulation}) == len(manipulation)
    cell = manipulation[7]
    assert Cell.from_json(cell.to_json()) == cell


def test_bad_suites_are_reported(tmp_path):
    with pytest.raises(ConfigError, match="Unknown suite"):
        load_suite("nope")
    with pytest.raises(ConfigError, match="unknown agent 'ppo'"):
        load_suite(_suite_file(tmp_path, agents=["ppo"]))
    with pytest.raises(ConfigError, match="Unknown agent 'sac'"):
        expand(load_suite("quick"), "out", agents=["sac"])


def _final_params(run_dir):
    from evor.train import load_run

    return [np.asarray(x) for x in jax.tree.leaves(load_run(run_dir).state)]


def test_tiny_grid_runs_skips_finished_cells_and_resumes_partial_ones(tmp_path, capsys):
    suite = _suite_file(tmp_path)
    out = tmp_path / "local"
    summary = bench(suite, str(out), backend="local", jobs=2)
    assert [(c["agent"], c["seed"]) for c in summary["cells"]] == [("evor", 0), ("ifql", 0)]
    assert (out / "report" / "report.html").exists() and (out / "bench.json").exists()
    # Everything finished: a re-run starts nothing.
    capsys.readouterr()
    bench(suite, str(out), backend="local", jobs=2)
    log = capsys.readouterr().out
    assert log.count("done already") == 2 and "[bench] start" not in log
    # A partial cell (its result and last checkpoint gone, as if killed mid-run) resumes from its checkpoint
    # and ends with the same parameters.
    evor_dir = out / TASK / "evor" / "seed0"
    before = _final_params(evor_dir)
    (evor_dir / "compare_eval.json").unlink()
    (evor_dir / "checkpoints" / "step_00000100.pkl").unlink()
    bench(suite, str(out), backend="local", jobs=2)
    log = capsys.readouterr().out
    assert log.count("done already") == 1 and log.count("[bench] start") == 1
    for a, b in zip(before, _final_params(evor_dir)):
        np.testing.assert_array_equal(a, b)


def test_ray_backend_gives_the_local_results(tmp_path):
    pytest.importorskip("ray", reason="Ray not installed (pip install 'evor[ray]'); the ray backend is untested here")
    import ray

    suite = _suite_file(tmp_path)
    local = bench(suite, str(tmp_path / "local"), backend="local", jobs=2)
    try:
        remote = bench(suite, str(tmp_path / "ray"), backend="ray")
    finally:
        ray.shutdown()
    for a, b in zip(local["cells"], remote["cells"]):
        assert (a["agent"], a["seed"]) == (b["agent"], b["seed"])
        assert a["per_episode_success"] == b["per_episode_success"]
        for x, y in zip(_final_params(a["run_dir"]), _final_params(b["run_dir"])):
            np.testing.assert_array_equal(x, y)
