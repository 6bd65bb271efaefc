"""PURE learning: the rules (BlockLog, Session -> Example), Foyle's query text
(CreateQuery, BlocksToMarkdown) and its training-file protobuf. No I/O.

Imports: api.
"""
