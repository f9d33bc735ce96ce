"""Talking back to the source: back-links, closing the loop from Zoho, and never echoing our own writes.

`hooks` is what the rest of the bridge calls (the sync service: one line per hook; the beat: `tick`).
`schema` holds the mapping keys and is imported by the mapping schema, so this package imports nothing.
"""
