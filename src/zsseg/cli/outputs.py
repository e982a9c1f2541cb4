"""What commands print: results on standard output, failures on standard error, and the exit
status of an interrupted command. (Where outputs may go is `zsseg.outputs.safety`'s.)"""

from __future__ import annotations

import sys
from typing import Iterable

from ..errors import ZssegError


def report(failures: list[str]) -> None:
    for failure in failures:
        print(f"zsseg: {failure}", file=sys.stderr)


def output(lines: Iterable[str]) -> None:
    """Print results to standard output. A closed pipe propagates (main stops quietly); any
    other write error (a full disk, `> /dev/full`) is a one-line error."""
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as error:
        raise ZssegError(f"cannot write to standard output: {error.strerror or error}") from None


class Terminated(KeyboardInterrupt):
    """SIGTERM (from `timeout`, a scheduler, `kill`): handled as Ctrl-C is, with status 143."""


def terminate(signum, frame) -> None:
    """The SIGTERM handler: stop as Ctrl-C stops (summaries printed, no half-written file)."""
    raise Terminated


def interrupted_status(error: KeyboardInterrupt) -> int:
    """The exit status of an interrupted command: 143 for SIGTERM, 130 for Ctrl-C."""
    return 143 if isinstance(error, Terminated) else 130
