"""Shared builders: small stores and source trees made in code."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import embstore
from embstore.samples import make_npy_tree, make_pt_dict


@pytest.fixture
def npy_tree(tmp_path: Path) -> Path:
    """A babyview-layout tree: 3 categories x 4 subjects x 4 ages, 16-d float32."""
    root = tmp_path / "emb"
    make_npy_tree(root, n_subjects=4, n_categories=3, ages=range(6, 10), dim=16)
    return root


@pytest.fixture
def store(tmp_path: Path, npy_tree: Path) -> Path:
    """A store ingested from ``npy_tree`` with 8-row chunks (so everything spans chunks)."""
    path = tmp_path / "s.zarr"
    embstore.ingest([npy_tree], store=path, layout="babyview", batch_rows=10, row_chunk=8)
    return path


@pytest.fixture
def pt_file(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    file = tmp_path / "vitl_embeddings_p10.pt"
    return file, make_pt_dict(file, folder="p10", dim=16)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local S3-compatible server (moto) on 127.0.0.1 for the whole test session."""
    server = Path(sys.executable).parent / "moto_server"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("w")
    proc = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"the local S3 server did not start (see {log.name})")
            time.sleep(0.1)
    yield endpoint
    proc.terminate()
    proc.wait(10)
    log.close()


S3_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}


@pytest.fixture
def s3_store(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, request) -> str:
    """A fresh ``s3://`` store URL in its own bucket; the AWS environment points at moto."""
    import boto3

    for key, value in {**S3_ENV, "AWS_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(key, value)
    bucket = f"t{uuid.uuid4().hex[:20]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(
        Bucket=bucket
    )
    return f"s3://{bucket}/stores/s"
