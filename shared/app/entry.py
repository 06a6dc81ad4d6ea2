"""The `ticketline` command's entry point: a stop (Ctrl-C, SIGTERM) while the command's
modules load — seconds on a busy machine — ends it as any stop before a command starts
does (130, 143, one line), not with Python's traceback."""

from __future__ import annotations

import signal
import sys
from types import FrameType


def stopped(terminated: bool) -> int:
    """Says that the command was stopped before its work: its exit code (SIGTERM 143,
    Ctrl-C 130), also for ``cli.main``'s stops."""
    print(f"ticketline: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
    return 143 if terminated else 130


def _stopped(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(stopped(signum == signal.SIGTERM))


def main() -> int:
    held = (signal.SIGINT, signal.SIGTERM)
    before = {s: signal.signal(s, _stopped) for s in held}
    from shared.app.cli import main as command

    for s, handler in before.items():
        signal.signal(s, handler)
    return command()
