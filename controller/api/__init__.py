"""Resource types (LogFile, Trace, BlockLog, Example), names and schemas."""
