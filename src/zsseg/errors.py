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


def one_line(error: BaseException, limit: int = 200) -> str:
    """An exception's message for a one-line error: its first non-empty line (and the next, where
    the first ends in a colon), terminal colour codes removed, cut at a word (with "...") past
    `limit` characters; its type's name where it has no message."""
    import re

    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(error)).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    text = lines[0]
    if isinstance(error, LookupError):  # KeyError('gelu_x') says only 'gelu_x'
        text = f"{type(error).__name__}: {text}"
    if text.endswith((":", ",")) and len(lines) > 1:  # "Class validation error for ...:" then what failed
        text = f"{text} {lines[1]}"
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(" ,;:(")
    return f"{cut}..."


class SettingError(ZssegError):
    """A setting that is out of range or does not apply here. The message names the setting as
    the Python API does (`ensemble_weight`, or `ensemble.weight` in a configuration file); the
    command line shows the flag instead (`zsseg.cli`), so each layer speaks its caller's words.

    Args:
        setting: the setting's name.
        template: the message, with "{setting}" where the name goes, and "{NAME}" where each
            of `others` goes (other settings the message names, as in "resume with {setting}
            500, or use a new {output_dir}"). Other braces are left as they are.
        others: the names of those other settings.
    """

    def __init__(self, setting: str, template: str, *others: str):
        self.setting, self.template, self.others = setting, template, others
        super().__init__(self.naming({}))

    def naming(self, names: dict[str, str]) -> str:
        """The message with each setting called by `names[setting]` (a flag) where it has one."""
        text = self.template.replace("{setting}", names.get(self.setting, self.setting))
        for other in self.others:
            text = text.replace("{" + other + "}", names.get(other, other))
        return text
