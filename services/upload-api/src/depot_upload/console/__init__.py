"""The web console (README, "Web console"): static files the upload API serves at ``/``.

The console is plain files in ``static/`` (one HTML page, one ES module, one style sheet,
and the hash-wasm file ``make console`` copies into ``static/vendor/``); it calls only the
public HTTP APIs. :mod:`depot_upload.console.endpoints` serves them with a strict
Content-Security-Policy and tells the browser where the search and reconciler APIs are.
"""

from depot_upload.console.endpoints import ConsoleConfig, mount_console

__all__ = ["ConsoleConfig", "mount_console"]
