"""Bugzilla: webhook parsing, REST client, backfill reader, poller."""
