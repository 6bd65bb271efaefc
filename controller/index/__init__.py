"""I/O around learning: the retrieval index (SQLite FTS5 or embeddings), embedders, Foyle training files."""
