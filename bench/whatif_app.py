"""What-if variants of the bridge app for bench/intake_whatif.py: the real app with one cost taken out.

Not a fix: an upper bound on what removing a cost would buy, measured under the same server settings.
BENCH_WHATIF is a comma-separated list of:

- `no-wake`: the wake-up publish is skipped (the bound for batching it, or for workers that poll);
- `prebuilt-insert`: the delivery row is inserted with one prebuilt `insert(events)` statement and a
  parameter dict, instead of a new `insert(...).values(**values)` statement per delivery;
- `no-log`: the per-delivery INFO line ("delivery accepted") is not written.
"""

from __future__ import annotations

import logging
import os

from bench.variants import no_wake, record_delivery_prebuilt
from bridge import store
from bridge.web.wsgi import app

for variant in filter(None, os.environ.get("BENCH_WHATIF", "").split(",")):
    if variant == "no-wake":
        app.extensions["publisher"].wake = no_wake
    elif variant == "prebuilt-insert":
        store.record_delivery = record_delivery_prebuilt  # type: ignore[assignment]
    elif variant == "no-log":
        logging.getLogger("bridge.intake").setLevel(logging.WARNING)
    else:
        raise SystemExit(f"BENCH_WHATIF: unknown variant {variant!r}")

__all__ = ["app"]
