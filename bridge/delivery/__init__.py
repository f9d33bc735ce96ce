"""The delivery core: claim an item (claim.py via bridge.store.claims), plan its batch (plan.py, pure),
apply the plan to Zoho in fenced steps (apply.py), and decide what a failure costs (retry.py, pure)."""
