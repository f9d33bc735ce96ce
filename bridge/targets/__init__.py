"""Where issues go: one package per target system."""
