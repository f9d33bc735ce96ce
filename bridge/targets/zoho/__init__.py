"""Zoho Projects (API v3) and Zoho BugTracker: client, dialects, auth, budget, verify."""
