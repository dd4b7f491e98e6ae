#!/usr/bin/env bash
# GPU check of the paths the CPU test suite reaches only through doubles: DeepSpeed ZeRO-3 with vLLM colocated, with a
# vLLM server, and with transformers generation, each 3 steps of a tiny model. One script, about 5-10 minutes on a
# rented box with 1 to 3 GPUs (install included when the wheels are cached; the vLLM wheel itself takes longer).
#
# NEVER RUN on a GPU yet. Written on a CPU-only machine: `bash -n`, the pass criteria (benchmarks/gpu_checks.py,
# tested on good and broken logs in tests/benchmarks/test_gpu_checks.py), one single-process CPU run of the same
# training arguments checked by them, and a dry run of the orchestration for 1-3 GPUs with a stand-in interpreter
# (docs/scale.md). Expect small fixes on the first GPU run.
#
# Install (INSTALL=auto, the default, runs it when vllm or deepspeed is missing; INSTALL=0 never does):
#   pip install wheel "setuptools>=68" -e ".[vllm]" && DS_BUILD_OPS=0 pip install --no-build-isolation -e ".[vllm,deepspeed]"
# (DeepSpeed's setup imports torch, hence no build isolation and torch first; without isolation both builds use the
# environment's setuptools, hence setuptools >= 68, what pyproject's editable build needs; DS_BUILD_OPS=0 compiles
# no op ahead, and these runs use torch's AdamW, so none is built at run time either). It resolves to vllm 0.31.0, transformers
# 5.17.0 and trl 1.16.0: pyproject accepts transformers >= 5.17, and vLLM 0.31 needs transformers < 5.18. No downloads after that: the model and data are built locally, and the HF and
# vLLM offline switches are set.
#
# Steps and cells:
#   1. model        a tiny random Llama (prefix_rft.tasks: build_tokenizer, build_model(tok, MODEL_SIZE)), bf16,
#                   save_pretrained to a temp dir. MODEL_SIZE defaults to "1m" (head dim 32): "test" has head dim 16,
#                   which vLLM's FlashAttention backend does not list among its head sizes.
#   2. data         64 rows of the embedded arithmetic task as JSONL: `prompt` (chat messages), `demos`, `answer`.
#   3. colocate     ZeRO-3, min(GPUs, 2) ranks, vLLM inside each rank, 2 micro-batches per step.
#   4. server       ZeRO-3, TRL's vLLM server setup (`vllm serve` + NCCL weight-transfer engine, as `trl vllm-serve`
#                   builds it in trl 1.16), 2 trainer ranks on GPUs 0,1; the server on GPU 2, or with 2 GPUs on GPU 1
#                   beside trainer rank 1 (the weight-transfer group is trainer rank 0 + the server, so they must be
#                   on different devices). Not covered on 1 GPU.
#   5. transformers ZeRO-3, no vLLM, per_device_train_batch_size 4, num_generations 8, num_hybrid 1: on 2 ranks the
#                   one group is split 4 + 4, so the only hybrid is on rank 1 and rank 0 must join its generate call
#                   with a stand-in row (the layout that used to hang); on 1 GPU, 1 rank and 2 micro-batches.
# A cell PASSES when every rank exits 0 within RUN_TIMEOUT (else "FAIL (hang)") and benchmarks/gpu_checks.py accepts
# its logs: max_steps reached; `prefix/hybrid_rows` > 0; `prefix/token_fraction` > 0 and a finite `grad_norm` on every
# step; every logged hybrid completion (TRL's completions table) starts with its demo prefix; with vLLM, TRL's
# `sampling/sampling_logp_difference/mean` < 0.1 nats on every step (a continuation sampled without its prefix, or
# stale weights on the engine, push it far above); on the 2-rank transformers cell, stand-in calls were logged or
# every step made one shared generate call (`prefix/generate_calls` 1).
# The summary prints each cell's result and which cells this box could not cover.
#
# Usage:  bash benchmarks/gpu_check.sh            (from the repository root; WORK=/path keeps files there)
#         RUN_TIMEOUT=600 MODEL_SIZE=3m ONLY="colocate server" bash benchmarks/gpu_check.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-python}"
ACCEL_CONFIG="${ACCEL_CONFIG:-$ROOT/configs/accelerate/zero3_2gpu.yaml}"
WORK="${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/prefix_rft_gpu_check.XXXXXX")}"
MODEL_SIZE="${MODEL_SIZE:-1m}"
MAX_STEPS="${MAX_STEPS:-3}"
RUN_TIMEOUT="${RUN_TIMEOUT:-300}"        # seconds per training run, vLLM start-up included
SERVER_TIMEOUT="${SERVER_TIMEOUT:-300}"  # seconds for the vLLM server to answer /health
SERVER_PORT="${SERVER_PORT:-8011}"
GROUP_PORT="${GROUP_PORT:-51217}"        # NCCL weight-transfer group of server mode
ONLY="${ONLY:-colocate server transformers}"
INSTALL="${INSTALL:-auto}"              # auto: pip install the extras if vllm or deepspeed is missing; 1 always; 0 never

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
export TOKENIZERS_PARALLELISM=false
MODEL="$WORK/model"
DATA="$WORK/train.jsonl"
LOGS="$WORK/logs"
mkdir -p "$LOGS"
declare -A RESULT
SERVER_PID=""

cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -- "-$SERVER_PID" 2>/dev/null || kill "$SERVER_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT

echo "== work dir: $WORK"
if [[ "$INSTALL" == auto ]] && ! "$PY" -c 'import vllm, deepspeed' >/dev/null 2>&1; then
  INSTALL=1
fi
if [[ "$INSTALL" == 1 ]]; then
  echo "== install: the vllm extra (it brings vLLM's torch), then the deepspeed extra without build isolation"
  "$PY" -m pip install -q wheel "setuptools>=68" -e "$ROOT[vllm]"
  DS_BUILD_OPS=0 "$PY" -m pip install -q --no-build-isolation -e "$ROOT[vllm,deepspeed]"
fi
echo "== preflight"
"$PY" - <<'PY' | tee "$LOGS/preflight.txt"
import importlib
for name in ("torch", "transformers", "trl", "accelerate", "deepspeed", "vllm", "prefix_rft"):
    try:
        module = importlib.import_module(name)
        print(f"{name:13s} {getattr(module, '__version__', '?')}")
    except Exception as error:  # noqa: BLE001 - reported, the runs that need it then fail
        print(f"{name:13s} NOT IMPORTABLE: {error!r}"[:300])
import torch
print(f"cuda devices  {torch.cuda.device_count()}")
PY
NGPU="$("$PY" -c 'import torch; print(torch.cuda.device_count())')"
if (( NGPU < 1 )); then
  echo "FAIL: no CUDA device" >&2
  exit 1
fi
"$PY" -c 'import deepspeed' >/dev/null 2>&1 || { echo "FAIL: deepspeed not importable: pip install -e \".[deepspeed]\"" >&2; exit 1; }
VLLM_OK=1
"$PY" -c 'import vllm' >/dev/null 2>&1 || VLLM_OK=0
RANKS=$(( NGPU >= 2 ? 2 : 1 ))
if (( RANKS == 2 )); then TRAIN_GPUS="0,1"; else TRAIN_GPUS="0"; fi
declare -A NOT_COVERED

echo "== 1. tiny model ($MODEL_SIZE) -> $MODEL"
"$PY" - "$MODEL" "$MODEL_SIZE" <<'PY'
import sys

import torch

from prefix_rft.tasks import build_model, build_tokenizer

out, size = sys.argv[1], sys.argv[2]
tokenizer = build_tokenizer()
model = build_model(tokenizer, size).to(torch.bfloat16)  # bf16 config dtype: what vLLM and DeepSpeed bf16 expect
model.save_pretrained(out)
tokenizer.save_pretrained(out)
print(f"saved {sum(p.numel() for p in model.parameters())} parameters, vocab {len(tokenizer)}")
PY

echo "== 2. training set -> $DATA"
"$PY" - "$DATA" <<'PY'
import json
import sys

from prefix_rft.tasks import make_rows

rows = make_rows("train", 64, seed=0)  # {"prompt": [{"role": "user", ...}], "demos": [str], "answer": str}
with open(sys.argv[1], "w") as f:
    for row in rows:
        f.write(json.dumps(row) + "\n")
print(f"wrote {len(rows)} rows; first: {rows[0]}")
PY

# Runs `prefix-rft train` and records each rank's exit code in $GPU_CHECK_MARKERS/rank<RANK>.exit.
cat > "$WORK/train_with_marker.py" <<'PY'
import os
import sys

from prefix_rft.cli import main

code = 1
try:
    code = int(main(["train", *sys.argv[1:]]) or 0)
except SystemExit as error:
    code = error.code if isinstance(error.code, int) else (0 if error.code is None else 1)
    raise
finally:
    marker = os.path.join(os.environ["GPU_CHECK_MARKERS"], f"rank{os.environ.get('RANK', '0')}.exit")
    with open(marker, "w") as f:
        f.write(f"{code}\n")
sys.exit(code)
PY

COMMON=(
  --model_name_or_path "$MODEL" --dataset_name "$DATA" --dataset_format prefix_rft --reward task
  --max_steps "$MAX_STEPS" --num_generations 8 --num_hybrid 1 --per_device_train_batch_size 4
  --max_completion_length 128 --max_prompt_length 128 --prefix_ratio_decay_steps "$MAX_STEPS"
  --learning_rate 1e-4 --bf16 true --gradient_checkpointing true --seed 0
  --logging_steps 1 --save_strategy steps --save_steps "$MAX_STEPS" --report_to none
  --log_completions true --num_completions_to_print 0 --disable_tqdm true
)

# run_train NAME GPUS NPROC PORT CHECK_FLAGS ARGS...: one `accelerate launch` under `timeout`, then
# benchmarks/gpu_checks.py with CHECK_FLAGS ("--vllm", "--stand-in"); sets RESULT[NAME].
run_train() {
  local name="$1" gpus="$2" nproc="$3" port="$4" check_flags="$5"
  shift 5
  local out="$WORK/runs/$name" markers="$WORK/markers/$name" log="$LOGS/$name.log" rc=0
  rm -rf "$out" "$markers"
  mkdir -p "$out" "$markers"
  echo "== $name: GPUs $gpus, $nproc rank(s), log $log"
  CUDA_VISIBLE_DEVICES="$gpus" GPU_CHECK_MARKERS="$markers" timeout --kill-after=30 "$RUN_TIMEOUT" \
    "$PY" -m accelerate.commands.launch --config_file "$ACCEL_CONFIG" --num_processes "$nproc" \
    --main_process_port "$port" "$WORK/train_with_marker.py" \
    "${COMMON[@]}" --output_dir "$out" "$@" >"$log" 2>&1 || rc=$?
  if (( rc == 124 || rc == 137 )); then
    RESULT[$name]="FAIL (hang: killed after ${RUN_TIMEOUT}s)"
    return
  fi
  local rank code
  for (( rank = 0; rank < nproc; rank++ )); do
    if [[ ! -f "$markers/rank$rank.exit" ]]; then
      RESULT[$name]="FAIL (rank $rank wrote no exit code; launcher exit $rc)"
      return
    fi
    code="$(cat "$markers/rank$rank.exit")"
    if [[ "$code" != "0" ]]; then
      RESULT[$name]="FAIL (rank $rank exit $code; see $log)"
      return
    fi
  done
  if (( rc != 0 )); then
    RESULT[$name]="FAIL (launcher exit $rc after every rank returned 0)"
    return
  fi
  # shellcheck disable=SC2086  # check_flags is a list of flags
  if "$PY" "$ROOT/benchmarks/gpu_checks.py" --run-dir "$out" --data "$DATA" --max-steps "$MAX_STEPS" $check_flags \
    | tee -a "$log"; then
    RESULT[$name]="PASS ($nproc rank(s))"
  else
    RESULT[$name]="FAIL (see the FAIL lines above and $log)"
  fi
}

wants() { [[ " $ONLY " == *" $1 "* ]]; }

if wants colocate; then
  if (( VLLM_OK )); then
    run_train colocate "$TRAIN_GPUS" "$RANKS" 29511 --vllm --gradient_accumulation_steps 2 \
      --use_vllm true --vllm_mode colocate --vllm_gpu_memory_utilization 0.3 --vllm_max_model_length 256
  else
    RESULT[colocate]="FAIL (vllm not importable; see $LOGS/preflight.txt)"
  fi
fi

if wants server; then
  if (( NGPU < 2 )); then
    NOT_COVERED[server]="needs 2 GPUs (trainer rank 0 and the vLLM server on different devices)"
  elif (( ! VLLM_OK )); then
    RESULT[server]="FAIL (vllm not importable; see $LOGS/preflight.txt)"
  else
    # NCCL needs the trainer's rank 0 and the vLLM worker on different GPUs.
    server_gpu=$(( NGPU >= 3 ? 2 : 1 ))
    # The command `trl vllm-serve` builds in trl 1.16 (trl/scripts/vllm_serve.py build_command; that CLI is
    # deprecated and now only execs it): dev mode for the weight-transfer endpoints, the NCCL weight-transfer engine
    # (VLLMClient.init_communicator refuses a server without one), processed logprobs for importance sampling.
    scale_out=()
    if "$PY" -c 'from trl.import_utils import is_vllm_available as v; raise SystemExit(not v(min_version="0.30.0"))'
    then
      scale_out=(--enable-scale-out)
    fi
    echo "== server: vLLM on GPU $server_gpu, port $SERVER_PORT, log $LOGS/vllm_server.log"
    CUDA_VISIBLE_DEVICES="$server_gpu" VLLM_SERVER_DEV_MODE=1 setsid \
      "$PY" -m vllm.entrypoints.cli.main serve "$MODEL" --host 127.0.0.1 --port "$SERVER_PORT" \
      --tensor-parallel-size 1 --data-parallel-size 1 --gpu-memory-utilization 0.3 --dtype auto \
      --kv-cache-dtype auto --model-impl vllm --max-model-len 256 --enforce-eager ${scale_out[@]+"${scale_out[@]}"} \
      --weight-transfer-config '{"backend": "nccl"}' --logprobs-mode processed_logprobs --max-logprobs -1 \
      >"$LOGS/vllm_server.log" 2>&1 &
    SERVER_PID=$!
    up=0
    for (( waited = 0; waited < SERVER_TIMEOUT; waited += 5 )); do
      if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        break
      fi
      if "$PY" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$SERVER_PORT/health', timeout=5)" \
        2>/dev/null; then
        up=1
        break
      fi
      sleep 5
    done
    if (( up )); then
      run_train server 0,1 2 29512 --vllm --gradient_accumulation_steps 2 \
        --use_vllm true --vllm_mode server --vllm_server_base_url "http://127.0.0.1:$SERVER_PORT" \
        --vllm_group_port "$GROUP_PORT"
    else
      RESULT[server]="FAIL (vLLM server not healthy within ${SERVER_TIMEOUT}s; see $LOGS/vllm_server.log)"
    fi
    cleanup
    SERVER_PID=""
  fi
fi

if wants transformers; then
  if (( RANKS == 2 )); then
    run_train transformers 0,1 2 29513 --stand-in --gradient_accumulation_steps 1 --use_vllm false
  else
    NOT_COVERED[transformers_stand_in]="the 2-rank layout where rank 0 joins with a stand-in row needs 2 GPUs"
    run_train transformers 0 1 29513 "" --gradient_accumulation_steps 2 --use_vllm false
  fi
fi

echo
echo "== results (logs and runs in $WORK)"
printf '%-14s %s\n' run result
status=0
for name in colocate server transformers; do
  wants "$name" || continue
  if [[ -n "${NOT_COVERED[$name]:-}" ]]; then
    printf '%-14s %s\n' "$name" "not covered: ${NOT_COVERED[$name]}"
    continue
  fi
  printf '%-14s %s\n' "$name" "${RESULT[$name]:-FAIL (not run)}"
  [[ "${RESULT[$name]:-}" == PASS* ]] || status=1
done
if [[ -n "${NOT_COVERED[transformers_stand_in]:-}" ]]; then
  printf '%-14s %s\n' "" "not covered: ${NOT_COVERED[transformers_stand_in]}"
fi
echo "== covered on $NGPU GPU(s): the cells above marked PASS or FAIL; 'not covered' ones need a bigger box"
exit "$status"
