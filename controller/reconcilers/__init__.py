"""Reconcilers: read state, call the pure core, write state; each is
`reconcile(keys) -> Outcome` and knows nothing of queues, threads or the stages around it.

Imports: api, logs, analyze, learn, store, index.
"""
