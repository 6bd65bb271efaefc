"""The Store contract and its backends (SQLite, Kubernetes), and the journal."""
