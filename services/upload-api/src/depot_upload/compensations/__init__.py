"""The compensation worker: executes the reconciler's orders on upload-api's data (see ``service``).

``service`` (the handlers and the quarantine purge) → ``ports`` (Protocols), implemented
by ``repository`` (PostgreSQL) and ``storage`` (S3); wired in :mod:`depot_upload.bootstrap`.
"""
