#!/usr/bin/env bash
# One device call of the OGBench study (issue #18) on a lent GPU machine, inside its 10-minute limit:
# generate one environment's full dataset on all cores, then train and evaluate study cells there with
# benchmarks/gpu_cells.py (seeds vmapped in one process), one agent at a time, stopping each agent's
# training early enough that every remaining agent's kept checkpoints are still evaluated.
#
# Here, once: bash benchmarks/gpu_wheels.sh   (the simulator stack, .whl/site-3.12.tar.gz, git-ignored)
# Device call: carry [".whl/site-3.12.tar.gz"], command `bash benchmarks/gpu_study_call.sh`, timeout 600.
#
# What comes back under $OUT: cells.md (gpu_cells.py's table for each agent), runs.tar.gz (every run's
# records without checkpoints: config, versions, metrics, eval.json; also after a kill, so partial rows
# are not lost) and logs.tar.gz (device, dataset sidecar, each agent's figures and every process's log).
#
# Settings (environment): DATASET, TASK, CELLS (agent:steps:checkpoints evaluated[:checkpoint_every],
# run in order), SEEDS, BUDGET_S (seconds from the start by which everything must be written; keep the
# call's limit above it), EVAL_S_PER_CHECKPOINT (what one checkpoint's evaluation of all seeds is budgeted
# per seed), EPISODES per checkpoint, THROUGHPUT_S (>0: time the paper and cpu presets on the idle GPU
# while the dataset is generated; it slows the generation) and DATA_EPISODES. Timings of 2026-12-04: scene
# dataset 251 s on 16 workers, 50 scene episodes 16 s a checkpoint with 14 environment workers.
# A dry run of the same code paths on CPU (Python 3.12, as on the GPU machine):
#   PATH=/path/to/py3.12/bin:$PATH DATA_EPISODES=4 CELLS="evor:1000:1 qc5:1000:1:500" EPISODES=2 \
#     BUDGET_S=400 EVAL_S_PER_CHECKPOINT=40 OUT=/tmp/gpu-dry bash benchmarks/gpu_study_call.sh
set -u
started=$(date +%s)
DATASET=${DATASET:-scene-play-v0}
TASK=${TASK:-scene-play-singletask-task1-v0}
CELLS=${CELLS:-fql:150000:1 evor:150000:1}  # agent:steps:checkpoints evaluated[:checkpoint_every], in order
SEEDS=${SEEDS:-0,1,2}
BUDGET_S=${BUDGET_S:-565}
EVAL_S_PER_CHECKPOINT=${EVAL_S_PER_CHECKPOINT:-20}  # 50 scene episodes with 14 env workers: 16 s (2026-12-04)
EPISODES=${EPISODES:-50}
THROUGHPUT_S=${THROUGHPUT_S:-0}
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

# Optionally time the presets on the GPU, idle while the dataset is generated (rows print as they finish).
[ "$THROUGHPUT_S" -gt 0 ] && nice -n 5 timeout "$THROUGHPUT_S" python3 benchmarks/throughput.py --agents evor,fql --presets paper,cpu \
    > "$WORK/logs/throughput.log" 2>&1 &
echo "[$(date +%s)] generating $DATASET on $cores workers"
python3 -m evor.cli data generate "$DATASET" --workers "$cores" ${DATA_EPISODES:+--episodes $DATA_EPISODES} --quiet > "$WORK/logs/data.log" 2>&1 \
    || { echo "data generation failed"; tail -5 "$WORK/logs/data.log"; }
cp "$WORK/data/$DATASET.json" "$WORK/logs/" 2>/dev/null
echo "dataset done after $(( $(date +%s) - started )) s"
wait  # the throughput timing, if still running

# One agent's process at a time: processes sharing the GPU slow each other (EVOR 200-360 updates/s per seed
# beside two others, 5,700 alone: docs/speed.md). Each agent trains for its share of what is left after
# every remaining agent's evaluation estimate, then evaluates its last checkpoints with all cores.
set -- $CELLS
workers=$(( cores > 3 ? cores - 2 : 1 ))
seed_count=$(echo "$SEEDS" | tr ',' '\n' | wc -l)
while [ $# -gt 0 ]; do
    IFS=: read -r agent steps last every <<< "$1"; shift
    reserve=0
    for cell in "$agent:$steps:$last" "$@"; do
        IFS=: read -r _ _ n _ <<< "$cell"; reserve=$(( reserve + n * seed_count * EVAL_S_PER_CHECKPOINT ))
    done
    train_s=$(( ($(left) - reserve - 15) / ($# + 1) ))
    if [ "$train_s" -lt 30 ]; then echo "$agent: skipped, $(left) s left"; continue; fi
    echo "[$(( $(date +%s) - started ))s] $agent towards $steps updates, at most $train_s s of training"
    timeout $(( $(left) - 10 )) python3 benchmarks/gpu_cells.py --task "$TASK" --agents "$agent" --seeds "$SEEDS" \
        --steps "$steps" --last "$last" ${every:+--checkpoint-every $every} --train-seconds "$train_s" \
        --eval-workers "$workers" --episodes "$EPISODES" --out "$WORK/cells-$agent" > "$WORK/logs/cells-$agent.log" 2>&1
    echo "$agent exit $?"
    cat "$WORK/cells-$agent/gpu_cells.md" >> "$OUT/cells.md" 2>/dev/null
    cp "$WORK/cells-$agent/gpu_cells.json" "$WORK/logs/cells-$agent.json" 2>/dev/null
    cp "$WORK/cells-$agent"/*.log "$WORK/logs/" 2>/dev/null
done

# `evor archive` owns what a run's records are (no checkpoints, no locks); it reads runs cut off mid-way too.
python3 -m evor.cli archive "$WORK"/cells-*/runs --out "$WORK/records" > "$WORK/logs/archive.log" 2>&1
tar -czf "$OUT/runs.tar.gz" -C "$WORK" records
tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs
cat "$OUT/cells.md" 2>/dev/null
echo "done after $(( $(date +%s) - started )) s"
