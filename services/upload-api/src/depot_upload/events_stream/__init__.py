"""``GET /v1/events``: each owner's document events, live, as Server-Sent Events (docs/api.md; README "Live events").

:mod:`.feed` reads ``depot.documents.v1`` and ``depot.index.v1`` from their end (no consumer
group: every replica sees every event) and hands each event to :class:`.service.EventHub`,
which fans it out to the connected streams of its owner; :mod:`.endpoints` is the route.
"""
