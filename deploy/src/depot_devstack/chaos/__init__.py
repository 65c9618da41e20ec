"""``make chaos``: Depot's own fault-injection soak.

Every Depot process runs as a separately supervised child (two upload APIs, two outbox
relays, two indexer consumers, the search API, the compensation worker, the reconciler's
relay), on a private PostgreSQL cluster, a tansu broker and a moto S3 server that this
run owns. Well-behaved clients upload (streamed, batch, presigned single and multipart,
with ``Idempotency-Key`` retries), re-upload duplicates and delete, while a seeded
schedule SIGKILLs processes with requests in flight, pauses S3 and the broker for longer
than the clients' timeouts and crashes PostgreSQL (``pg_ctl stop -m immediate``).

Then everything recovers, one reconcile is applied, the pipeline drains, and the
invariants of docs/invariants.md are checked and printed as one line of numbers::

    acked=412 lost=0 orphans=0 ghost=0 unsearchable=0 pending=0 multipart=0 dlq=0 http5xx=0 findings_after=0

Modules: :mod:`.fleet` (servers and supervised processes), :mod:`.workload` (clients),
:mod:`.faults` (the schedule), :mod:`.invariants` (the final accounting), :mod:`.run`
(one soak from start to verdict).
"""
