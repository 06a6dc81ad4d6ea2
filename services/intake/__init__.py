"""Intake: the call center's HTTP API (ticket received, diagnosed, corrected, read)."""
