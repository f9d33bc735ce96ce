"""The one outbound layer: every outside call declared in its system's table (`calls.py`), paced by budgets
every process shares (`budget.py`), and ending in one of a few error types every lane reads alike
(`errors.py`). Each system's client (bridge/targets/zoho, bridge/sources/*) sends through it."""
