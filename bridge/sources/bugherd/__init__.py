"""BugHerd: webhook parsing, API client, backfill reader."""
