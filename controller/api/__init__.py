"""The vocabulary: resource kinds and schemas (kinds.py, the one source of field names),
names, the normalised log entry, Foyle's function names, and the reconciler contract
(result.py: `reconcile(keys) -> Outcome`). Pure data and functions.

Imports: nothing of controller.
"""
