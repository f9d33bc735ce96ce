"""Fakes that follow the documents: real HTTP servers for Zoho, GitHub, Bugzilla and BugHerd."""
