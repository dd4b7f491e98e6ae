"""A `vllm serve` double for TRL's server mode, and the installer for the trainer-side half of its weight transport.

The server speaks the HTTP protocol TRL 1.16's `VLLMClient` uses against `VLLM_SERVER_DEV_MODE=1 vllm serve MODEL
--weight-transfer-config '{"backend": "nccl"}' --logprobs-mode processed_logprobs --max-logprobs -1`:

- `GET /health`, `GET /v1/models`, `GET /server_info` (`{"vllm_config": {...}}` with `weight_transfer_config` and
  `model_config.logprobs_mode`), `GET /get_world_size` (one worker);
- `POST /v1/completions` with token-id prompts, `n`, `max_tokens`, `temperature`, `top_p`, `top_k`, `min_p`,
  `repetition_penalty`, `logprobs`, `seed`, `return_token_ids`, `return_tokens_as_token_ids`; choices come back
  prompt-major with `prompt_token_ids`, `token_ids` and OpenAI completion logprobs (`tokens`, `token_logprobs`,
  `top_logprobs`, `text_offset`; logprobs clamped at -9999 as vLLM does). Fields the double does not implement are
  refused with 400 (vLLM would ignore unknown ones), so protocol drift shows up in tests;
- `POST /init_weight_transfer_engine`, `/start_weight_update`, `/update_weights`, `/finish_weight_update` (409 on a
  start inside an update, or an update or finish outside one) and `/reset_prefix_cache` (`{"success": true}`, an
  empty body when emulating vLLM < 0.26). TRL 1.16 has no close endpoint: `close_communicator` only drops its side.
- `GET /double/weights`: not vLLM's; the served parameters as safetensors bytes, for tests.

Completion requests are batched as vLLM's scheduler batches concurrent requests (`Batcher`): the requests in flight
together are decoded as one engine batch, once none has arrived for `--batch-window` seconds (0.2). A request whose
prompt + max_tokens exceeds `--max-model-len` is refused with 400 and vLLM's message, as `vllm serve` does.

Every request that changes or uses the engine is appended to the JSON-lines log given with `--log`, one object per
line with an `event` key: `completions` (prompts, n, max_tokens, the other sampling fields, completion_ids, or error;
`batch_requests`: HTTP requests decoded in its batch, `in_flight`: completion requests in flight when it started),
`init_weight_transfer_engine`, `start_weight_update`, `update_weights` (names, dtype_names, shapes, packed),
`finish_weight_update` (the names loaded since the start) and `reset_prefix_cache`.

Run it: `python -m tests.trl.doubles.vllm_server --model DIR --port P --log FILE` from the repository root, or
`with running_server(model_dir, log_path) as server:` which starts that process, waits for `/health` and stops it;
`server.url`, `server.completion_requests()`, `server.events()`, `server.weights()`; `read_log(path, event)`.

`install_server_client_double(monkeypatch, vllm_version="0.31.0")` patches `trl.generation.vllm_client` (and one name
in `trl.generation.vllm_generation`) so that TRL's own client reaches this server and its weight transfer runs over
`weight_transport`'s socket instead of NCCL:

- `is_vllm_available` in `vllm_client` (`VLLMClient.__init__` raises ImportError without vLLM) and in
  `vllm_generation` (`_init_vllm` does too): answer as the emulated vLLM version would.
- `_HAS_STATEFUL_TRAINER_ENGINE` (vLLM >= 0.28: `init_info["packed"]`, `open_trainer_endpoint`,
  `packed_nccl_broadcast_producer`) and `_HAS_RESET_PREFIX_CACHE_SUCCESS` (>= 0.26: a JSON reply) are evaluated at
  import from the absent vLLM; they are set for the emulated version, so TRL picks the branch a real install would.
- `get_ip` (vllm's network utils, absent): the rendezvous address TRL sends; here the loopback address.
- `open_trainer_endpoint` / `packed_nccl_broadcast_producer` (>= 0.28), or `NCCLWeightTransferEngine` /
  `NCCLTrainerSendWeightsArgs` (< 0.28): vLLM's NCCL trainer side, replaced by the socket rendezvous and stream.
- `VLLMClient.init_communicator`: TRL refuses a non-CUDA device before opening NCCL. The wrapper passes an index-less
  `"cuda"` in place of a CPU device, which clears that check and skips `torch.cuda.set_device`; the rest of TRL's body
  (server-info check, world size, init_info, the concurrent POST and rendezvous, atexit) runs unchanged.

`trl.import_utils.is_vllm_available` itself is left alone (the modules above hold their own reference, and nothing on
this path calls the original at run time); `GRPOTrainer` makes no vLLM availability check of its own in TRL 1.16.

What only a GPU run against real vLLM can confirm: NCCL itself (the rendezvous, packed broadcasts, CUDA buffers and
`torch.cuda.set_device`), `get_ip` on a real network, vLLM's acceptance of these parameter names by its own model
loaders (fused q/k/v and gate/up), its dtype down-cast of fp32 checkpoints, tensor/data-parallel worlds larger than
one worker, the multimodal endpoints (`/v1/chat/completions/render`, `/inference/v1/generate`), chat completions,
teacher logprobs (`prompt_logprobs`), structured outputs and the exact sampler numerics.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import safetensors.torch
import torch

from . import weight_transport
from .availability import EMULATED_VLLM_VERSION, version_at_least
from .sampler import LOGPROBS_MODES, Engine, Sample, SamplingSpec

REPO_ROOT = Path(__file__).resolve().parents[3]
LOOPBACK = "127.0.0.1"
SAMPLING_FIELDS = (
    "n",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "logprobs",
    "seed",
)
# Request fields the server double accepts on /v1/completions; anything else is refused with HTTP 400.
COMPLETION_FIELDS = {"model", "prompt", *SAMPLING_FIELDS, "stream", "return_token_ids", "return_tokens_as_token_ids"}
LOGPROB_FLOOR = -9999.0  # vLLM clamps -inf logprobs to this in OpenAI responses


class HTTPError(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------------------------------------------------


class ServerState:
    """The engine plus the weight-transfer state machine and the request log."""

    def __init__(self, engine: Engine, args: argparse.Namespace):
        self.engine = engine
        self.batcher = Batcher(engine, args.batch_window)
        self.model_path = args.model
        self.served_name = args.served_model_name or args.model
        self.weight_transfer = not args.no_weight_transfer
        self.vllm_version = args.vllm_version
        self.log_path = Path(args.log)
        self.transfer_conn: socket.socket | None = None
        self.updating = False
        self.loaded_in_update: list[str] = []
        self.lock = threading.Lock()

    def log(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, "time": time.time(), **fields})
        with self.lock, self.log_path.open("a") as f:
            f.write(line + "\n")


@dataclass
class _Job:
    """One HTTP request's (prompt, spec) pairs waiting for a batch, and what the batch gave it."""

    requests: list[tuple[list[int], SamplingSpec]]
    done: threading.Event = field(default_factory=threading.Event)
    samples: list[list[Sample]] | None = None
    error: Exception | None = None
    batch_requests: int = 0  # HTTP requests decoded in the same engine batch as this one
    in_flight: int = 0  # HTTP completion requests in flight (received, not answered) when its batch started


class Batcher:
    """Decodes the completion requests that are in flight together as one engine batch, as vLLM's scheduler does.

    A batch starts once no new request has arrived for `window` seconds, and takes every request waiting then; each
    request's log record says how many HTTP requests shared its batch and how many were in flight, so a client that
    sends one call at a time (or a few) shows up in tests. A request vLLM would refuse fails alone (HTTP 400).
    """

    def __init__(self, engine: Engine, window: float):
        self.engine, self.window = engine, window
        self.cond = threading.Condition()
        self.pending: list[_Job] = []
        self.in_flight = 0
        self.last_arrival = 0.0
        threading.Thread(target=self._loop, daemon=True).start()

    def submit(self, requests: list[tuple[list[int], SamplingSpec]]) -> _Job:
        job = _Job(requests)
        with self.cond:
            self.in_flight += 1
            self.pending.append(job)
            self.last_arrival = time.monotonic()
            self.cond.notify_all()
        job.done.wait()
        with self.cond:
            self.in_flight -= 1
        if job.error is not None:
            raise job.error
        return job

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.pending:
                    self.cond.wait()
                while (quiet := self.last_arrival + self.window - time.monotonic()) > 0:
                    self.cond.wait(quiet)
                jobs, self.pending, in_flight = self.pending, [], self.in_flight
            self._decode(jobs, in_flight)

    def _decode(self, jobs: list[_Job], in_flight: int) -> None:
        valid = []
        for job in jobs:
            job.batch_requests, job.in_flight = len(jobs), in_flight
            try:
                self.engine.check(job.requests)
                valid.append(job)
            except ValueError as error:
                job.error = HTTPError(HTTPStatus.BAD_REQUEST, str(error))
        try:
            samples = self.engine.generate([r for job in valid for r in job.requests]) if valid else []
            start = 0
            for job in valid:
                job.samples, start = samples[start : start + len(job.requests)], start + len(job.requests)
        except Exception as error:  # reaches every client of the batch as a 500
            for job in valid:
                job.error = error
        for job in jobs:
            job.done.set()


def health(state: ServerState, query: dict, body: dict) -> bytes:
    return b""


def models(state: ServerState, query: dict, body: dict) -> dict:
    card = {
        "id": state.served_name,
        "object": "model",
        "created": int(time.time()),
        "owned_by": "vllm",
        "root": state.model_path,
        "max_model_len": state.engine.max_model_len,
    }
    return {"object": "list", "data": [card]}


def server_info(state: ServerState, query: dict, body: dict) -> dict:
    model_config = {
        "model": state.model_path,
        "served_model_name": state.served_name,
        "dtype": str(state.engine.model.dtype).removeprefix("torch."),
        "max_model_len": state.engine.max_model_len,
        "logprobs_mode": state.engine.logprobs_mode,
        "max_logprobs": -1,
    }
    return {
        "vllm_config": {
            "model_config": model_config,
            "parallel_config": {"tensor_parallel_size": 1, "data_parallel_size": 1, "world_size": 1},
            "weight_transfer_config": {"backend": "nccl"} if state.weight_transfer else None,
        }
    }


def world_size(state: ServerState, query: dict, body: dict) -> dict:
    return {"world_size": 1}


def completions(state: ServerState, query: dict, body: dict) -> dict:
    record = {key: body.get(key) for key in ("prompt", *SAMPLING_FIELDS)}
    record["prompts"] = record.pop("prompt")
    try:
        response = _complete(state, body)
    except Exception as error:
        state.log("completions", **record, error=str(error))
        raise
    record["completion_ids"] = [choice["token_ids"] for choice in response["choices"]]
    state.log("completions", **record, **response.pop("double_batch"))
    return response


def _complete(state: ServerState, body: dict) -> dict:
    if body.get("model") != state.served_name:
        raise HTTPError(HTTPStatus.NOT_FOUND, f"The model `{body.get('model')}` does not exist.")
    unknown = sorted(set(body) - COMPLETION_FIELDS)
    if unknown or body.get("stream"):
        raise HTTPError(HTTPStatus.BAD_REQUEST, f"the vLLM double does not implement {unknown or ['stream']}")
    prompts = _token_prompts(state.engine, body["prompt"])
    spec = SamplingSpec(**{key: body[key] for key in SAMPLING_FIELDS if body.get(key) is not None})
    job = state.batcher.submit([(prompt, spec) for prompt in prompts])
    samples = job.samples
    choices = []
    for prompt, group in zip(prompts, samples):  # prompt-major, as vLLM merges its per-prompt results
        for sample in group:
            choices.append(_choice(state.engine, len(choices), prompt, sample, body))
    completion_tokens = sum(len(sample.token_ids) for group in samples for sample in group)
    prompt_tokens = sum(len(prompt) for prompt in prompts)
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": state.served_name,
        "choices": choices,
        "double_batch": {"batch_requests": job.batch_requests, "in_flight": job.in_flight},
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _token_prompts(engine: Engine, prompt: Any) -> list[list[int]]:
    """vLLM's completion prompt forms: a string, a list of strings, a list of token ids, or a list of those."""
    if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and isinstance(prompt[0], int)):
        prompt = [prompt]
    if not isinstance(prompt, list) or not prompt:
        raise HTTPError(HTTPStatus.BAD_REQUEST, "prompt must be a string, token ids, or a non-empty list of them")
    if any(isinstance(p, str) for p in prompt) and engine.tokenizer is None:
        raise HTTPError(HTTPStatus.BAD_REQUEST, "text prompts need the model's tokenizer")
    return [engine.tokenizer(p)["input_ids"] if isinstance(p, str) else list(p) for p in prompt]


def _choice(engine: Engine, index: int, prompt: list[int], sample: Sample, body: dict) -> dict:
    with_ids = bool(body.get("return_token_ids"))
    return {
        "index": index,
        "text": engine.decode(sample.token_ids),
        "logprobs": None if sample.logprobs is None else _logprobs(engine, sample, body),
        "finish_reason": sample.finish_reason,
        "stop_reason": None,
        "prompt_logprobs": None,
        "prompt_token_ids": prompt if with_ids else None,
        "token_ids": sample.token_ids if with_ids else None,
    }


def _logprobs(engine: Engine, sample: Sample, body: dict) -> dict:
    """OpenAI completion logprobs; `top_logprobs` holds the sampled token then the top-N, as vLLM returns them."""

    def label(token_id: int) -> str:
        if body.get("return_tokens_as_token_ids") or engine.tokenizer is None:
            return f"token_id:{token_id}"
        return engine.tokenizer.decode([token_id])

    tokens = [label(position[0].token_id) for position in sample.logprobs]
    offsets = [0]
    for token in tokens[:-1]:
        offsets.append(offsets[-1] + len(token))
    return {
        "text_offset": offsets[: len(tokens)],
        "token_logprobs": [max(position[0].logprob, LOGPROB_FLOOR) for position in sample.logprobs],
        "tokens": tokens,
        "top_logprobs": [
            {label(e.token_id): max(e.logprob, LOGPROB_FLOOR) for e in position} for position in sample.logprobs
        ],
    }


def init_weight_transfer_engine(state: ServerState, query: dict, body: dict) -> dict:
    if not state.weight_transfer:
        raise HTTPError(HTTPStatus.BAD_REQUEST, "this server was started without a weight-transfer config")
    init_info = _required(body, "init_info")
    missing = {"master_address", "master_port", "rank_offset", "world_size"} - set(init_info)
    if missing:
        raise HTTPError(HTTPStatus.BAD_REQUEST, f"init_info lacks {sorted(missing)}")
    if init_info["world_size"] != init_info["rank_offset"] + 1:  # one worker: the trainer plus this server
        raise HTTPError(HTTPStatus.BAD_REQUEST, f"world_size must be rank_offset + 1 for one worker: {init_info}")
    conn = weight_transport.connect_worker(init_info)  # blocks in the rendezvous, as vLLM's NCCL init does
    with state.lock:
        previous, state.transfer_conn = state.transfer_conn, conn
    if previous is not None:
        previous.close()
    state.log("init_weight_transfer_engine", init_info=init_info)
    return {"message": "Weight transfer initialized"}


def start_weight_update(state: ServerState, query: dict, body: dict) -> dict:
    with state.lock:
        if state.updating:
            raise HTTPError(HTTPStatus.CONFLICT, "start_weight_update inside an update: finish_weight_update first")
        state.updating, state.loaded_in_update = True, []
    state.log("start_weight_update")
    return {"message": "Weight update started"}


def update_weights(state: ServerState, query: dict, body: dict) -> dict:
    info = _required(body, "update_info")
    if state.transfer_conn is None:
        raise HTTPError(HTTPStatus.BAD_REQUEST, "update_weights before init_weight_transfer_engine")
    if not state.updating:
        raise HTTPError(HTTPStatus.CONFLICT, "update_weights outside start_weight_update/finish_weight_update")
    names, dtype_names, shapes = (_required(info, key) for key in ("names", "dtype_names", "shapes"))
    received = weight_transport.receive_tensors(state.transfer_conn, names, dtype_names, shapes)
    try:
        state.engine.load_weights(received)
    except (KeyError, ValueError) as error:
        raise HTTPError(HTTPStatus.BAD_REQUEST, str(error)) from error
    state.loaded_in_update += names
    state.log("update_weights", names=names, dtype_names=dtype_names, shapes=shapes, packed=info.get("packed"))
    return {"message": "Weights updated"}


def finish_weight_update(state: ServerState, query: dict, body: dict) -> dict:
    with state.lock:
        if not state.updating:
            raise HTTPError(HTTPStatus.CONFLICT, "finish_weight_update without start_weight_update")
        state.updating = False
    state.log("finish_weight_update", loaded=state.loaded_in_update)
    return {"message": "Weight update finished"}


def reset_prefix_cache(state: ServerState, query: dict, body: dict) -> dict | bytes:
    state.log("reset_prefix_cache")
    return {"success": True} if version_at_least(state.vllm_version, "0.26.0") else b""


def double_weights(state: ServerState, query: dict, body: dict) -> bytes:
    return safetensors.torch.save(state.engine.weights())


def _required(body: dict, key: str) -> Any:
    if body.get(key) is None:
        raise HTTPError(HTTPStatus.BAD_REQUEST, f"Missing '{key}' in request body")
    return body[key]


Route = Callable[[ServerState, dict, dict], dict | bytes]
ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/health"): health,
    ("GET", "/v1/models"): models,
    ("GET", "/server_info"): server_info,
    ("GET", "/get_world_size"): world_size,
    ("GET", "/double/weights"): double_weights,
    ("POST", "/v1/completions"): completions,
    ("POST", "/init_weight_transfer_engine"): init_weight_transfer_engine,
    ("POST", "/start_weight_update"): start_weight_update,
    ("POST", "/update_weights"): update_weights,
    ("POST", "/finish_weight_update"): finish_weight_update,
    ("POST", "/reset_prefix_cache"): reset_prefix_cache,
}


class Handler(BaseHTTPRequestHandler):
    state: ServerState  # set on the per-server subclass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        route = ROUTES.get((method, url.path))
        try:
            if route is None:
                raise HTTPError(HTTPStatus.NOT_FOUND, f"{method} {url.path} is not served")
            self._reply(HTTPStatus.OK, route(self.state, _query(url.query), self._body()))
        except HTTPError as error:
            self._reply(error.status, {"error": {"message": str(error), "code": int(error.status)}})
        except Exception as error:  # a bug in the double or the client: 500, as vLLM answers unexpected errors
            self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": {"message": repr(error), "code": 500}})

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return {}
        try:
            return json.loads(self.rfile.read(length))
        except json.JSONDecodeError as error:
            raise HTTPError(HTTPStatus.BAD_REQUEST, "Invalid JSON format") from error

    def _reply(self, status: HTTPStatus, payload: dict | bytes) -> None:
        is_json = isinstance(payload, dict)
        data = json.dumps(payload).encode() if is_json else payload
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if is_json else "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no access log: the JSON-lines log records what tests need, and errors reach the client


def _query(query: str) -> dict:
    return {key: values[-1] for key, values in parse_qs(query).items()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a local directory saved with save_pretrained")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--log", required=True, help="JSON-lines file the requests are appended to")
    parser.add_argument("--served-model-name", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument(
        "--batch-window", type=float, default=0.2, help="seconds without a new request before a batch is decoded"
    )
    # Defaults as `trl vllm-serve` starts vLLM: processed logprobs, an NCCL weight-transfer config.
    parser.add_argument("--logprobs-mode", default="processed_logprobs", choices=LOGPROBS_MODES)
    parser.add_argument("--no-weight-transfer", action="store_true", help="serve without --weight-transfer-config")
    parser.add_argument("--vllm-version", default=EMULATED_VLLM_VERSION, help="vLLM version whose replies to mimic")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    engine = Engine(args.model, seed=args.seed, max_model_len=args.max_model_len, logprobs_mode=args.logprobs_mode)
    handler = type("BoundHandler", (Handler,), {"state": ServerState(engine, args)})
    server = ThreadingHTTPServer((args.host, args.port), handler)
    server.daemon_threads = True
    print(f"vLLM double serving {args.model} at http://{args.host}:{args.port}", flush=True)
    server.serve_forever()


# ---------------------------------------------------------------------------------------------------------------------
# Test-side helpers
# ---------------------------------------------------------------------------------------------------------------------


def python_path() -> str:
    """PYTHONPATH with the repository root first, so that `-m tests.trl.doubles...` resolves from anywhere."""
    return os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def read_log(path: str | Path, event: str | None = None) -> list[dict]:
    """The server's log records, optionally only those of one event kind."""
    path = Path(path)
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [r for r in records if event is None or r["event"] == event]


@dataclass
class ServerHandle:
    url: str
    log_path: Path
    process: subprocess.Popen

    def events(self, event: str | None = None) -> list[dict]:
        return read_log(self.log_path, event)

    def completion_requests(self) -> list[dict]:
        return self.events("completions")

    def weights(self) -> dict[str, torch.Tensor]:
        with urllib.request.urlopen(f"{self.url}/double/weights", timeout=30) as response:
            return safetensors.torch.load(response.read())


@contextmanager
def running_server(
    model_dir: str | Path, log_path: str | Path, *, extra_args: list[str] | None = None, startup_timeout: float = 120
) -> Iterator[ServerHandle]:
    """Start the server double as a subprocess on a free port, wait for /health, and stop it on exit."""
    port, log_path = free_port(), Path(log_path)
    output_path = log_path.with_name(log_path.name + ".out")
    command = [sys.executable, "-m", "tests.trl.doubles.vllm_server", "--model", str(model_dir), "--port", str(port)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": python_path()}
    with output_path.open("w") as output:
        process = subprocess.Popen(
            [*command, "--log", str(log_path), *(extra_args or [])],
            cwd=REPO_ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    handle = ServerHandle(f"http://{LOOPBACK}:{port}", log_path, process)
    try:
        _wait_for_health(handle, output_path, startup_timeout)
        yield handle
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_health(handle: ServerHandle, output_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if handle.process.poll() is not None:
            raise RuntimeError(f"the server double exited early:\n{output_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{handle.url}/health", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    raise TimeoutError(f"the server double did not answer /health within {timeout} s")


# ---------------------------------------------------------------------------------------------------------------------
# Trainer-side installer
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class _TrainerSendArgs:
    """vLLM < 0.28's `NCCLTrainerSendWeightsArgs`."""

    group: Any
    packed: bool = False


class _LegacyTrainerEngine:
    """vLLM < 0.28's static `NCCLWeightTransferEngine.trainer_init` / `trainer_send_weights`, over the socket."""

    @staticmethod
    def trainer_init(init_info: dict) -> weight_transport.SocketCommunicator:
        return weight_transport.open_trainer_endpoint(init_info)

    @staticmethod
    def trainer_send_weights(iterator: Iterator, trainer_args: _TrainerSendArgs) -> None:
        weight_transport.broadcast_producer(iterator, trainer_args.group, src=0, post_iter_func=lambda item: item[1])


def _on_cpu_as_cuda(init_communicator: Callable) -> Callable:
    @functools.wraps(init_communicator)
    def wrapper(self, device: torch.device | str | int = 0):
        is_cuda = isinstance(device, int) or torch.device(device).type == "cuda"
        # An index-less "cuda" passes TRL's CUDA check and skips torch.cuda.set_device; nothing else reads it.
        return init_communicator(self, device=device if is_cuda else "cuda")

    return wrapper


def install_server_client_double(monkeypatch: Any, vllm_version: str = EMULATED_VLLM_VERSION) -> None:
    """Patch TRL's vLLM client so that it talks to the server double as it would to `vllm==vllm_version`.

    `monkeypatch` is pytest's fixture, or `pytest.MonkeyPatch.context()` in a script; see the module docstring for
    what each patch replaces.
    """
    from trl.generation import vllm_client, vllm_generation

    from .availability import patch_is_vllm_available

    patch_is_vllm_available(monkeypatch, [vllm_client, vllm_generation], vllm_version)
    stateful = version_at_least(vllm_version, "0.28.0")
    monkeypatch.setattr(vllm_client, "_HAS_STATEFUL_TRAINER_ENGINE", stateful)
    monkeypatch.setattr(vllm_client, "_HAS_RESET_PREFIX_CACHE_SUCCESS", version_at_least(vllm_version, "0.26.0"))
    monkeypatch.setattr(vllm_client, "get_ip", lambda: LOOPBACK, raising=False)
    if stateful:
        monkeypatch.setattr(
            vllm_client, "open_trainer_endpoint", weight_transport.open_trainer_endpoint, raising=False
        )
        monkeypatch.setattr(
            vllm_client, "packed_nccl_broadcast_producer", weight_transport.broadcast_producer, raising=False
        )
    else:
        monkeypatch.setattr(vllm_client, "NCCLWeightTransferEngine", _LegacyTrainerEngine, raising=False)
        monkeypatch.setattr(vllm_client, "NCCLTrainerSendWeightsArgs", _TrainerSendArgs, raising=False)
    original = vllm_client.VLLMClient.init_communicator
    monkeypatch.setattr(vllm_client.VLLMClient, "init_communicator", _on_cpu_as_cuda(original))


if __name__ == "__main__":
    main()


def run_two_ranks_with_server(
    tmp_path: Path, model_dir: Path, worker_module: str
) -> tuple[list[dict], list[dict], dict]:
    """Run `python -m worker_module OUT MODEL URL PORT` on 2 gloo ranks against a fresh server double.

    Returns each rank's `rank{R}.json`, the server's logged events and its weights at the end.
    """
    out_dir = tmp_path / "ranks"
    out_dir.mkdir()
    # torchrun, not `accelerate launch --cpu`, which silently starts one process (cpu_feasibility.md §3)
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": python_path()}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    with running_server(model_dir, tmp_path / "server.jsonl") as server:
        args = [str(out_dir), str(model_dir), server.url, str(free_port())]
        result = subprocess.run(
            [*launch, "-m", worker_module, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stderr[-3000:]
        served, events = server.weights(), server.events()
    ranks = [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(2)]
    return ranks, events, served
