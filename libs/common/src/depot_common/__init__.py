"""Depot's shared library: event contracts and thin infrastructure adapters.

Imported by the services, never run on its own (except the ``depot`` developer CLI).
"""
