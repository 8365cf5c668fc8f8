#!/usr/bin/env bash
# The measurement queue after a new base model, in priority order: pipeline seeds, idle benchmarks, ablations.
# One heavy job at a time (2 cores). Every step skips what is already done: rerun the script after an interruption.
set -u
cd "$(dirname "$0")/.."
PY=.venv/bin/python
INIT=runs/shapeworld/sft/model
log() { echo "[$(date +%H:%M:%S)] $*"; }
log pipeline;   [ -f runs/shapeworld/report.html ] || .venv/bin/vidtune run
log sft_seeds;  $PY benchmarks/ablations.py sft --only sft --seeds 1 2
log pipe_seeds; $PY benchmarks/pipeline_time.py --runs runs/shapeworld runs/shapeworld_seed1 runs/shapeworld_seed2
log makespan;   $PY benchmarks/reward_makespan.py
log dpo_memory; $PY benchmarks/dpo_memory.py --pairs 32 --repeats 2
log foundation; $PY benchmarks/foundation.py
log grpo_core;  $PY benchmarks/ablations.py grpo --init $INIT --seeds 0 1 2 \
                    --only grpo grpo_vipo grpo_bpgo grpo_noisy grpo_noisy_bpgo
log sft_plain;  $PY benchmarks/ablations.py sft --only sft_plain --seeds 0
log grpo_rest;  $PY benchmarks/ablations.py grpo --init $INIT --seeds 0 \
                    --only grpo_self_paced grpo_joint_fixed grpo_full_stack grpo_bpgo_ras_only grpo_bpgo_crt_only
log sft_phys;   $PY benchmarks/ablations.py sft --only sft_physics --seeds 0
log sft_plain2; $PY benchmarks/ablations.py sft --only sft_plain --seeds 1 2
log grpo_rest2; $PY benchmarks/ablations.py grpo --init $INIT --seeds 1 2 \
                    --only grpo_self_paced grpo_joint_fixed grpo_full_stack
log done
