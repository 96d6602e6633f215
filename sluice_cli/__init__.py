"""`sluice`: the command-line client of a Sluice server (workflows as code, runs, dead letters).

It talks to the server over the REST API only (SLUICE_URL and SLUICE_TOKEN, or what
`sluice login` stored). The one exception is `sluice validate`, which runs the server's own
validator (orchestrator.spec) offline. Modules import their heavy dependencies (httpx, PyYAML,
the validator) inside the functions that need them, so `sluice --help` starts at once.
"""

__version__ = "0.1.0"
