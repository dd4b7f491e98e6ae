"""A TCP-socket stand-in for vLLM's NCCL weight-transfer engine, trainer end and worker end.

vLLM's engine is a rendezvous at `master_address:master_port` where the trainer is rank 0 and the server's workers are
ranks `rank_offset..world_size-1`, followed by broadcasts of the tensors that `/update_weights` announced (names,
dtypes, shapes), in announced order, packed into buffers. The double keeps that shape: the trainer listens at the
rendezvous address and accepts one connection per worker (each says its rank), then streams every tensor's raw bytes
in iteration order; the worker rebuilds each tensor from the announced dtype and shape alone. A tensor that does not
match its announcement therefore desynchronises the stream and fails the update, as it would over NCCL.

Only the transport differs: no NCCL communicator, no CUDA buffers, no packing into fixed-size chunks.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

CONNECT_TIMEOUT = 60.0  # seconds; the trainer opens its endpoint only after posting /init_weight_transfer_engine
_RANK = struct.Struct("!i")


@dataclass
class _Group:
    """Stands in for vLLM's StatelessProcessGroup: TRL's `close_communicator` clears `store` and `socket`."""

    socket: socket.socket | None
    store: Any = None


@dataclass
class SocketCommunicator:
    """What `open_trainer_endpoint` returns: the group plus one connection per worker rank."""

    group: _Group
    world_size: int
    peers: dict[int, socket.socket] = field(default_factory=dict)


def open_trainer_endpoint(init_info: dict) -> SocketCommunicator:
    """Trainer side of the rendezvous (replaces vllm's `nccl_common.trainer_init`): rank 0 accepts every worker."""
    world_size, rank_offset = int(init_info["world_size"]), int(init_info["rank_offset"])
    expected = set(range(rank_offset, world_size))
    listener = socket.create_server((init_info["master_address"], int(init_info["master_port"])))
    listener.settimeout(CONNECT_TIMEOUT)
    peers = {}
    with listener:
        while set(peers) != expected:
            conn, _ = listener.accept()
            conn.settimeout(None)
            (rank,) = _RANK.unpack(_recv_exact(conn, _RANK.size))
            if rank not in expected or rank in peers:
                raise RuntimeError(f"unexpected worker rank {rank}; expected {sorted(expected)}")
            peers[rank] = conn
    return SocketCommunicator(group=_Group(socket=listener), world_size=world_size, peers=peers)


def broadcast_producer(
    iterator: Iterable[Any],
    group: SocketCommunicator,
    src: int = 0,
    post_iter_func: Callable[[Any], torch.Tensor] = lambda item: item,
    **_: Any,
) -> None:
    """Trainer side of an update (replaces vllm's `packed_nccl_broadcast_producer`): stream each tensor's bytes."""
    if src != 0:
        raise ValueError(f"the trainer is rank 0 of the weight-transfer group, got src={src}")
    for item in iterator:
        payload = _tensor_bytes(post_iter_func(item))
        for conn in group.peers.values():
            conn.sendall(payload)


def connect_worker(init_info: dict, worker_index: int = 0, timeout: float = CONNECT_TIMEOUT) -> socket.socket:
    """Worker side of the rendezvous: connect to the trainer (retrying until it listens) and announce the rank."""
    address = (init_info["master_address"], int(init_info["master_port"]))
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = socket.create_connection(address, timeout=timeout)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    conn.settimeout(None)
    conn.sendall(_RANK.pack(int(init_info["rank_offset"]) + worker_index))
    return conn


def receive_tensors(
    conn: socket.socket, names: list[str], dtype_names: list[str], shapes: list[list[int]]
) -> Iterator[tuple[str, torch.Tensor]]:
    """Worker side of an update: rebuild each announced tensor from the stream, in announced order."""
    for name, dtype_name, shape in zip(names, dtype_names, shapes, strict=True):
        dtype = getattr(torch, dtype_name, None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"{name}: unknown dtype {dtype_name!r}")
        numel = 1
        for size in shape:
            numel *= size
        buffer = _recv_exact(conn, numel * dtype.itemsize)
        yield name, torch.frombuffer(buffer, dtype=dtype).reshape(shape) if numel else torch.empty(shape, dtype=dtype)


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


def _recv_exact(conn: socket.socket, size: int) -> bytearray:
    buffer = bytearray(size)
    view, received = memoryview(buffer), 0
    while received < size:
        chunk = conn.recv_into(view[received:])
        if chunk == 0:
            raise ConnectionError(f"weight stream closed after {received} of {size} bytes")
        received += chunk
    return buffer
