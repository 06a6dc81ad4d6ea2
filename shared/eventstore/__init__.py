"""Persistence: database, ledger, outbox, leases, projection runner, migrations."""
