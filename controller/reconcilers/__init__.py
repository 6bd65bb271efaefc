"""Glue: read state, call the pure core, write state."""
