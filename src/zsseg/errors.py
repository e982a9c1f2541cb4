"""The one exception type that zsseg raises for bad input or unavailable resources.

Its message is a single line meant for the user: the command line prints it as is, with no
traceback. Programming errors inside zsseg stay ordinary Python exceptions.
"""


class ZssegError(Exception):
    """A user-facing failure: bad input, a missing model, an unwritable folder."""


class StoppedElsewhere(ZssegError):
    """Another process of a torchrun world failed and printed why; this one stops without
    repeating it (the command line prints nothing for it, and exits with status 2)."""


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """"1 image", "2 images": a count with its noun in the right number, for messages."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"
