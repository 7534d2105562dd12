"""The study runner: grid expansion, skip and resume, a tiny grid on the local backend, and the same grid
on a local Ray instance giving the same results."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from evor.bench import Cell, bench, expand, load_suite
from evor.errors import ConfigError, EvorError

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
    study = load_suite("ogbench-cpu")
    one_env = expand(study, "out", seeds=[1, 2], tasks=[study["tasks"][-1]])
    assert [(c.task, c.seed, c.label) for c in one_env] == [
        (study["tasks"][-1], seed, label) for seed in (1, 2) for label in study["agents"]]


def test_every_shipped_suite_expands_into_cells_whose_configs_build():
    # A typo in a suite file (an agent variant, an override) must fail here, not hours into a study.
    from evor.agents import parse_label
    from evor.bench import available_suites
    from evor.train import make_config

    assert {"ogbench-cpu", "ablation-return-models", "ablation-targets"} <= set(available_suites())
    for name in available_suites():
        cells = expand(load_suite(name), "out")
        assert len({c.run_dir for c in cells}) == len(cells), name
        for cell in {c.label: c for c in cells}.values():
            agent_name, fields = parse_label(cell.label)
            overrides = dict(cell.overrides)
            config = make_config(cell.preset, task=cell.task, seed=cell.seed, agent_name=agent_name,
                                 agent={**fields, **overrides.pop("agent", {})}, **overrides)
            assert config.agent_name == agent_name
    labels = {c.label for c in expand(load_suite("ablation-return-models"), "out")}
    assert labels == {"evor1", "evor1-mean", "evor1-hlgauss"}


def test_bad_suites_are_reported(tmp_path):
    with pytest.raises(ConfigError, match="Unknown suite"):
        load_suite("nope")
    with pytest.raises(ConfigError, match="(?i)unknown agent 'ppo'"):
        load_suite(_suite_file(tmp_path, agents=["ppo"]))
    with pytest.raises(ConfigError, match="Unknown agent 'sac'"):
        expand(load_suite("quick"), "out", agents=["sac"])
    with pytest.raises(ConfigError, match="cube-single-play-singletask-task9-v0 not in the suite"):
        expand(load_suite("ogbench-cpu"), "out", tasks=["cube-single-play-singletask-task9-v0"])


def _final_params(run_dir):
    from evor.train import load_run

    return [np.asarray(x) for x in jax.tree.leaves(load_run(run_dir).state)]


@pytest.fixture(scope="module")
def local_grid(tmp_path_factory):
    """The tiny grid run once on the local backend, shared by the resume test and the Ray comparison (each
    cell is a fresh process that compiles its agent: running the grid twice cost CI a minute or more). The
    final parameters are read here, before the resume test deletes and re-creates a checkpoint."""
    tmp_path = tmp_path_factory.mktemp("grid")
    suite = _suite_file(tmp_path)
    out = tmp_path / "local"
    summary = bench(suite, str(out), backend="local", jobs=2)
    params = [_final_params(cell["run_dir"]) for cell in summary["cells"]]
    return suite, out, summary, params


def test_tiny_grid_runs_skips_finished_cells_and_resumes_partial_ones(local_grid, capsys):
    suite, out, summary, _ = local_grid
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
    (evor_dir / "checkpoints" / "step_00000100.ckpt").unlink()
    bench(suite, str(out), backend="local", jobs=2)
    log = capsys.readouterr().out
    assert log.count("done already") == 1 and log.count("[bench] start") == 1
    for a, b in zip(before, _final_params(evor_dir)):
        np.testing.assert_array_equal(a, b)
    # The same suite trained longer continues the finished run and keeps the shorter run's score beside it.
    longer = json.loads(open(suite).read())
    longer["overrides"]["total_steps"] = 150
    (out / "longer.json").write_text(json.dumps(longer))
    bench(str(out / "longer.json"), str(out), agents=["evor"], backend="local", jobs=1)
    kept = json.loads((evor_dir / "compare_eval_step100.json").read_text())
    assert kept["step"] == 100 and json.loads((evor_dir / "compare_eval.json").read_text())["step"] == 150


def test_ray_backend_gives_the_local_results(local_grid, tmp_path):
    pytest.importorskip("ray", reason="Ray not installed (pip install 'evor[ray]'); the ray backend is untested here")
    import ray

    suite, _, local, local_params = local_grid
    try:
        remote = bench(suite, str(tmp_path / "ray"), backend="ray")
    finally:
        ray.shutdown()
    assert len(remote["cells"]) == len(local["cells"]) == 2
    for a, b, params in zip(local["cells"], remote["cells"], local_params):
        assert (a["agent"], a["seed"]) == (b["agent"], b["seed"])
        assert a["per_episode_success"] == b["per_episode_success"]
        for x, y in zip(params, _final_params(b["run_dir"])):
            np.testing.assert_array_equal(x, y)


def test_compare_table_aggregates_tasks_and_differences_from_finished_cells(tmp_path):
    """benchmarks/compare.py --table-only on hand-made finished cells: per-task rows, the across-task row
    (only for agents with the same seeds on every task) and the reference-minus-agent difference."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    successes = {("A", "evor"): [0.6, 0.6, 0.6], ("B", "evor"): [0.2, 0.2, 0.2],
                 ("A", "fql"): [0.4, 0.4, 0.4], ("B", "fql"): [0.2, 0.2, 0.2],
                 ("A", "ifql"): [0.1, 0.3, 0.2], ("B", "ifql"): [0.0, 0.0]}  # ifql: seed 2 unfinished on B
    for (task, label), rates in successes.items():
        for seed, rate in enumerate(rates):
            run_dir = tmp_path / task / label / f"seed{seed}"
            run_dir.mkdir(parents=True)
            result = {"success_rate": rate, "per_episode_success": []}
            if label != "ifql":  # older result files have no policy timing
                result["policy_ms_per_env_step"] = 2.0 * (seed + 1)
            (run_dir / "compare_eval.json").write_text(json.dumps(result))
            (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 100, "steps_per_second": 10.0 + seed}) + "\n")
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, str(root / "benchmarks" / "compare.py"), "--tasks", "A,B",
                             "--agents", "evor,fql,ifql", "--seeds", "0,1,2", "--out", str(tmp_path), "--table-only"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "not finished: B ifql seed 2" in result.stdout and "no across-task row for ifql" in result.stdout
    rows = {(r["task"], r["agent"]): r for r in json.loads((tmp_path / "compare.json").read_text())["rows"]}
    assert set(rows) == {("A", "evor"), ("A", "fql"), ("A", "ifql"), ("B", "evor"), ("B", "fql"), ("B", "ifql"),
                         ("all 2 tasks", "evor"), ("all 2 tasks", "fql")}
    assert rows["all 2 tasks", "evor"]["mean"] == pytest.approx(0.4)
    assert rows["all 2 tasks", "fql"]["mean"] == pytest.approx(0.3)
    assert rows["all 2 tasks", "fql"]["reference_minus_agent"] == pytest.approx(0.1)
    assert rows["all 2 tasks", "fql"]["reference_minus_agent_ci95"] == pytest.approx([0.1, 0.1])
    assert rows["A", "ifql"]["reference_minus_agent"] == pytest.approx(0.4)
    assert rows["A", "ifql"]["updates_per_second"] == pytest.approx(11.0)
    assert "reference_minus_agent" not in rows["A", "evor"]
    assert rows["all 2 tasks", "evor"]["policy_ms_per_env_step"] == pytest.approx(4.0)
    assert rows["A", "ifql"]["policy_ms_per_env_step"] is None
    # Across tasks the std is over seeds of each seed's task average (0.3 for all three here).
    assert rows["all 2 tasks", "fql"]["success"] == pytest.approx([0.3, 0.3, 0.3])
    row = "| all 2 tasks | fql | 3 | 30.0 ± 0.0 | [30.0, 30.0] | 30 / 30 / 30 | 11.0 | 4.00 | +10.0 [+10.0, +10.0] |"
    assert row in (tmp_path / "compare.md").read_text()


def test_agent_labels_round_trip_and_come_from_the_agents():
    from evor.agents import chunked_agents, label_of, parse_label

    assert set(chunked_agents()) == {"evor", "qc"}  # the agents whose config has a chunk length
    for label in ("evor1", "evor5", "qc1", "qc5", "qc3", "fql", "ifql", "evor1-mean", "evor1-hlgauss", "evor1-td10",
                  "evor5-mean", "evor5-mean-td1", "fql-mc", "fql-td10", "ifql-mc", "evor5-mean-td5-greedy",
                  "evor1-td1-dataset"):
        name, fields = parse_label(label)
        assert label_of(name, fields) == label
    # A default chunk other than 1 is always named: 'evor' and 'qc' parse, as the defaults, written evor5 / qc5
    assert label_of("qc", {}) == "qc5" and label_of("evor", {}) == "evor5"
    assert parse_label("evor") == ("evor", {}) and parse_label("evor-mean") == ("evor", {"return_model": "mean"})
    assert parse_label("evor1-hlgauss") == ("evor", {"horizon": 1, "return_model": "hl_gauss"})
    assert parse_label("fql-mc") == ("fql", {"target_horizon": 0})
    assert parse_label("evor5-td5-greedy") == ("evor", {"horizon": 5, "target_horizon": 5, "next_action": "greedy"})
    # A run's full config names only what differs from the agent's defaults.
    assert label_of("evor", {"return_model": "flow", "target_horizon": 0, "horizon": 1}) == "evor1"
    assert label_of("evor", {"return_model": "flow", "target_horizon": 0, "horizon": 5}) == "evor5"
    assert label_of("fql", {"target_horizon": 0, "alpha": 300.0}) == "fql-mc"
    with pytest.raises(ConfigError, match="Unknown agent 'fql3'"):
        parse_label("fql3")
    with pytest.raises(ConfigError, match="fql takes -mc, -tdN"):
        parse_label("fql-mean")
    with pytest.raises(ConfigError, match="qc has no variants"):
        parse_label("qc5-mc")
    with pytest.raises(ConfigError, match="default return_model"):
        parse_label("evor-flow")  # one label per configuration
    with pytest.raises(ConfigError, match="sets return_model twice"):
        parse_label("evor-mean-hlgauss")


def test_a_cell_whose_suite_now_trains_longer_is_not_done(tmp_path):
    # its run is continued to the new total_steps (train's resume extends it) instead of reporting the old result
    short = Cell(TASK, "evor", 0, "tiny", 2, str(tmp_path), (("total_steps", 100),))
    short.run_dir.mkdir(parents=True)
    (short.run_dir / "compare_eval.json").write_text(json.dumps({"step": 100, "success_rate": 0.5}))
    assert short.done()
    assert not Cell(TASK, "evor", 0, "tiny", 2, str(tmp_path), (("total_steps", 300),)).done()


def test_a_cell_refuses_a_run_directory_of_another_method(tmp_path):
    # a study directory written when 'evor' meant single-step EVOR: its cell is neither reused nor resumed
    from evor.config import config_json

    old = Cell(TASK, "evor1", 0, "tiny", 2, str(tmp_path), ())
    new = Cell(TASK, "evor", 0, "tiny", 2, str(tmp_path), ())
    new.run_dir.mkdir(parents=True)
    saved = config_json(old.config())
    del saved["agent"]["horizon"]  # as written before the field existed: it means 1
    (new.run_dir / "config.json").write_text(json.dumps(saved))
    (new.run_dir / "compare_eval.json").write_text(json.dumps({"step": old.config().total_steps, "success_rate": 0.5}))
    with pytest.raises(ConfigError, match=r"another method than 'evor' \(agent.horizon: saved 1, requested 5\)"):
        new.done()
    (new.run_dir / "config.json").write_text(json.dumps(config_json(new.config())))
    assert new.done()  # the same method: reused as before
    (new.run_dir / "config.json").write_text("{not json")  # damaged by hand: named, not a raw traceback
    with pytest.raises(EvorError, match="config.json is unreadable"):
        new.done()


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the runner's cells through /proc")
@pytest.mark.parametrize("stop", ["kill", "ctrl-c"])
def test_killing_the_runner_stops_its_cells_and_keeps_their_checkpoints(tmp_path, stop):
    # `kill PID` on a study used to end the runner alone and leave its cells training as orphans. A
    # terminal's Ctrl-C reaches the runner and its cells at once (one process group); both must end the
    # same way.
    suite = json.loads(open(_suite_file(tmp_path)).read())
    suite["agents"] = ["ifql"]
    suite["overrides"]["total_steps"] = 1_000_000  # still training when it is killed
    (tmp_path / "long.json").write_text(json.dumps(suite))
    out = tmp_path / "out"
    # CI may start us with SIGINT ignored, which children inherit; a runner at a terminal has Ctrl-C live
    # (set here in the child's Python, as preexec_fn is unsafe in a process with JAX's threads)
    as_at_a_terminal = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                        "runpy.run_module('evor.cli', run_name='__main__')")
    runner = subprocess.Popen([sys.executable, "-c", as_at_a_terminal, "bench", str(tmp_path / "long.json"),
                               "--jobs", "1", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    checkpoints = out / TASK / "ifql" / "seed0" / "checkpoints"
    try:
        deadline = time.time() + 600
        while not list(checkpoints.glob("*.ckpt")):
            assert runner.poll() is None and time.time() < deadline, "the cell never reached a checkpoint"
            time.sleep(0.5)
        cells = _children(runner.pid)
        assert len(cells) == 1
        if stop == "kill":
            runner.send_signal(signal.SIGTERM)
        else:
            os.killpg(runner.pid, signal.SIGINT)
        log = runner.communicate(timeout=120)[0]
    finally:  # whatever happened, nothing of this test keeps running (the runner leads its process group)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(runner.pid, signal.SIGKILL)
    assert runner.returncode == 130, log
    assert "[bench] stopped:" in log and "interrupted" in log
    for pid in cells:
        assert not Path(f"/proc/{pid}").exists(), f"cell {pid} outlived its runner"
    assert list(checkpoints.glob("*.ckpt")) and not (out / TASK / "ifql" / "seed0" / "compare_eval.json").exists()
