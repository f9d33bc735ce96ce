"""GitHub: webhook parsing, REST client, backfill reader."""
