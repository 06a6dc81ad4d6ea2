"""Ticketline's common package, in layers; each imports only the layers listed before it.

- ``kernel``: events (envelope, payloads, registry), the ticket's state and lifecycle,
  domain errors, the clock. Pure: no I/O.
- ``eventstore``: the database, the ledger (append, read, verify), outbox relay, Kafka
  topics, leases, the projection runner and its migrations.
- ``readmodels``: read models every service shares (``ticket_state``).
- ``app``: configuration, the platform (composition root), command execution, the
  registry of services, runtime, CLI and the operational tools built on them.
- ``http``: the FastAPI conventions every service shares (auth, problems, idempotency,
  metrics, streams); it may use ``app``'s configuration, platform and executor.
"""
