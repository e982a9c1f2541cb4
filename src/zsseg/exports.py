"""Names a package exports from its modules, imported on first use (PEP 562): `import zsseg` and
the `zsseg` command's start stay light, and a Ctrl-C while torch loads is caught (zsseg.console)."""

from __future__ import annotations

import importlib
import sys
from typing import Callable


def lazy(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, whose name N is `exports[N]`'s attribute N (a
    module of the package, relative to it)."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        value = getattr(importlib.import_module(f".{exports[name]}", package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__
