"""The compensation worker: executes the reconciler's ``orphan_object``, ``missing_blob`` and ``stale_upload``.

``service`` (the handlers and the quarantine purge) → ``ports`` (Protocols), implemented
by ``repository`` (PostgreSQL) and ``storage`` (S3); wired in :mod:`depot_upload.bootstrap`.
"""
