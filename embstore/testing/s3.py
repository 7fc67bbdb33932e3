"""A local S3-compatible server for tests and benchmarks, and fresh buckets on it.

The server is ``moto`` (``pip install 'moto[server]'``, a test and benchmark dependency),
started on 127.0.0.1 on a free port and stopped when the block ends.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

#: Credentials the local server accepts (it accepts any).
S3_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_REGION": "us-east-1",
}


@contextlib.contextmanager
def local_s3_server(log_file: str | os.PathLike[str] = os.devnull) -> Iterator[str]:
    """Run an S3-compatible server on 127.0.0.1; yield its endpoint URL."""
    server = Path(sys.executable).parent / "moto_server"
    if not server.exists():
        raise RuntimeError(f"{server}: not found; install the test extra ('moto[server]')")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(log_file, "w") as log:
        proc = subprocess.Popen(
            [str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            _wait_for_port(port, proc)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(10)


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("the local S3 server did not start") from None
            time.sleep(0.1)


def new_bucket(endpoint: str) -> str:
    """Create a bucket with a fresh name on the server at ``endpoint``; return its name."""
    import boto3

    bucket = f"t{uuid.uuid4().hex[:20]}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=S3_TEST_ENV["AWS_REGION"],
        aws_access_key_id=S3_TEST_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_TEST_ENV["AWS_SECRET_ACCESS_KEY"],
    )
    client.create_bucket(Bucket=bucket)
    return bucket
