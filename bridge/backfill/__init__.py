"""Backfill: bring the items that existed before the webhook into Zoho, through the webhook pipeline.

One reader per source (`github`, `bugzilla`, `bugherd`) turns the source's REST API into batches of
normalized events; the shared `runner` stores them paced within a share of the Zoho budget, with a
resumable cursor. `list_backfills(engine)` is what `issue-bridge status` and the admin page show.
"""

from bridge.backfill.runner import BackfillError, list_backfills, run_backfill

__all__ = ["BackfillError", "list_backfills", "run_backfill"]
