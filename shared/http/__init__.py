"""HTTP conventions shared by every service: problem details, idempotency, context."""
