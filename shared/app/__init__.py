"""Configuration, platform, command execution, registry, runtime and CLI."""
