"""Defaults that the command line shows in ``--help`` (kept here so that showing help imports
no array library)."""

#: Rows committed together by ``ingest`` (8 chunks of 4096 rows; ~100 MB of 768-d float32).
DEFAULT_BATCH_ROWS = 32768
