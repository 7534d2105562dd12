"""evor: scalable offline RL with expressive value learning.

MuJoCo's OpenGL backend is chosen before anything imports ogbench/dm_control: osmesa crashes the
import on headless machines, EGL does not. A user's explicit MUJOCO_GL is respected.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import warnings  # noqa: E402

# OGBench's action spaces are float64 bounds cast to float32: harmless, and printed once per env.
warnings.filterwarnings("ignore", message=".*precision lowered by casting to float32.*")

from evor.errors import EvorError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["EvorError", "__version__"]
