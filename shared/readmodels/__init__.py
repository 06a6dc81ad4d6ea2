"""Read models shared by every service."""
