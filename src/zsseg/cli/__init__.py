"""Command line: `zsseg segment`, `zsseg classify`, `zsseg eval`, `zsseg train proposals|prompts`, `zsseg pseudo-label`, `zsseg prompts select`, ...

Exit status: 0 on success, 1 when some images failed (the others are written), 2 when nothing
could run or an evaluation stopped (bad arguments, vocabulary, model, dataset or output
path). Errors are one line each. `zsseg eval`, `zsseg train ...` and `zsseg pseudo-label` also run under
`torchrun --no-python zsseg ...`.

One module per command (`segment`, `classify`, `evaluate`, `train`, `pseudo_label`, `prompts`, `demo`,
`listings`, `datasets`), each with `add_parser(commands)` and the function it runs; the shared argument
groups are in `arguments`, the models a command builds in `models`, and output checks in
`outputs`.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
import threading

from ..errors import SettingError, StoppedElsewhere, ZssegError
from ..version import __version__
from . import classify, datasets, demo, evaluate, listings, prompts, pseudo_label, segment, train
from .arguments import SETTING_ARGUMENTS
from .outputs import Terminated, interrupted_status, output, terminate


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: the problem, and where the full usage is."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


class _Version(argparse.Action):
    """`--version`, printed like every other output: a full disk (`> /dev/full`) is an error."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            output([f"zsseg {__version__}"])
        except ZssegError as error:
            parser.exit(2, f"zsseg: error: {error}\n")
        parser.exit(0)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="zsseg", description="Open-vocabulary semantic segmentation with CLIP.")
    parser.add_argument("--version", action=_Version, help="print zsseg's version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in (segment, classify, evaluate, train, pseudo_label, prompts, demo, listings, datasets):
        command.add_parser(commands)
    return parser


def flag_names(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, str]:
    """Each setting the library's errors name (`SettingError`) and the flag of the command that
    ran which gives it: the command line speaks in flags, the library in settings."""
    for word in (getattr(args, "command", None), getattr(args, "what", None)):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) and word in action.choices:
                parser = action.choices[word]
                break
    flags = {action.dest: next(o for o in action.option_strings if o.startswith("--"))
             for action in parser._actions if any(o.startswith("--") for o in action.option_strings)}
    for setting, dest in SETTING_ARGUMENTS.items():
        if dest in flags:
            flags[setting] = flags[dest]
    if "mask_fill" in flags:
        flags["crop"] = "--mask-fill, --mask-expand-ratio, --mask-matting and --no-crop-resize"
    return flags


def explained(flags: dict[str, str], error: ZssegError) -> str:
    """`error`'s message in the command line's words: a `SettingError` names the flag."""
    return error.naming(flags) if isinstance(error, SettingError) else str(error)


def main(argv: list[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, terminate)
    parser = _parser()
    args = None
    try:
        args = parser.parse_args(argv)  # inside: `--version | head -0` is a closed pipe too
        args.explain = functools.partial(explained, flag_names(parser, args))  # for the demo's page
        if args.command is None:
            print("zsseg: error: give a command: segment, classify, demo, eval, train, pseudo-label, prompts, vocabularies, datasets or configs (see `zsseg --help`)", file=sys.stderr)
            return 2
        if args.command == "train" and args.what is None:
            print("zsseg train: error: say what to train: `zsseg train proposals ...`, `zsseg train fcn ...` or `zsseg train prompts ...` (see their --help)", file=sys.stderr)
            return 2
        if args.command == "prompts" and args.what is None:
            print("zsseg prompts: error: say what to do: `zsseg prompts select ...` (see `zsseg prompts select --help`)", file=sys.stderr)
            return 2
        return args.run(args)
    except StoppedElsewhere:
        return 2  # another process of the torchrun world printed the error
    except ZssegError as error:
        rank = os.environ.get("RANK") if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None
        message = args.explain(error) if args is not None else str(error)
        print(f"zsseg: error{f' (process {rank})' if rank else ''}: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as error:
        print("zsseg: interrupted" + (" (terminated)" if isinstance(error, Terminated) else ""), file=sys.stderr)
        return interrupted_status(error)
    except BrokenPipeError:
        # The reader of the output has gone (`zsseg vocabularies | head -1`): stop quietly, as
        # Unix tools do. Point stdout at /dev/null so that the final flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, the status of a tool that the signal stopped
