"""Helpers shared by the source modules."""

from __future__ import annotations

import json
from typing import Any

from bridge.events import BadDelivery
from bridge.sources.validate import check_depth, check_parsed_depth


def load_json_object(body: bytes) -> dict[str, Any]:
    """Parse a JSON body that must be an object; say what is wrong otherwise.

    `json.loads` recurses once per level, bounded by the interpreter's recursion limit (a deeper body raises
    RecursionError, no crash); what it parsed is then held to MAX_DEPTH. A body it refuses is measured on the
    bytes (`check_depth`), so a deep one is refused for its depth, as before, whatever else is wrong with it.
    """
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        check_depth(body)
        raise BadDelivery(f"body is not valid JSON: {str(exc)[:200]}") from None
    check_parsed_depth(data)
    if not isinstance(data, dict):
        raise BadDelivery(f"body must be a JSON object, got {type(data).__name__}")
    return data
