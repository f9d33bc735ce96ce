"""Helpers shared by the source modules."""

from __future__ import annotations

import json
from typing import Any

from bridge.events import BadDelivery
from bridge.sources.validate import check_depth


def load_json_object(body: bytes) -> dict[str, Any]:
    """Parse a JSON body that must be an object; say what is wrong otherwise.

    The depth is checked on the bytes first: `json.loads` recurses once per level.
    """
    check_depth(body)
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadDelivery(f"body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise BadDelivery(f"body must be a JSON object, got {type(data).__name__}")
    return data
