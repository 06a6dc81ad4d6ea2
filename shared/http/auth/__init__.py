"""Authentication shared by every service: JWT bearer tokens and machine API keys
(``tokens``), and the personal-data rules (``personal_data``)."""
