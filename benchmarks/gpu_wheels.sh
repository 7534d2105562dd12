#!/usr/bin/env bash
# The simulator stack that benchmarks/gpu_check.py needs on an offline GPU machine beyond what its image
# has (jax, flax, optax, numpy, scipy, lxml, protobuf, absl-py, etils, tqdm, requests, h5py, matplotlib
# are there): ogbench, mujoco (+ mujoco-core, mujoco-studio, glfw, PyOpenGL, websockets), dm_control
# (+ dm-env, dm-tree, labmaze) and gymnasium (+ Farama-Notifications), at the versions this project pins
# or was tested with, for CPython 3.12 on x86-64 Linux.
#
# They are unpacked into .whl/site-PY (git-ignored) and pruned: dm_control's wheel is 56 MB, mostly the
# assets of its own task suites, which OGBench never imports (it uses dm_control.mjcf and viewer), and
# its tests. The folder is what a device call carries (`carry: [".whl/site-3.12"]`) and puts first on
# PYTHONPATH; the script prints its size, which must stay under the 64 MiB a call may carry.
#
#   bash benchmarks/gpu_wheels.sh          # for the GPU machine (Python 3.12)
#   PYTHON_VERSION=3.11 bash benchmarks/gpu_wheels.sh && PYTHONPATH=.whl/site-3.11 python -c "import ogbench"
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PY=${PYTHON_VERSION:-3.12}
SITE=.whl/site-$PY
mkdir -p .whl/cache
rm -rf "$SITE"
platforms=()
for n in 2_17 2_24 2_27 2_28 2_31 2_34 2_35; do platforms+=(--platform "manylinux_${n}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
python3 -m pip install -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
    "${platforms[@]}" --target "$SITE" --cache-dir .whl/cache \
    ogbench==1.2.2 mujoco==4.0.0 mujoco-core==4.0.0 mujoco-studio==4.0.0 websockets==17.4 glfw==2.11.0 \
    PyOpenGL==3.1.10 dm_control==1.0.50 dm-env==1.6 dm-tree==0.1.10 labmaze==1.0.6 gymnasium==1.4.0 \
    Farama-Notifications==0.0.6 2>&1 | grep -v "^WARNING: Location" || true
rm -rf "$SITE"/dm_control/{suite,locomotion,manipulation,blender,entities,composer/test_utils} "$SITE"/bin \
    "$SITE"/mujoco/studio "$SITE"/mujoco/doc "$SITE"/OpenGL/DLLS
find "$SITE" -name "*_test.py" -delete
find "$SITE" -name "__pycache__" -prune -exec rm -rf {} +
du -sh "$SITE"
# What travels is the compressed archive (the meshes of OGBench's robot compress well); the device command
# unpacks it: mkdir -p /tmp/site && tar -xzf .whl/site-3.12.tar.gz -C /tmp/site
tar -czf "$SITE.tar.gz" -C "$SITE" .
du -sh "$SITE.tar.gz"
