"""PURE analysis: entries -> Traces (a mergeable accumulator), Traces -> BlockLog and
Session membership and status. No I/O, no clocks: `analyze` and `run` share it.

Imports: api.
"""
