"""Every CLI command answers bad arguments with one paragraph and exit code 2, never a traceback."""

import subprocess
import sys

import pytest


def run_cli(*args, timeout=120):
    proc = subprocess.run([sys.executable, "-m", "evor.cli", *args], capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("args, message", [
    (["data", "generate", "cube-nonuple-play-v0"], "Unknown dataset"),
    (["data", "generate", "cube-single-play-v0", "--episodes", "0"], "--episodes must be at least 1"),
    (["data", "generate", "cube-single-play-v0", "--workers", "0"], "--workers must be at least 1"),
    (["data", "import", "/nonexistent/file.npz"], "file not found"),
    (["data", "stats", "cube-single-play-singletask-task1-v0", "--dir", "/nonexistent"], "evor data generate"),
    (["train", "--task", "cube-single-play-singletask-task1-v0", "--preset", "nope"], "Unknown preset"),
    (["train", "--agent", "ppo"], "Unknown agent"),
    (["train", "--set", "agent.tau=3"], "Unknown agent config field"),
    (["train", "--set", "nokey"], "KEY=VALUE"),
    (["eval", "/nonexistent/run"], "not a run directory"),
])
def test_bad_arguments_give_a_message_not_a_traceback(args, message):
    code, _, err = run_cli(*args)
    assert code == 2, err
    assert message in err
    assert "Traceback" not in err


def test_generate_to_unwritable_directory_is_reported(tmp_path):
    # A path below a regular file cannot be created, even by root.
    (tmp_path / "afile").write_text("x")
    code, _, err = run_cli("data", "generate", "pointmaze-medium-navigate-v0", "--episodes", "1",
                           "--out", str(tmp_path / "afile" / "sub"))
    assert code == 2 and "Cannot create output directory" in err and "Traceback" not in err


def test_generate_list_and_import_round_trip(tmp_path):
    code, out, err = run_cli("data", "generate", "pointmaze-medium-navigate-v0", "--episodes", "1", "--out",
                             str(tmp_path), "--quiet")
    assert code == 0, err
    code, out, _ = run_cli("data", "list", "--dir", str(tmp_path))
    assert code == 0 and "pointmaze-medium-navigate-v0" in out and "train_episodes=1" in out
    code, out, err = run_cli("data", "import", str(tmp_path / "pointmaze-medium-navigate-v0.npz"))
    # raw OGBench files carry no rewards (they are relabelled per task), so import names the key
    assert code == 2 and "key 'rewards' is missing" in err
