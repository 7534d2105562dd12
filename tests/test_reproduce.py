"""`evor diff`: a re-run is compared with its record value by value; any difference, and only a
difference in what the run learnt or scored, makes it "does not reproduce"."""

import json
import shutil
import subprocess
import sys

import pytest

from evor.config import config_json, make_config
from evor.errors import EvorError
from evor.reproduce import diff_runs

TASK = "cube-single-play-singletask-task1-v0"


def _write_run(path, seed=0, total_steps=1000, loss_at_1000=0.25, returns=None, seconds=12.0, settings=None):
    """A run directory as training and `evor bench` write it: config, metrics, a cell result, a sweep."""
    path.mkdir(parents=True)
    config = config_json(make_config("tiny", task=TASK, seed=seed, total_steps=total_steps))
    (path / "config.json").write_text(json.dumps(config))
    rows = [{"step": s, "actor_loss": 1.0 / s, "steps_per_second": 100.0 + s} for s in range(500, total_steps + 1, 500)]
    rows[1]["actor_loss"] = loss_at_1000
    rows[1]["eval_success_rate"] = 0.5
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    returns = returns or [-10.0 * i for i in range(50)]
    result = {"step": 1000, "episodes": 50, "success_rate": 0.5, "per_episode_return": returns,
              "per_episode_success": [i % 2 for i in range(50)], "seconds": seconds, "ms_per_env_step": seconds / 10,
              "workers": 2, "compute": {"backend": "cpu", "cpu_cores": int(seconds)}}
    (path / "compare_eval.json").write_text(json.dumps(result))
    sweep = [{**result, "settings": {"num_candidates": n, **(settings or {})}, "seed": 20000, "single_action_ms": seconds * n}
             for n in (1, 4)]
    (path / "sweep.json").write_text(json.dumps({"results": sweep}))
    (path / "versions.json").write_text(json.dumps({"versions": {"jax": "0.10.2", "evor_source": str(seconds)}}))
    return path


def test_an_identical_rerun_reproduces_whatever_its_timings(tmp_path):
    run = _write_run(tmp_path / "run", seconds=12.0)
    record = _write_run(tmp_path / "record", seconds=99.0)  # other timings, workers' machine and commit
    found = diff_runs(run, record)
    assert found.reproduces and not found.differences and not found.notes
    # 2 logged rows x (actor_loss, step) + eval_success_rate; the cell result and two sweep results
    assert found.compared["metrics"] == 5
    assert found.compared["compare_eval.json"] > 0 and found.compared["sweep.json"] > 0


def test_one_changed_loss_or_episode_is_named(tmp_path):
    record = _write_run(tmp_path / "record")
    found = diff_runs(_write_run(tmp_path / "loss", loss_at_1000=0.2500001), record)
    assert not found.reproduces
    assert found.differences == ["metrics at step 1000: actor_loss: 0.2500001 here, 0.25 in the record"]
    returns = [-10.0 * i for i in range(50)]
    returns[7] = -71.0
    found = diff_runs(_write_run(tmp_path / "episode", returns=returns), record)
    assert not found.reproduces
    assert "compare_eval.json: 49 of 50 episodes have the same return" in found.differences
    assert "sweep.json (num_candidates 4): 49 of 50 episodes have the same return" in found.differences
    assert not any("McNemar" in d for d in found.differences)  # the same episodes solved: no success gap
    run = _write_run(tmp_path / "success")
    result = json.loads((run / "compare_eval.json").read_text())
    result["per_episode_success"][0] = 1  # a failure in the record (it solved the odd episodes, 25 of 50)
    result["success_rate"] = 26 / 50
    (run / "compare_eval.json").write_text(json.dumps(result))
    found = diff_runs(run, record)
    assert "compare_eval.json: 49 of 50 episodes have the same success" in found.differences
    assert ("compare_eval.json: solved 26 of 50 here, 25 in the record; 1 solved here only, 0 in the record only "
            "(exact McNemar test on the same episodes: p = 1)") in found.differences


def test_a_setting_that_changes_learning_differs_but_the_schedule_is_a_note(tmp_path):
    record = _write_run(tmp_path / "record")
    found = diff_runs(_write_run(tmp_path / "seed1", seed=1), record)
    assert found.differences == ["config seed: 1 here, 0 in the record"]
    # A run continued past its record compares on the steps both logged, and says what only it has.
    longer = diff_runs(_write_run(tmp_path / "longer", total_steps=2000), record)
    assert longer.reproduces
    assert longer.only_one_side == ["metrics: nothing logged in the record at 2 steps (1500 ... 2000)"]
    assert any(note.startswith("config total_steps: 2000 here, 1000") for note in longer.notes)


def test_an_older_records_settings_read_with_the_fields_added_since(tmp_path):
    # A sweep written before `tilt` existed ran with what is now tilt="exact": the same evaluation.
    record = _write_run(tmp_path / "record")
    found = diff_runs(_write_run(tmp_path / "exact", settings={"tilt": "exact"}), record)
    assert found.reproduces and not found.only_one_side
    # Another tilt is another evaluation: nothing of the sweep is compared, both sides are listed.
    found = diff_runs(_write_run(tmp_path / "sampled", settings={"tilt": "sampled"}), record)
    assert found.reproduces and "sweep.json" not in found.compared
    assert len([x for x in found.only_one_side if x.startswith("sweep.json: missing from")]) == 4


def test_a_cell_trained_longer_compares_its_kept_earlier_score(tmp_path):
    # `evor bench` renames a cell's 1000-step result to compare_eval_step1000.json when the suite trains
    # it on to 2000: that kept score is compared with the record's final one, episode by episode.
    record = _write_run(tmp_path / "record")
    longer = _write_run(tmp_path / "longer", total_steps=2000)
    (longer / "compare_eval.json").rename(longer / "compare_eval_step1000.json")
    (longer / "compare_eval.json").write_text(json.dumps({"step": 2000, "episodes": 50, "success_rate": 1.0}))
    found = diff_runs(longer, record)
    assert found.reproduces and found.compared["compare_eval.json"] > 100  # 2 x 50 episodes and the summaries
    assert "compare_eval.json: missing from the record: step 2000" in found.only_one_side
    returns = [-10.0 * i for i in range(50)]
    returns[0] = -1.0
    (longer / "compare_eval_step1000.json").write_text(json.dumps({**json.loads(
        (record / "compare_eval.json").read_text()), "per_episode_return": returns}))
    assert "compare_eval.json (step 1000): 49 of 50 episodes have the same return" in diff_runs(longer, record).differences


def test_an_archived_continued_cell_keeps_its_earlier_score_and_reproduces_its_run(tmp_path):
    # `evor archive` copies the kept compare_eval_stepN.json with the record files (not checkpoints), so a
    # continued cell's record still holds its shorter score, and the run compares equal to its archive.
    from evor.rundir import archive_records

    run = _write_run(tmp_path / "run" / "seed0", total_steps=2000)
    (run / "compare_eval.json").rename(run / "compare_eval_step1000.json")
    (run / "compare_eval.json").write_text(json.dumps({"step": 2000, "episodes": 50, "success_rate": 1.0}))
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "step_00002000.ckpt").write_bytes(b"weights")
    archive_records([tmp_path / "run"], tmp_path / "archive")
    kept = sorted(p.name for p in (tmp_path / "archive" / "seed0").iterdir())
    assert kept == ["compare_eval.json", "compare_eval_step1000.json", "config.json", "metrics.jsonl", "sweep.json",
                    "versions.json"]
    found = diff_runs(run, tmp_path / "archive" / "seed0")
    assert found.reproduces and not found.only_one_side and found.compared["compare_eval.json"] > 100


def test_a_per_episode_list_an_older_record_lacks_is_listed_not_a_difference(tmp_path):
    # Evaluations now keep each episode's best and last step reward; a record written before that still
    # reproduces on everything both sides have, and the list only the run has is named.
    record = _write_run(tmp_path / "record")
    run = _write_run(tmp_path / "run")
    result = json.loads((run / "compare_eval.json").read_text())
    result["per_episode_best_step_reward"] = [-1.0] * 50
    (run / "compare_eval.json").write_text(json.dumps(result))
    found = diff_runs(run, record)
    assert found.reproduces
    assert "compare_eval.json: per_episode_best_step_reward missing from the record" in found.only_one_side
    # Where both sides kept it, a changed value is a difference like any other.
    (record / "compare_eval.json").write_text(json.dumps({**result, "per_episode_best_step_reward": [-2.0] * 50}))
    found = diff_runs(run, record)
    assert not found.reproduces
    assert any(d.startswith("compare_eval.json per_episode_best_step_reward:") for d in found.differences)
    # A summary value missing from one side is still a difference: only per-episode lists are excused.
    result["return_mean"] = -1.0
    (run / "compare_eval.json").write_text(json.dumps(result))
    assert not diff_runs(run, _write_run(tmp_path / "record2")).reproduces


@pytest.mark.parametrize("only_here, only_there", [(0, 6), (1, 1), (2, 9), (5, 0), (12, 20), (0, 0)])
def test_the_success_gap_is_an_exact_mcnemar_test(only_here, only_there):
    # Known answers: with b + c discordant episodes the two-sided exact p is 2 P(Binomial(b + c, 1/2) <=
    # min(b, c)), capped at 1 (SciPy's binomtest gives the same for p = 1/2, a symmetric null); 0 of 6 is
    # 2 / 64 by hand. Episodes solved on both sides or neither do not count.
    from scipy.stats import binomtest

    from evor.reproduce import _success_gap

    ours = [1] * only_here + [0] * only_there + [1] * 30 + [0] * 14
    theirs = [0] * only_here + [1] * only_there + [1] * 30 + [0] * 14
    n = only_here + only_there
    expected = binomtest(min(only_here, only_there), n, 0.5).pvalue if n else 1.0
    assert f"{only_here} solved here only, {only_there} in the record only" in _success_gap(ours, theirs)
    assert f"p = {expected:.2g})" in _success_gap(ours, theirs)
    if (only_here, only_there) == (0, 6):
        assert expected == pytest.approx(2 / 64)


def test_a_library_version_difference_is_a_note(tmp_path):
    record = _write_run(tmp_path / "record")
    run = _write_run(tmp_path / "run")
    (run / "versions.json").write_text(json.dumps({"versions": {"jax": "0.11.0"}}))
    found = diff_runs(run, record)
    assert found.reproduces and found.notes == ['versions.jax: "0.11.0" here, "0.10.2" in the record']


def test_the_machine_and_the_datas_generation_are_notes_but_not_their_timings(tmp_path):
    # What can explain a mismatch (another CPU, data generated on another CPU) is named; what differs
    # between any two generations (their seconds, workers, resumed episodes) is not.
    sidecar = {"seed": 0, "seconds": 10.0, "workers": 2, "resumed_episodes": 0, "machine": {"cpu": "AMD EPYC"}}
    versions = {"versions": {"jax": "0.10.2"}, "machine": {"cpu": "AMD EPYC", "cpu_simd": ["avx2", "avx512f"]},
                "data_sidecar": sidecar}
    record = _write_run(tmp_path / "record")
    (record / "versions.json").write_text(json.dumps(versions))
    run = _write_run(tmp_path / "run")
    (run / "versions.json").write_text(json.dumps({**versions, "machine": {"cpu": "Intel Xeon", "cpu_simd": ["avx2"]},
                                                   "data_sidecar": {**sidecar, "seconds": 99.0, "workers": 1,
                                                                    "machine": {"cpu": "Intel Xeon"}}}))
    assert diff_runs(run, record).notes == ['machine.cpu: "Intel Xeon" here, "AMD EPYC" in the record',
                                            'machine.cpu_simd: ["avx2"] here, ["avx2", "avx512f"] in the record',
                                            'data_sidecar.machine.cpu: "Intel Xeon" here, "AMD EPYC" in the record']


def test_damaged_files_are_named_errors(tmp_path):
    record = _write_run(tmp_path / "record")
    run = _write_run(tmp_path / "run")
    (run / "sweep.json").write_text("{not json")
    with pytest.raises(EvorError, match="sweep.json is unreadable"):
        diff_runs(run, record)
    with pytest.raises(EvorError, match="not a run directory"):
        diff_runs(tmp_path / "nothing", record)


def test_cli_exit_codes(tmp_path):
    record = _write_run(tmp_path / "record")
    same = _write_run(tmp_path / "same")
    other = _write_run(tmp_path / "other", loss_at_1000=0.3)

    def cli(*args):
        proc = subprocess.run([sys.executable, "-m", "evor.cli", "diff", *map(str, args)], capture_output=True,
                              text=True, timeout=120)
        return proc.returncode, proc.stdout, proc.stderr

    code, out, _ = cli(same, record)
    assert code == 0 and "reproduces" in out
    code, out, _ = cli(other, record)
    assert code == 1 and "does not reproduce" in out and "actor_loss: 0.3 here" in out
    shutil.rmtree(tmp_path / "same")
    code, _, err = cli(same, record)
    assert code == 2 and "not a run directory" in err and "Traceback" not in err
