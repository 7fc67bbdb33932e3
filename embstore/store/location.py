"""Where a store lives: a local folder or ``s3://bucket/prefix``, as an Icechunk storage.

The standard AWS environment is honoured for S3 (``AWS_ENDPOINT_URL``, ``AWS_REGION``,
credentials), so an S3-compatible server works. Any other URL is an error, never a local
folder with a URL for a name.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import icechunk

from ..errors import StoreError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")

StoreLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Location:
    """A parsed store location: a local ``path``, or an S3 ``bucket`` and ``prefix``."""

    url: str
    path: Path | None = None
    bucket: str | None = None
    prefix: str = ""

    def __str__(self) -> str:
        return self.url

    def storage(self) -> icechunk.Storage:
        """The Icechunk storage for this location."""
        if self.path is not None:
            return icechunk.local_filesystem_storage(str(self.path.absolute()))
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return icechunk.s3_storage(
            bucket=str(self.bucket),
            prefix=self.prefix,
            region=region,
            endpoint_url=endpoint,
            allow_http=bool(endpoint and endpoint.startswith("http://")),
            force_path_style=bool(endpoint),
            from_env=True,
        )


def parse_location(store: StoreLike | Location) -> Location:
    """Parse a store argument: a local path, or ``s3://bucket/prefix``.

    >>> parse_location("s3://lab/emb/bv").prefix
    'emb/bv'
    >>> parse_location("stores/bv").path
    PosixPath('stores/bv')
    """
    if isinstance(store, Location):
        return store
    if isinstance(store, os.PathLike):
        path = Path(store)
        first = path.parts[0] if path.parts else ""
        if _SCHEME.match(first) and first.endswith(":") and len(first) > 2:
            msg = f"{path}: looks like a URL turned into a path; pass the URL as a string"
            raise StoreError(msg)
        return Location(url=str(path), path=path)
    text = str(store)
    match = _SCHEME.match(text)
    if match is None or len(match.group(1)) == 1:  # "C:\..." is a drive, not a scheme
        return Location(url=text, path=Path(text))
    scheme = match.group(1).lower()
    if scheme != "s3":
        msg = f"{text}: unsupported storage URL (use a local path or s3://bucket/prefix)"
        raise StoreError(msg)
    parts = urlsplit(text)
    prefix = str(PurePosixPath(parts.path.strip("/"))) if parts.path.strip("/") else ""
    if not parts.netloc or not text.startswith("s3://"):
        raise StoreError(f"{text}: an S3 URL needs a bucket: s3://bucket/prefix")
    return Location(url=text, bucket=parts.netloc, prefix=prefix)
