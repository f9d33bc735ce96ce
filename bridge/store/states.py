"""The states an event goes through (`events.status`): the one definition every store module imports."""

PENDING, DONE, FAILED, SUPERSEDED, SKIPPED = "pending", "done", "failed", "superseded", "skipped"
EVENT_STATUSES = (PENDING, DONE, FAILED, SUPERSEDED, SKIPPED)
