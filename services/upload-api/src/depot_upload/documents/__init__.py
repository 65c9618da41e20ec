"""Documents: upload (single and batch), read, list, download and delete.

``endpoints`` (HTTP) → ``service`` (use cases) → ``ports`` (Protocols), implemented by
``repository`` (PostgreSQL) and ``storage`` (S3); ``schemas`` are the JSON shapes.
"""
