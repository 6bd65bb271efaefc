"""I/O around learning: the retrieval index (SQLite FTS5 or embeddings), embedders,
Foyle's training files and their ledger.

Imports: api, learn, store.
"""
