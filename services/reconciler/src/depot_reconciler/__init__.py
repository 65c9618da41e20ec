"""Depot reconciler: proves PostgreSQL, S3 and the search index agree, and repairs drift.

``checks/`` (one module per check, and their registry; the shared streams and merge in
``checks/streams.py``) → ``scan`` (each source read once for its checks) → ``plan``
(persist the run and its findings) → ``apply`` (each check re-checks its findings, then
the compensations go out through ``reconcile.outbox``). ``bootstrap`` wires the
processes; ``cli`` is the operator's entry point, ``api`` the HTTP one.
"""
