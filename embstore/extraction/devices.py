"""Which device runs the encoder, and one process per GPU of a node.

``devices=(0, 1, ...)`` runs one extraction process per CUDA device, all filling one store:
each process takes a shard of the run's inputs (:func:`device_shards`), so together they embed
every input exactly once, and each commits under the store's lock as separate shards always
have (a SLURM array of ``shard=(i, n)`` runs does the same across nodes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import EmbstoreError

if TYPE_CHECKING:
    from .config import ExtractConfig


def pick_device(device: str | None, devices: Sequence[int] = ()) -> str:
    """`None` -> `cuda` when available, else `cpu`; asking for CUDA (or ``devices``) without
    it is an error, as is a device index the node does not have."""
    import torch

    if devices:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        absent = [d for d in devices if d >= count]
        if absent:
            raise EmbstoreError(f"devices={list(devices)}: this node has {count} CUDA device(s)")
        return f"cuda:{devices[0]}"
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EmbstoreError(f"device={device!r}: no CUDA device here (use device='cpu')")
    return device


def device_shards(shard: tuple[int, int] | None, count: int) -> list[tuple[int, int]]:
    """Split the run's inputs (all, or ``shard=(i, n)`` of them) into ``count`` shards.

    Shard ``j`` of ``(i, n)`` is ``(i + n*j, n*count)``: a path whose stable hash ``h`` has
    ``h % (n*count) == i + n*j`` has ``h % n == i``, so the parts cover exactly shard ``i``.
    """
    index, total = shard if shard is not None else (0, 1)
    return [(index + total * j, total * count) for j in range(count)]


def run_on_devices(
    config: ExtractConfig, run: Callable[[ExtractConfig], Any], merge: Callable[[list[Any]], Any]
) -> Any:
    """``run`` once per device of ``config.devices`` in spawned processes (CUDA does not
    survive ``fork``), each on its shard; the reports merged. Every process runs to its end;
    the first error is raised after."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    pick_device(None, config.devices)  # refuse absent devices before starting anything
    shards = device_shards(config.shard, len(config.devices))
    limit = None if config.limit is None else -(-config.limit // len(config.devices))
    parts = [
        config.with_(devices=(), device=f"cuda:{d}", shard=s, limit=limit)
        for d, s in zip(config.devices, shards, strict=True)
    ]
    reports, errors = [], []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(parts), mp_context=context) as pool:
        for future in as_completed([pool.submit(run, part) for part in parts]):
            try:
                reports.append(future.result())
            except Exception as exc:  # noqa: BLE001 - raised after the others finish
                errors.append(exc)
    if errors:
        raise errors[0]
    return merge(reports)


__all__ = ["device_shards", "pick_device", "run_on_devices"]
