"""Where dask runs: the threaded scheduler, a local cluster, or a ``dask.distributed`` address."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import dask
import dask.threaded

from .errors import EmbstoreError


def distributed_scheduler(spec: str | None) -> bool:
    """True if ``spec`` asks for ``dask.distributed`` (a cluster), False for threads."""
    return spec not in (None, "", "threads")


@contextlib.contextmanager
def dask_scheduler(spec: str | None) -> Iterator[None]:
    """Run the dask work inside the block on ``spec``.

    ``None`` or ``"threads"``: the threaded scheduler. ``"local:N"``: a ``LocalCluster`` of N
    single-threaded worker processes, started and closed here. Anything else: the address of a
    running ``dask.distributed`` scheduler (``tcp://host:8786``). Every choice gives the same
    numbers; a cluster spreads the reading over more processes or machines.
    """
    if not distributed_scheduler(spec):
        # the callable, not "threads": dask resolves a name through dask.distributed when that
        # is installed, importing it (~1.5 s) on the first compute of a process
        with dask.config.set(scheduler=dask.threaded.get):
            yield
        return
    assert spec is not None
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # an optional dependency: pip install 'embstore[cluster]'
        msg = f"scheduler {spec!r} needs dask.distributed (pip install 'embstore[cluster]')"
        raise EmbstoreError(msg) from exc
    with contextlib.ExitStack() as stack:
        if spec.startswith("local:"):
            try:
                workers = int(spec.removeprefix("local:"))
            except ValueError:
                workers = 0
            if workers < 1:
                raise EmbstoreError(f"scheduler {spec!r}: expected local:N with N >= 1")
            cluster = stack.enter_context(
                LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None)
            )
            client = stack.enter_context(Client(cluster))
        else:
            try:
                client = stack.enter_context(Client(spec, timeout="10s"))
            except (OSError, TimeoutError, ValueError) as exc:
                raise EmbstoreError(f"scheduler {spec!r}: cannot connect ({exc})") from exc
        with dask.config.set(scheduler=client):
            yield
