import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "disable")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

import jax  # noqa: E402

jax.config.update("jax_platforms", "cpu")

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def benchmark_script():
    """Load a script under benchmarks/ as a module by its name (the folder is not a package)."""
    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


@pytest.fixture(scope="session")
def cube_single_data(tmp_path_factory):
    """A two-episode cube-single dataset, generated once for all the tests that only read it."""
    from evor.data.generate import generate_dataset  # after the environment above is set

    out = tmp_path_factory.mktemp("cube-single-data")
    generate_dataset("cube-single-play-v0", out_dir=out, episodes=2, workers=1, show_progress=False)
    return out
