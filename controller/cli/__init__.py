"""The command line: argument parsing (main.py), the commands (app.py), `get` and
`describe` with kubectl's conventions, output formats, progress reports, completion.
Nothing below imports it.

Imports: api, logs, analyze, learn, store, index, reconcilers, runtime, top level.
"""
