"""PURE learning: the rules (BlockLog, Session -> Example), Foyle's query text and protobuf."""
