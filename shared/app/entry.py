"""The `ticketline` command's entry point: a stop (Ctrl-C, SIGTERM) while the command's
modules load — seconds on a busy machine — ends it as any stop before a command starts
does (130, 143, one line), not with Python's traceback."""

from __future__ import annotations

import signal
import sys
from types import FrameType


def _stopped(signum: int, _frame: FrameType | None) -> None:
    terminated = signum == signal.SIGTERM
    print(f"ticketline: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
    raise SystemExit(143 if terminated else 130)


def main() -> int:
    held = (signal.SIGINT, signal.SIGTERM)
    before = {s: signal.signal(s, _stopped) for s in held}
    from shared.app.cli import main as command

    for s, handler in before.items():
        signal.signal(s, handler)
    return command()
