"""Pure analysis: entries -> Trace, Traces -> BlockLog. No I/O, no clocks."""
