#!/usr/bin/env bash
# GPU check of the multi-GPU paths that the CPU test suite cannot reach: DeepSpeed ZeRO-3 with vLLM colocated, with a
# vLLM server, and with transformers generation.
#
# NEVER RUN. It was written on a CPU-only machine (no GPU, no vLLM, no DeepSpeed), where only `bash -n`, shellcheck
# and its Python pieces were checked: steps 1-2, and the rank wrapper + metric check around one single-process CPU
# run (use_cpu, fp32, no accelerate/DeepSpeed/vLLM) with the same training arguments. None of the GPU launches, the
# vLLM server or the ZeRO-3 paths has run. Expect small fixes on the first GPU run.
#
# Needs: 2 CUDA GPUs (3 for a 2-rank trainer in server mode), this project installed with `deepspeed` and `vllm` in
# the same environment. No downloads: the model and data are built locally, and the HF/vLLM offline switches are set.
# Known install conflict: vllm 0.31.0 (the newest the `vllm` extra allows) requires transformers<5.18, and this
# project transformers>=5.20; the preflight prints the versions, and vLLM runs fail with the import error if any.
#
# Steps, and what each checks:
#   1. model        a tiny random Llama (prefix_rft.tasks: build_tokenizer, build_model(tok, MODEL_SIZE)), bf16,
#                   save_pretrained to a temp dir. MODEL_SIZE defaults to "1m" (head dim 32): "test" has head dim 16,
#                   which vLLM's FlashAttention backend does not list among its head sizes.
#   2. data         64 rows of the embedded arithmetic task as JSONL: `prompt` (chat messages), `demos`, `answer`;
#                   loaded by `prefix-rft train` as a local .jsonl (dataset_format prefix_rft, reward task).
#   3. colocate     ZeRO-3, 2 ranks, vLLM inside each rank (vllm_mode colocate), 2 micro-batches per step.
#   4. server       ZeRO-3, TRL's vLLM server setup (`vllm serve` + NCCL weight-transfer engine, as `trl vllm-serve`
#                   builds it in trl 1.16) on its own GPU; 2 trainer ranks with >= 3 GPUs, else 1 rank on GPU 0.
#   5. transformers ZeRO-3, 2 ranks, no vLLM, per_device_train_batch_size 4, num_generations 8, num_hybrid 1: the one
#                   group is split 4 + 4, so the only hybrid (last row of the group) is on rank 1 and the ranks make
#                   different numbers of generate calls (the layout that used to hang).
# Each run is PASS when: the launcher exits 0 within RUN_TIMEOUT (a timeout is "FAIL (hang)"), every rank wrote exit
# code 0 (a marker written by the wrapper below), and the last checkpoint's trainer_state.json (or the log) has
# `prefix/hybrid_rows` > 0 and reached max_steps.
#
# Usage:  bash benchmarks/gpu_check.sh            (from the repository root; WORK=/path keeps files there)
#         RUN_TIMEOUT=1200 MODEL_SIZE=3m ONLY="colocate server" bash benchmarks/gpu_check.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-python}"
ACCEL_CONFIG="${ACCEL_CONFIG:-$ROOT/configs/accelerate/zero3_2gpu.yaml}"
WORK="${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/prefix_rft_gpu_check.XXXXXX")}"
MODEL_SIZE="${MODEL_SIZE:-1m}"
MAX_STEPS="${MAX_STEPS:-3}"
RUN_TIMEOUT="${RUN_TIMEOUT:-900}"        # seconds per training run, vLLM start-up included
SERVER_TIMEOUT="${SERVER_TIMEOUT:-300}"  # seconds for the vLLM server to answer /health
SERVER_PORT="${SERVER_PORT:-8011}"
GROUP_PORT="${GROUP_PORT:-51217}"        # NCCL weight-transfer group of server mode
ONLY="${ONLY:-colocate server transformers}"

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
if (( NGPU < 2 )); then
  echo "FAIL: found $NGPU CUDA device(s); this check needs 2" >&2
  exit 1
fi
VLLM_OK=1
"$PY" -c 'import vllm' >/dev/null 2>&1 || VLLM_OK=0

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

# Asserts the run logged prefix/hybrid_rows > 0 and reached max_steps; prints what it found.
cat > "$WORK/check_metrics.py" <<'PY'
import glob
import json
import os
import re
import sys

run_dir, log_path, max_steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
states = sorted(
    glob.glob(os.path.join(run_dir, "checkpoint-*", "trainer_state.json")),
    key=lambda p: int(re.search(r"checkpoint-(\d+)", p).group(1)),
)
if states:
    state = json.load(open(states[-1]))
    values = [e["prefix/hybrid_rows"] for e in state["log_history"] if "prefix/hybrid_rows" in e]
    step, source = state["global_step"], states[-1]
else:  # no checkpoint: the Trainer prints each logged dict
    text = open(log_path, errors="replace").read()
    values = [float(v) for v in re.findall(r"'prefix/hybrid_rows': '?([-+0-9.eE]+)", text)]  # '1' or 1.0
    step, source = len(values), log_path
print(f"prefix/hybrid_rows per logged step {values}, global_step {step} ({source})")
sys.exit(0 if values and max(values) > 0 and step >= max_steps else 1)
PY

COMMON=(
  --model_name_or_path "$MODEL" --dataset_name "$DATA" --dataset_format prefix_rft --reward task
  --max_steps "$MAX_STEPS" --num_generations 8 --num_hybrid 1 --per_device_train_batch_size 4
  --max_completion_length 128 --max_prompt_length 128 --prefix_ratio_decay_steps "$MAX_STEPS"
  --learning_rate 1e-4 --bf16 true --gradient_checkpointing true --seed 0
  --logging_steps 1 --save_strategy steps --save_steps "$MAX_STEPS" --report_to none
  --log_completions false --disable_tqdm true
)

# run_train NAME GPUS NPROC PORT ARGS...: one `accelerate launch` under `timeout`; sets RESULT[NAME].
run_train() {
  local name="$1" gpus="$2" nproc="$3" port="$4"
  shift 4
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
  if "$PY" "$WORK/check_metrics.py" "$out" "$log" "$MAX_STEPS" | tee -a "$log"; then
    RESULT[$name]="PASS"
  else
    RESULT[$name]="FAIL (no prefix/hybrid_rows > 0 or fewer than $MAX_STEPS steps)"
  fi
}

wants() { [[ " $ONLY " == *" $1 "* ]]; }

if wants colocate; then
  if (( VLLM_OK )); then
    run_train colocate 0,1 2 29511 --gradient_accumulation_steps 2 \
      --use_vllm true --vllm_mode colocate --vllm_gpu_memory_utilization 0.3 --vllm_max_model_length 256
  else
    RESULT[colocate]="FAIL (vllm not importable; see $LOGS/preflight.txt)"
  fi
fi

if wants server; then
  if (( ! VLLM_OK )); then
    RESULT[server]="FAIL (vllm not importable; see $LOGS/preflight.txt)"
  else
    # NCCL needs the trainer's rank 0 and the vLLM worker on different GPUs.
    if (( NGPU >= 3 )); then
      train_gpus=0,1 train_nproc=2 server_gpu=2
    else
      train_gpus=0 train_nproc=1 server_gpu=1
    fi
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
      run_train server "$train_gpus" "$train_nproc" 29512 --gradient_accumulation_steps 2 \
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
  run_train transformers 0,1 2 29513 --gradient_accumulation_steps 1 --use_vllm false
fi

echo
echo "== results (logs and runs in $WORK)"
printf '%-14s %s\n' run result
status=0
for name in colocate server transformers; do
  wants "$name" || continue
  printf '%-14s %s\n' "$name" "${RESULT[$name]:-FAIL (not run)}"
  [[ "${RESULT[$name]:-}" == PASS ]] || status=1
done
exit "$status"
