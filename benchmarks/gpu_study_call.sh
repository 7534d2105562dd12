#!/usr/bin/env bash
# One device call of the OGBench study (issue #18) on a lent GPU machine, inside its 10-minute limit:
# generate one environment's full dataset on all cores, then train and evaluate study cells there with
# benchmarks/gpu_cells.py (seeds vmapped, one process per agent), stopping training early enough that every
# kept checkpoint is still evaluated. While the dataset is generated (CPU only) the idle GPU times the
# paper and cpu presets (benchmarks/throughput.py), so the page can say what a `paper` run would cost.
#
# Here, once: bash benchmarks/gpu_wheels.sh   (the simulator stack, .whl/site-3.12.tar.gz, git-ignored)
# Device call: carry [".whl/site-3.12.tar.gz"], command `bash benchmarks/gpu_study_call.sh`, timeout 600.
#
# What comes back under $OUT (at most 8 files): LABEL.md / LABEL.json per group of cells (gpu_cells.py's
# table and figures), runs.tar.gz (every run's records without checkpoints: config, versions, metrics,
# eval.json; also after a kill, so partial rows are not lost) and logs.tar.gz (device, dataset sidecar,
# throughput and every process's log).
#
# Settings (environment): DATASET, TASK; LONG_AGENTS / LONG_STEPS (the 150k cells), SHORT_AGENTS /
# SHORT_STEPS / SHORT_CHECKPOINT_EVERY (30k cells, checkpoints where the cpu protocol evaluates), SEEDS,
# BUDGET_S (seconds from the start by which everything must be written; leave the call's limit above it)
# EVAL_RESERVE_S (seconds kept for evaluating the last three checkpoints of every seed), EPISODES per
# checkpoint, THROUGHPUT_S (0: no timing) and DATA_EPISODES. A dry run of the same code paths on CPU:
#   PATH=/path/to/py3.12/bin:$PATH DATA_EPISODES=4 LONG_STEPS=1000 SHORT_STEPS=1000 SHORT_CHECKPOINT_EVERY=500 \
#     EPISODES=2 THROUGHPUT_S=0 BUDGET_S=400 EVAL_RESERVE_S=250 OUT=/tmp/gpu-dry bash benchmarks/gpu_study_call.sh
set -u
started=$(date +%s)
DATASET=${DATASET:-scene-play-v0}
TASK=${TASK:-scene-play-singletask-task1-v0}
LONG_AGENTS=${LONG_AGENTS:-fql,evor}
LONG_STEPS=${LONG_STEPS:-150000}
SHORT_AGENTS=${SHORT_AGENTS:-qc5}
SHORT_STEPS=${SHORT_STEPS:-30000}
SHORT_CHECKPOINT_EVERY=${SHORT_CHECKPOINT_EVERY:-10000}
SEEDS=${SEEDS:-0,1,2}
BUDGET_S=${BUDGET_S:-565}
EVAL_RESERVE_S=${EVAL_RESERVE_S:-170}
EPISODES=${EPISODES:-50}
THROUGHPUT_S=${THROUGHPUT_S:-150}
DATA_EPISODES=${DATA_EPISODES:-}  # empty: the upstream recipe (a dry run on CPU sets a few)
OUT=${OUT:-/tmp/gpu-out}
WORK=/tmp/gpu-work
mkdir -p "$OUT" "$WORK/logs" /tmp/site
left() { echo $((BUDGET_S - ($(date +%s) - started))); }

tar -xzf .whl/site-3.12.tar.gz -C /tmp/site || { echo "no simulator stack: run benchmarks/gpu_wheels.sh here first"; exit 2; }
export PYTHONPATH=/tmp/site:$PWD/src:$PWD/benchmarks MUJOCO_GL=disable OGBENCH_DATA_DIR=$WORK/data \
    PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
cores=$(nproc)
{ nvidia-smi -L; nproc; python3 -c "import jax, sys; print(sys.version.split()[0], jax.__version__, jax.devices())"; } \
    > "$WORK/logs/device.txt" 2>&1
cat "$WORK/logs/device.txt"

# The GPU is idle while the dataset is generated: time the presets there (rows are printed as they finish).
[ "$THROUGHPUT_S" -gt 0 ] && nice -n 5 timeout "$THROUGHPUT_S" python3 benchmarks/throughput.py --agents evor,fql --presets paper,cpu \
    > "$WORK/logs/throughput.log" 2>&1 &
echo "[$(date +%s)] generating $DATASET on $cores workers"
python3 -m evor.cli data generate "$DATASET" --workers "$cores" ${DATA_EPISODES:+--episodes $DATA_EPISODES} --quiet > "$WORK/logs/data.log" 2>&1 \
    || { echo "data generation failed"; tail -5 "$WORK/logs/data.log"; }
cp "$WORK/data/$DATASET.json" "$WORK/logs/" 2>/dev/null
echo "dataset done after $(( $(date +%s) - started )) s"
wait  # the throughput timing, if still running

train_s=$(( $(left) - EVAL_RESERVE_S ))
echo "training for at most $train_s s, $(left) s left in the budget"
workers=$(( cores / 4 > 0 ? cores / 4 : 1 ))
run_cells() {  # LABEL AGENTS STEPS [extra gpu_cells args]
    local label=$1 agents=$2 steps=$3; shift 3
    timeout $(( $(left) - 10 )) python3 benchmarks/gpu_cells.py --task "$TASK" --agents "$agents" --seeds "$SEEDS" \
        --steps "$steps" --train-seconds "$train_s" --eval-workers "$workers" --episodes "$EPISODES" --out "$WORK/$label" "$@" \
        > "$WORK/logs/$label.log" 2>&1
    echo "$label exit $?"
}
[ -n "$LONG_AGENTS" ] && run_cells long "$LONG_AGENTS" "$LONG_STEPS" &
[ -n "$SHORT_AGENTS" ] && run_cells short "$SHORT_AGENTS" "$SHORT_STEPS" --checkpoint-every "$SHORT_CHECKPOINT_EVERY" &
while [ -n "$(jobs -r)" ]; do sleep 30; tail -qn1 "$WORK"/logs/long.log "$WORK"/logs/short.log 2>/dev/null; done
wait

for label in long short; do
    cp "$WORK/$label/gpu_cells.md" "$OUT/$label.md" 2>/dev/null
    cp "$WORK/$label/gpu_cells.json" "$OUT/$label.json" 2>/dev/null
    cp "$WORK/$label"/*.log "$WORK/logs/" 2>/dev/null
done
(cd "$WORK" && tar --exclude=checkpoints -czf "$OUT/runs.tar.gz" long/runs short/runs 2>/dev/null)
tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs
cat "$OUT"/*.md 2>/dev/null
echo "done after $(( $(date +%s) - started )) s"
