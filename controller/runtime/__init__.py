"""The generic runtime: work queues (client-go semantics), rate limiters, the controller
worker loop (retries, units of work, durable dirty marks), the manager, metrics, the
file watcher, health endpoints. It runs any reconciler and knows none.

Imports: api, logs, store.
"""
