"""The four Ticketline services, each an independent FastAPI app."""
