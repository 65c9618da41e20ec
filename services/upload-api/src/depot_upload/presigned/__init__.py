"""Presigned uploads: the bytes go from the client straight to S3, the API verifies them on ``complete``.

``endpoints`` (HTTP) → ``service`` (start, resume: the URLs) and ``completion`` (complete,
abort: verify, then store or fail) → ``ports`` (Protocols), implemented by ``repository``
(PostgreSQL sessions) and ``storage`` (S3 URLs and verification reads); ``domain`` holds
the session, its states and the rules; ``schemas`` the JSON shapes.
"""
