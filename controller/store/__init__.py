"""State: the Store contract and its two backends (SQLite, Kubernetes CRDs), units of
work, and the node-local journal (what was read from which file, traces' accumulators,
the durable dirty marks of every stage).

Imports: api, logs, analyze.
"""
