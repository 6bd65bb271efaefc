"""Pure learning rule (BlockLog -> Example) and the retrieval index."""
