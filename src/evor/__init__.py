"""evor: scalable offline RL with expressive value learning.

MuJoCo's OpenGL is switched off (MUJOCO_GL=disable) before anything imports ogbench/dm_control:
evor never renders, and with a GL backend named the import itself needs that backend's library. A
bare GPU machine has no libEGL, and `import mujoco` then fails deep inside PyOpenGL (seen on an H200
machine, 2026-11-30); osmesa crashes the import on headless machines. Every OGBench environment steps
the same without it. A user's explicit MUJOCO_GL (to render videos, say) is respected.
"""

import os

os.environ.setdefault("MUJOCO_GL", "disable")

import warnings  # noqa: E402

# OGBench's action spaces are float64 bounds cast to float32: harmless, and printed once per env.
warnings.filterwarnings("ignore", message=".*precision lowered by casting to float32.*")

from evor.errors import EvorError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["EvorError", "__version__"]
