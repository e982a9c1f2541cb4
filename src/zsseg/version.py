"""The package version, in a module of its own so that any module can import it, and
`zsseg --version`, answered from here before anything heavy (torch) is imported."""

from __future__ import annotations

import os
import sys

__version__ = "0.1.0"


def print_version() -> int:
    """Print "zsseg VERSION" like every other output; return the exit status: 0, 141 when the
    reader has gone (`zsseg --version | head -0`), 2 with a one-line message when standard
    output cannot be written (a full disk, `> /dev/full`)."""
    try:
        sys.stdout.write(f"zsseg {__version__}\n")
        sys.stdout.flush()
        return 0
    except BrokenPipeError:
        status = 141
    except OSError as error:
        print(f"zsseg: error: cannot write to standard output: {error.strerror or error}", file=sys.stderr)
        status = 2
    # What could not be written must not be tried again when Python exits.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return status
