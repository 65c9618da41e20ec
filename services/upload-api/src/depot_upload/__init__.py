"""Depot upload-api: the HTTP API clients upload through, and its outbox relay."""
