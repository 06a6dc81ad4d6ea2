"""Dispatch: service network, technician assignment, on-site visit, repair, SLA clocks."""
