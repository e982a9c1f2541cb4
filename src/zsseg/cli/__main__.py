"""`python -m zsseg.cli`: the command line (the `zsseg` command's entry point, `zsseg.console`)."""

from ..console import run

run()
