"""The delivery core: the only writer of item state (claim, plan, apply, talk-back, attachments)."""
