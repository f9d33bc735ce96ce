"""Process plumbing: runtime, broker, supervisor, metrics, logs, gunicorn configuration."""
