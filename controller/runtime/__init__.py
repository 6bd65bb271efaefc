"""Work queue, manager, metrics and health endpoints."""
