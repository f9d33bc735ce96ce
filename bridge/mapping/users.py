"""`users:` tables: a source login or email -> the Zoho user's email."""

from __future__ import annotations

from .model import Mapping

USERS_FILES = ("users.yaml", "users.yml")  # a shared table beside the mapping files, not a mapping itself


def _key(name: str) -> str:
    return " ".join(name.split()).casefold()


def resolve_user(mapping: Mapping, name: str | None) -> str | None:
    """The Zoho email for a source login or email: the table's entry (case-insensitive), else `name`
    itself (an email that is the same in both places); None for an empty name."""
    if not name or not name.strip():
        return None
    table = {_key(source): email for source, email in mapping.v3.users}
    return table.get(_key(name), name.strip())


def zoho_emails(mapping: Mapping) -> list[str]:
    """Every Zoho email the table names, once each, in file order (what `mappings check` verifies)."""
    return list(dict.fromkeys(email for _, email in mapping.v3.users))
