"""Aggregates against hand-computed values; the HTML report renders in headless Chromium."""

import json
import shutil
import subprocess

import numpy as np
import pytest

from evor.report import bootstrap_difference, iqm, stratified_bootstrap, write_report


def test_iqm_drops_a_quarter_from_each_end():
    assert iqm([1, 2, 3, 4]) == 2.5
    assert iqm([8, 1, 100, 3, 4, 5, 7, 2]) == pytest.approx((3 + 4 + 5 + 7) / 4)
    assert iqm([0.2, 0.9, 0.4]) == pytest.approx(0.5)  # n = 3: nothing trimmed


def test_bootstrap_interval_of_a_two_seed_mean():
    # Resampled means of {0, 1} are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4: the 30% and 70%
    # quantiles are both 0.5; the 95% interval spans [0, 1].
    assert stratified_bootstrap([[0.0, 1.0]], np.mean, level=0.4) == (0.5, 0.5)
    assert stratified_bootstrap([[0.0, 1.0]], np.mean, level=0.95) == (0.0, 1.0)


def test_bootstrap_resamples_within_each_task():
    # A one-seed task always keeps its single score, so the pooled mean never moves: exactly 0.25.
    assert stratified_bootstrap([[0.0, 0.0, 0.0], [1.0]], np.mean) == (0.25, 0.25)
    # Unstratified, the pooled scores would sometimes hold no 1 or several.
    low, high = stratified_bootstrap([[0.0, 0.0, 0.0, 1.0]], np.mean)
    assert low == 0.0 and high >= 0.5


def test_bootstrap_difference_of_means():
    # B has one score, so the difference is A's resampled mean minus 0: 0, 0.5, 1 with 1/4, 1/2, 1/4.
    assert bootstrap_difference([[0.0, 1.0]], [[0.0]], level=0.4) == (0.5, 0.5)
    assert bootstrap_difference([[0.0, 1.0]], [[0.0]], level=0.95) == (0.0, 1.0)
    # Constant seeds: the interval collapses onto the difference.
    low, high = bootstrap_difference([[0.6, 0.6, 0.6]], [[0.4, 0.4, 0.4]])
    assert low == pytest.approx(0.2) and high == pytest.approx(0.2)
    # Stratified: a one-seed task keeps its score, so both pooled means are fixed (0.25 and 0).
    assert bootstrap_difference([[1.0], [0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0], [0.0]]) == (0.25, 0.25)
    # Large samples: the interval sits on the true difference (-0.2) with the normal width
    # 2 * 1.96 * sigma * sqrt(2 / n) = 0.0392 for sigma = 0.1, n = 200.
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.3, 0.1, 200), rng.normal(0.5, 0.1, 200)
    low, high = bootstrap_difference([a], [b])
    true_width = 2 * 1.96 * 0.1 * np.sqrt(2 / 200)
    assert low < -0.2 < high and high - low == pytest.approx(true_width, rel=0.2)
    with pytest.raises(ValueError, match="same tasks"):
        bootstrap_difference([[0.0]], [[0.0], [1.0]])


def _fake_run(root, task, agent, seed, final, curve, sweep=None, diagnostics=None, horizon=None):
    path = root / task / f"{agent}{horizon or ''}" / f"seed{seed}"
    path.mkdir(parents=True)
    config = {"task": task, "agent_name": agent, "agent": {"horizon": horizon} if horizon else {}, "inference": {},
              "seed": seed, "total_steps": 1000}
    (path / "config.json").write_text(json.dumps(config))
    (path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "eval_success_rate": v}) + "\n"
                                                for s, v in curve))
    if final is not None:
        (path / "compare_eval.json").write_text(json.dumps({"success_rate": final, "episodes": 50}))
    if sweep:
        (path / "sweep.json").write_text(json.dumps({"results": sweep}))
    if diagnostics:
        (path / "diagnostics.json").write_text(json.dumps(diagnostics))
    return path


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    task1, task2 = "cube-single-play-singletask-task1-v0", "cube-single-play-singletask-task2-v0"
    finals = {task1: [0.5, 0.7, 0.9], task2: [0.2, 0.4, 0.3]}
    for task, values in finals.items():
        for seed, final in enumerate(values):
            sweep = [{"settings": {"num_candidates": n}, "success_rate": final * (n / 16) ** 0.2,
                      "single_action_ms": 0.3 * n, "step": 1000, "episodes": 50} for n in (1, 4, 16)]
            diagnostics = {"validation": {"pit_histogram": [0.1] * 10, "coverage": {"50": 0.5, "80": 0.79, "90": 0.9}}}
            _fake_run(root, task, "evor", seed, final, [(500, final / 2), (1000, final)], sweep, diagnostics, horizon=5)
            _fake_run(root, task, "qc", seed, final / 2, [(500, 0.6), (1000, final / 2)], horizon=5)
    return root, finals


def test_report_tables_match_hand_computed_values(runs, tmp_path):
    root, finals = runs
    summary = write_report([root], tmp_path / "report")
    rows = {(r["task"], r["method"]): r for r in summary["per_task"]}
    for task, values in finals.items():
        evor = rows[(task, "evor5")]
        assert evor["final_mean"] == pytest.approx(np.mean(values))
        assert evor["final_std"] == pytest.approx(np.std(values))
        assert evor["final_iqm"] == pytest.approx(np.mean(values))  # 3 seeds: nothing trimmed
        qc = rows[(task, "qc5")]
        assert qc["best_mean"] == pytest.approx(0.6)  # best during training is reported apart from final
        assert "published_mean" not in evor  # two periodic evaluations: no last-three score
    env = {r["method"]: r for r in summary["per_environment"]}
    pooled = finals["cube-single-play-singletask-task1-v0"] + finals["cube-single-play-singletask-task2-v0"]
    assert env["evor5"]["runs"] == 6 and env["evor5"]["tasks"] == 2
    assert env["evor5"]["final_iqm"] == pytest.approx(np.mean(sorted(pooled)[1:5]))
    low, high = env["evor5"]["final_ci95"]
    assert low <= env["evor5"]["final_iqm"] <= high
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "last three evaluations" in markdown and "best during training" in markdown
    assert "| cube-single-play | evor5 | 2 | 6 |" in markdown
    assert set(summary["figures"]) == {"learning_curves.png", "scaling_vs_candidates.png", "scaling_vs_latency.png",
                                       "diagnostics.png"}


def test_differences_and_the_papers_numbers_sit_beside_ours(runs, tmp_path):
    root, finals = runs
    task1 = "cube-single-play-singletask-task1-v0"
    _fake_run(root, task1, "fql", 0, 0.6, [(1000, 0.6)])  # FQL ran one seed of task 1 only
    summary = write_report([root], tmp_path / "report")
    rows = {(r["environment"], r["method"]): r for r in summary["differences"]}
    # evor - qc5 on both tasks: qc scored half of evor everywhere, so the difference is half evor's mean
    qc = rows[("cube-single-play", "qc5")]
    everything = finals[task1] + finals["cube-single-play-singletask-task2-v0"]
    assert qc["tasks"] == 2 and qc["difference"] == pytest.approx(np.mean(everything) / 2)
    assert qc["difference_ci95"][0] <= qc["difference"] <= qc["difference_ci95"][1]
    # evor - fql only on the task FQL ran. With one FQL seed, resampling would hold its score fixed and
    # show no seed spread, so no interval is given (rather than a falsely narrow one)
    fql = rows[("all", "fql")]
    assert fql["tasks"] == 1 and fql["method_runs"] == 1
    assert fql["difference"] == pytest.approx(np.mean(finals[task1]) - 0.6)
    assert fql["difference_ci95"] is None
    one_seed = next(r for r in summary["per_task"] if r["method"] == "fql")
    assert one_seed["final_ci95"] is None and one_seed["final_iqm"] == pytest.approx(0.6)
    # the FQL paper's 97% on cube-single task 1 is shown beside ours; qc5 has no published per-task number
    assert summary["beside_papers"] == [{"task": task1, "method": "fql", "seeds": [0], "final_mean": 0.6,
                                         "last_three_mean": None, "paper": 0.97}]
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "| all | evor5 − fql | 1 | 3 / 1 | +10.0 | — (a task has one seed) |" in markdown
    assert f"| {task1} | fql | 0 | 60.0 ± 0.0 | 60.0 [— one seed] |" in markdown
    assert f"| {task1} | fql | 0 | 60.0 | — | 97.0 |" in markdown


def test_runs_from_before_the_chunked_default_read_back_as_single_step_evor(tmp_path):
    # a config.json without `horizon` was written when EVOR acted one step at a time: it is 'evor1', and
    # with no 'evor5' among the runs the differences are taken against it
    task = "cube-single-play-singletask-task1-v0"
    for seed, (ours, theirs) in enumerate([(0.8, 0.5), (0.6, 0.5)]):
        _fake_run(tmp_path / "runs", task, "evor", seed, ours, [(1000, ours)])
        _fake_run(tmp_path / "runs", task, "fql", seed, theirs, [(1000, theirs)])
    summary = write_report([tmp_path / "runs"], tmp_path / "report")
    assert {r["method"] for r in summary["per_task"]} == {"evor1", "fql"}
    (row,) = [r for r in summary["differences"] if r["environment"] == "all"]
    assert row["reference"] == "evor1" and row["method"] == "fql" and row["difference"] == pytest.approx(0.2)


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium not installed (Debian: apt-get install chromium); "
                                                ".ci/run installs it")
def test_html_report_renders_in_headless_chromium_with_its_images(runs, tmp_path):
    root, _ = runs
    write_report([root], tmp_path / "report")
    page = tmp_path / "report" / "report.html"
    dom = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert 'data-images-total="4"' in dom and 'data-images-loaded="4"' in dom, dom[:300]
    assert "Per environment" in dom
    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1200,2000", page.as_uri()], capture_output=True, timeout=120)
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[0] == 2000 and pixels[..., :3].std() > 0.05  # not a blank page


def test_a_group_with_unscored_seeds_says_how_many_are_scored(tmp_path):
    # a study in progress: seed 1 is still training; its mean is over seed 0 alone, and the table says so
    task = "cube-single-play-singletask-task1-v0"
    _fake_run(tmp_path / "runs", task, "evor", 0, 0.4, [(1000, 0.4)], horizon=5)
    _fake_run(tmp_path / "runs", task, "evor", 1, None, [(500, 0.1)], horizon=5)
    summary = write_report([tmp_path / "runs"], tmp_path / "report")
    assert summary["per_task"][0]["final_runs"] == 1
    assert f"| {task} | evor5 | 0,1 (1 scored) | 40.0 ± 0.0 |" in (tmp_path / "report" / "report.md").read_text()


def test_results_written_before_a_setting_existed_still_match():
    """Sweep keys and the report's matching leave out a later-added setting at its old behaviour, so older
    sweep.json entries are skipped on re-runs and still count; other settings are no points of the N curve."""
    import dataclasses

    from evor.agents.evor import InferenceSettings
    from evor.report import _only_candidates_differ
    from evor.sweep import setting_key

    settings = InferenceSettings()
    older = dataclasses.asdict(settings)
    del older["return_noise"], older["tilt"]  # what sweep.json held before return_noise and tilt existed
    assert setting_key(settings, 50, 0, 100) == json.dumps({"settings": older, "episodes": 50, "seed": 0, "step": 100},
                                                           sort_keys=True)
    assert setting_key(dataclasses.replace(settings, return_noise="common"), 50, 0, 100) != setting_key(settings, 50, 0, 100)
    assert setting_key(dataclasses.replace(settings, tilt="sampled"), 50, 0, 100) != setting_key(settings, 50, 0, 100)
    defaults = dataclasses.asdict(settings)
    assert _only_candidates_differ(dict(older, num_candidates=4), defaults)
    assert not _only_candidates_differ(dict(older, num_candidates=4, num_return_samples=2), defaults)
    assert not _only_candidates_differ(dict(defaults, return_noise="stratified"), defaults)
    # Were the default to change, an older entry (no field: independent noise) would not count as default.
    assert not _only_candidates_differ(older, dict(defaults, return_noise="stratified"))


def test_runs_of_one_label_trained_differently_are_separate_methods(tmp_path):
    # FQL's alpha comes from its task's family (300 for cube); a run given alpha 10 is another method,
    # and so is one trained for longer. They get their own rows, named by what differs.
    from evor.config import config_json, make_config

    task = "cube-single-play-singletask-task1-v0"
    variants = {"fql": {}, "fql[alpha=10]": {"agent": {"alpha": 10.0}},
                "fql[alpha=10, total_steps=90000]": {"agent": {"alpha": 10.0}, "total_steps": 90000}}
    for seed, overrides in enumerate(variants.values()):
        config = config_json(make_config("cpu", agent_name="fql", task=task, seed=seed, **overrides))
        path = tmp_path / "runs" / str(seed)
        path.mkdir(parents=True)
        (path / "config.json").write_text(json.dumps(config))
        (path / "metrics.jsonl").write_text("")
        (path / "compare_eval.json").write_text(json.dumps({"success_rate": 0.1 * seed, "episodes": 50}))
    assert config["agent"]["alpha"] == 10.0 and make_config("cpu", agent_name="fql", task=task).agent["alpha"] == 300
    summary = write_report([tmp_path / "runs"], tmp_path / "report")
    assert sorted(r["method"] for r in summary["per_task"]) == sorted(variants)


def test_sweep_table_averages_each_setting_over_seeds(runs, tmp_path):
    import dataclasses

    from evor.agents.evor import InferenceSettings
    from evor.report import setting_label

    defaults = dataclasses.asdict(InferenceSettings())
    assert setting_label(dict(defaults), defaults) == "defaults"
    assert setting_label(dict(defaults, num_candidates=8, num_return_samples=4, return_noise="common"),
                         defaults) == "N=8, M=4, return_noise=common"
    root, finals = runs
    summary = write_report([root], tmp_path / "report")
    rows = {(r["task"], r["setting"]): r for r in summary["sweeps"]}
    task = "cube-single-play-singletask-task1-v0"
    assert [r["setting"] for r in summary["sweeps"] if r["task"] == task] == ["N=1", "N=4", "N=16"]  # cheapest first
    expected = [f * (4 / 16) ** 0.2 for f in finals[task]]
    assert rows[task, "N=4"]["success_mean"] == pytest.approx(np.mean(expected))
    assert rows[task, "N=4"]["success_std"] == pytest.approx(np.std(expected))
    assert rows[task, "N=4"]["seeds"] == [0, 1, 2] and rows[task, "N=4"]["single_action_ms"] == pytest.approx(1.2)
    assert "| N=4 | 0,1,2 | 50 |" in (tmp_path / "report" / "report.md").read_text()


def test_the_published_score_is_the_mean_of_the_last_three_evaluations(tmp_path):
    curve = [(250, 0.1), (500, 0.3), (750, 0.5), (1000, 0.7)]
    for seed, scale in enumerate((1.0, 0.5)):
        _fake_run(tmp_path, "cube-single-play-singletask-task1-v0", "fql", seed, 0.9 * scale,
                  [(s, v * scale) for s, v in curve])
    _fake_run(tmp_path, "cube-single-play-singletask-task2-v0", "fql", 0, 0.4, curve[:3])  # stopped early
    rows = {r["task"]: r for r in write_report([tmp_path], tmp_path / "report")["per_task"]}
    task1 = rows["cube-single-play-singletask-task1-v0"]
    assert task1["published_mean"] == pytest.approx(np.mean([0.5, 0.25]))  # (0.3+0.5+0.7)/3 per seed, scaled
    assert task1["final_mean"] == pytest.approx(np.mean([0.9, 0.45]))  # shown next to it, not replaced
    assert "published_mean" not in rows["cube-single-play-singletask-task2-v0"]  # last eval not at the end


def test_a_long_run_without_periodic_evaluations_is_scored_by_its_last_three_evaluated_checkpoints(tmp_path):
    # eval_every 0: no periodic curve, so the last-three score comes from the checkpoints evaluated at the
    # default settings (`evor eval RUN --step all`); a non-default setting and a shorter re-evaluation of
    # a step do not count, and the cell result is the final step's score.
    task = "scene-play-singletask-task3-v0"
    path = _fake_run(tmp_path, task, "evor", 0, None, [])
    (path / "compare_eval.json").write_text(json.dumps({"success_rate": 0.2, "episodes": 50, "step": 1000}))
    results = [{"settings": {}, "step": step, "episodes": 50, "success_rate": rate}
               for step, rate in ((250, 0.04), (500, 0.0), (750, 0.16), (900, 0.22))]
    results += [{"settings": {"num_candidates": 8}, "step": 900, "episodes": 50, "success_rate": 0.9},
                {"settings": {}, "step": 750, "episodes": 5, "success_rate": 1.0}]
    (path / "eval.json").write_text(json.dumps({"results": results}))
    summary = write_report([tmp_path], tmp_path / "report")
    row = summary["per_task"][0]
    assert row["final_mean"] == pytest.approx(0.2)
    assert row["published_mean"] == pytest.approx((0.16 + 0.22 + 0.2) / 3)
    [checkpoints] = summary["checkpoints"]
    assert [(c["step"], c["success"]) for c in checkpoints["scores"]] == [
        (250, 0.04), (500, 0.0), (750, 0.16), (900, 0.22), (1000, 0.2)]
    assert checkpoints["last_three"] == pytest.approx(row["published_mean"])
    assert "250: 4.0 · 500: 0.0 · 750: 16.0 · 900: 22.0 · 1000: 20.0 | 50 | 19.3 |" in (
        tmp_path / "report" / "report.md").read_text()
    # Periodic evaluations, when the run has them, stay the published protocol's score.
    (path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "eval_success_rate": 0.5}) + "\n"
                                                for s in (600, 800, 1000)))
    assert write_report([tmp_path], tmp_path / "report")["per_task"][0]["published_mean"] == pytest.approx(0.5)
    # Without an evaluation at the final step there is no last-three score.
    (path / "metrics.jsonl").write_text("")
    (path / "compare_eval.json").unlink()
    summary = write_report([tmp_path], tmp_path / "report")
    assert "published_mean" not in summary["per_task"][0] and summary["checkpoints"][0]["last_three"] is None


def test_a_continued_cells_kept_earlier_score_is_one_of_its_checkpoint_scores(tmp_path):
    # A study cell trained on from 500 to 1000 steps keeps its 500-step cell result as
    # compare_eval_step500.json: the report counts it as that checkpoint's score, and not as the final.
    path = _fake_run(tmp_path, "scene-play-singletask-task2-v0", "evor", 0, None, [])
    (path / "compare_eval_step500.json").write_text(json.dumps({"success_rate": 0.02, "episodes": 50, "step": 500}))
    (path / "compare_eval.json").write_text(json.dumps({"success_rate": 0.3, "episodes": 50, "step": 1000}))
    (path / "eval.json").write_text(json.dumps({"results": [{"settings": {}, "step": 750, "episodes": 50,
                                                             "success_rate": 0.1}]}))
    summary = write_report([tmp_path], tmp_path / "report")
    assert [(c["step"], c["success"]) for c in summary["checkpoints"][0]["scores"]] == [(500, 0.02), (750, 0.1), (1000, 0.3)]
    assert summary["per_task"][0]["final_mean"] == pytest.approx(0.3)
    assert summary["per_task"][0]["published_mean"] == pytest.approx((0.02 + 0.1 + 0.3) / 3)


def test_the_quickstarts_own_evaluation_is_read_by_the_report(tmp_path):
    # `evor quickstart` writes quickstart_eval.json (N = 1, 8, 32 at the default M): the report shows the
    # N curve from it and takes the default setting (N = 32) as the final score
    path = _fake_run(tmp_path, "cube-single-play-singletask-task2-v0", "evor", 0, None, [])
    results = [{"settings": {"num_candidates": n}, "success_rate": rate, "episodes": 30, "step": 1000,
                "policy_ms_per_env_step": 1.0, "single_action_ms": 1.0} for n, rate in ((1, 0.1), (8, 0.4), (32, 0.6))]
    (path / "quickstart_eval.json").write_text(json.dumps({"results": results}))
    summary = write_report([tmp_path], tmp_path / "report")
    row = summary["per_task"][0]
    assert row["final_mean"] == pytest.approx(0.6)
    assert "scaling_vs_candidates.png" in summary["figures"]


def test_a_run_extended_past_its_cell_result_has_no_final_score_until_evaluated_again(tmp_path):
    # `evor train --resume --steps` grows total_steps: the cell result of the shorter run is not its final
    path = _fake_run(tmp_path, "cube-single-play-singletask-task2-v0", "fql", 0, None, [])
    (path / "compare_eval.json").write_text(json.dumps({"success_rate": 0.5, "episodes": 50, "step": 500}))
    summary = write_report([tmp_path], tmp_path / "report")
    assert summary["per_task"][0].get("final_mean") is None
    assert "none yet" in (tmp_path / "report" / "report.md").read_text()
    (path / "compare_eval.json").write_text(json.dumps({"success_rate": 0.5, "episodes": 50, "step": 1000}))
    assert write_report([tmp_path], tmp_path / "report")["per_task"][0]["final_mean"] == pytest.approx(0.5)


def test_archived_records_give_the_same_report_without_checkpoints(runs, tmp_path):
    from evor.errors import EvorError
    from evor.rundir import archive_records

    root, _ = runs
    some_run = next(root.rglob("compare_eval.json")).parent
    (some_run / "checkpoints").mkdir()
    (some_run / "checkpoints" / "step_00001000.ckpt").write_bytes(b"weights")
    archived = archive_records([root], tmp_path / "archive")
    assert len(archived) == 12
    assert not list((tmp_path / "archive").rglob("checkpoints"))
    assert not list((tmp_path / "archive").rglob("*.tmp*"))  # atomic writes leave nothing behind
    original = write_report([root], tmp_path / "report-original")
    copy = write_report([tmp_path / "archive"], tmp_path / "report-archive")
    for table in ("per_task", "per_environment", "sweeps", "differences", "beside_papers"):
        assert copy[table] == original[table], table
    # Archiving again updates in place; two sources that would land on the same path are refused first.
    assert archive_records([root], tmp_path / "archive") == archived
    other = _fake_run(tmp_path / "other", "cube-single-play-singletask-task1-v0", "evor", 0, 0.1, [(1000, 0.1)], horizon=5)
    with pytest.raises(EvorError, match="would both archive to"):
        archive_records([root, tmp_path / "other"], tmp_path / "archive2")
    assert not (tmp_path / "archive2").exists()
    with pytest.raises(EvorError, match="may not overlap"):
        archive_records([other], other / "inside")


@pytest.mark.parametrize("name, text", [("compare_eval.json", "{not json"), ("compare_eval.json", '{"results": [{}, {}]}'),
                                        ("sweep.json", '{"results": 3}'), ("sweep.json", '{"task": "x"}'),
                                        ("diagnostics.json", "{not json"), ("diagnostics.json", "[1, 2]"),
                                        ("config.json", "{not json"), ("config.json", '{"agent_name": "evor"}')])
def test_a_damaged_record_file_is_named_not_a_traceback_and_no_report_is_half_written(runs, tmp_path, name, text):
    from evor.errors import EvorError

    run = next(p for p in tmp_path.rglob("config.json")).parent
    (run / name).write_text(text)
    with pytest.raises(EvorError, match=f"{name} (is unreadable|is not a (results|diagnostics) file|holds 2 results"
                                        "|lacks task, seed, total_steps)"):
        write_report([tmp_path], tmp_path / "report")
    assert not (tmp_path / "report").exists()
