"""`python -m zsseg ...` is the `zsseg` command."""

from .console import run

run()
