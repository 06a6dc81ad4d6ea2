"""Domain state shared by several services (pure code, no I/O)."""
