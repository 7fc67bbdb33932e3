"""The store's versioned schema (``schemas/store-v2.schema.json``) and its validation.

The schema file ships inside the package (``embstore/schemas`` is the repository's
``schemas/`` folder). It validates a *description* of a store, built from metadata alone: the
root attributes plus, for every root array, its dimension names, data type and shape.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from ..errors import SchemaError

SCHEMA_VERSION = 2


@cache
def load_schema(version: int = SCHEMA_VERSION) -> dict[str, Any]:
    """Return the JSON Schema of store schema ``version`` (read from the installed package)."""
    resource = resources.files("embstore").joinpath("schemas", f"store-v{version}.schema.json")
    try:
        text = resource.read_text(encoding="utf-8")
    except FileNotFoundError:
        msg = f"no schema for store schema version {version} in this embstore"
        raise SchemaError(msg) from None
    return json.loads(text)


def describe_metadata(root_attrs: dict[str, Any], arrays: dict[str, dict[str, Any]]) -> dict:
    """Build the document the schema validates from root attrs and array ``zarr.json`` dicts."""
    return {
        "attributes": root_attrs,
        "arrays": {
            name: {
                "dims": list(meta.get("dimension_names") or []),
                "dtype": str(meta["data_type"]),
                "shape": list(meta["shape"]),
            }
            for name, meta in arrays.items()
        },
    }


def schema_errors(description: dict[str, Any]) -> list[str]:
    """Every way ``description`` violates the schema, as readable one-liners (empty if valid)."""
    version = description.get("attributes", {}).get("embstore", {}).get("schema_version")
    if isinstance(version, int) and version > SCHEMA_VERSION:
        return [f"store schema version {version} is newer than this embstore ({SCHEMA_VERSION})"]
    if isinstance(version, int) and version < SCHEMA_VERSION:
        return [f"store schema version {version} is older than {SCHEMA_VERSION}: run upgrade"]
    validator = jsonschema.Draft202012Validator(load_schema())
    messages = []
    for error in sorted(validator.iter_errors(description), key=lambda e: list(e.path)):
        where = "/".join(str(part) for part in error.path) or "(root)"
        messages.append(f"{where}: {error.message}")
    return messages


def validate_description(description: dict[str, Any], *, store: str) -> None:
    """Raise :class:`SchemaError` naming the store and the first problems, if any."""
    errors = schema_errors(description)
    if errors:
        shown = "; ".join(errors[:3]) + (f" (+{len(errors) - 3} more)" if len(errors) > 3 else "")
        msg = f"{store}: does not follow the embstore store schema: {shown}"
        raise SchemaError(msg)
