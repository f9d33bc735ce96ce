"""The sync service, kept importable here: the delivery core lives in `bridge.delivery`.

- `bridge.store.claims`: the fenced item claim (generation numbers, the database's clock, back-off);
- `bridge.delivery.plan`: what a batch of an item's events must do (pure);
- `bridge.delivery.apply`: carrying it out against Zoho, one fenced step per call;
- `bridge.delivery.retry`: what a failure costs (pure);
- `bridge.delivery.service`: the loop and the one failure boundary.
"""

from __future__ import annotations

from bridge.delivery.apply import PermanentEventError, comment_marker
from bridge.delivery.service import ItemOutcome, SyncService, describe
from bridge.store.claims import ClaimLost, claim_name

item_lease = claim_name

__all__ = ["ClaimLost", "ItemOutcome", "PermanentEventError", "SyncService", "comment_marker", "describe", "item_lease"]
