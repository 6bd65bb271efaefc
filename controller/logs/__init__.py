"""Reading log files: line framing from an offset, file identity (device, inode, first
bytes), what became of a path (transition.py, pure), and normalising a Foyle or RunMe
line into an Entry.

Imports: api.
"""
