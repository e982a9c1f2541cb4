"""The package's layers point one way: no import cycle inside `zsseg`, and the lower layers
never import the higher ones. Read from the source with `ast`, so every import counts: at module
level, inside functions, and under `TYPE_CHECKING`."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "zsseg"

# Modules that must not import (directly or not) from the modules named after them.
FORBIDDEN = {
    "zsseg.training.loop": ("zsseg.evaluation.runner", "zsseg.training.self_training", "zsseg.segmenter", "zsseg.methods", "zsseg.cli"),
    "zsseg.training.proposals": ("zsseg.evaluation.runner", "zsseg.training.self_training", "zsseg.segmenter", "zsseg.methods"),
    "zsseg.networks.fcn": ("zsseg.evaluation.runner", "zsseg.training.self_training", "zsseg.segmenter", "zsseg.methods"),
    "zsseg.training.prompt_learning": ("zsseg.evaluation.runner", "zsseg.training.self_training", "zsseg.segmenter", "zsseg.methods"),
    "zsseg.segmenter": ("zsseg.evaluation.runner", "zsseg.training.self_training", "zsseg.cli", "zsseg.demo"),
    # The configuration describes the stages; it builds nothing, runs nothing.
    "zsseg.config": ("zsseg.segmenter", "zsseg.evaluation.runner", "zsseg.runs.folder", "zsseg.training", "zsseg.cli", "zsseg.demo"),
    "zsseg.methods": ("zsseg.segmenter", "zsseg.config", "zsseg.evaluation.runner", "zsseg.runs.folder", "zsseg.cli"),
    "zsseg.proposals": ("zsseg.methods", "zsseg.segmenter", "zsseg.config", "zsseg.evaluation.runner", "zsseg.cli"),
    "zsseg.classification.regions": ("zsseg.proposals", "zsseg.methods", "zsseg.segmenter", "zsseg.config", "zsseg.cli"),
    "zsseg.runs.folder": ("zsseg.evaluation.runner", "zsseg.training.loop", "zsseg.training.self_training", "zsseg.cli", "zsseg.demo"),
    "zsseg.evaluation.runner": ("zsseg.training.loop", "zsseg.training.self_training", "zsseg.cli", "zsseg.demo"),
    "zsseg.data.datasets": ("zsseg.evaluation.runner", "zsseg.segmenter", "zsseg.networks.maskformer", "zsseg.proposals"),
    # The model interface knows no family's loader; the families know no loader but their own.
    "zsseg.models.base": ("zsseg.models.loading", "zsseg.models.openai_clip", "zsseg.models.resnet_clip", "zsseg.models.siglip"),
    "zsseg.models.resnet_clip": ("zsseg.models.loading", "zsseg.models.openai_clip", "zsseg.models.siglip"),
    "zsseg.models.siglip": ("zsseg.models.loading", "zsseg.models.openai_clip", "zsseg.models.resnet_clip"),
}


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """zsseg module -> the zsseg modules it imports."""
    modules = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            graph[name] |= {c for c in candidates if c in modules and c != name}
    return graph


def unresolved_imports(root: Path = PACKAGE) -> list[str]:
    """`from zsseg.X import name` (relative or absolute, at module level or inside functions) where
    zsseg.X is not a module of the package or has no `name`: a function-level one fails only when
    it runs. The modules are imported, so a name counts wherever the module defines it."""
    import importlib

    bad = []
    for path in sorted(root.rglob("*.py")):
        name = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        package = name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").split(".")[0] == root.name:
                target = node.module
            else:
                continue
            where = f"{path.relative_to(root.parent)}:{node.lineno}"
            try:
                module = importlib.import_module(target)
            except ImportError as error:
                bad.append(f"{where}: {target} ({error})")
                continue
            for alias in node.names:
                if alias.name != "*" and not hasattr(module, alias.name) and not _is_module(f"{target}.{alias.name}"):
                    bad.append(f"{where}: {target} has no {alias.name}")
    return bad


def _is_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # the parent is a module, not a package
        return False


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for other in graph[todo.pop()] - seen:
            seen.add(other)
            todo.append(other)
    return seen


def test_every_relative_import_resolves():
    assert unresolved_imports() == []


def test_no_import_cycle_inside_the_package():
    assert cycles(import_graph()) == []


def test_lower_layers_never_reach_higher_ones():
    graph = import_graph()
    for module, higher in FORBIDDEN.items():
        assert module in graph, module
        reached = reachable(graph, module)
        bad = sorted(m for m in reached if any(m == h or m.startswith(h + ".") for h in higher))
        assert not bad, f"{module} reaches {bad}"


def test_the_checks_see_a_cycle_and_a_reversed_layer(tmp_path):
    """A package with a cycle hidden in a function-level import is caught."""
    root = tmp_path / "zsseg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("")
    (root / "a.py").write_text("from .sub import b\n")
    (root / "sub" / "b.py").write_text("def f():\n    from ..a import thing\n")
    (root / "c.py").write_text("import zsseg.a\n")
    graph = import_graph(root)
    assert cycles(graph) == [["zsseg.a", "zsseg.sub.b"]]
    assert reachable(graph, "zsseg.c") == {"zsseg.a", "zsseg.sub", "zsseg.sub.b"}


def test_the_check_sees_a_name_a_module_lacks(tmp_path, monkeypatch):
    """What the CLI package's split once left: `from .prompts import f` inside zsseg.cli resolved
    to zsseg.cli.prompts, a module that exists but has no f."""
    root = tmp_path / "pkgcheck"
    (root / "cli").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "prompts.py").write_text("def f():\n    pass\n")
    (root / "cli" / "__init__.py").write_text("")
    (root / "cli" / "prompts.py").write_text("def run():\n    from .prompts import f\n    from ..prompts import f as g\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert unresolved_imports(root) == ["pkgcheck/cli/prompts.py:2: pkgcheck.cli.prompts has no f"]


# --- the shape of the code -----------------------------------------------------------------------

FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _message_strings(tree: ast.AST):
    """The text of each argument of what a module raises or constructs as an error or warning
    (`raise X(...)`, any `...Error(...)` call, `log.warning` / `warn`), with "{}" for the values
    formatted into it."""
    calls = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            calls[id(node.exc)] = node.exc
        elif isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name.endswith(("Error", "Unusable")) or name in ("warning", "warn", "refused"):
                calls[id(node)] = node
    for call in calls.values():
        for argument in [*call.args, *(k.value for k in call.keywords)]:
            pieces = [p.value if isinstance(p, ast.Constant) and isinstance(p.value, str) else "{}"
                      for p in ast.walk(argument) if isinstance(p, (ast.Constant, ast.FormattedValue))]
            if any(piece != "{}" for piece in pieces):
                yield argument.lineno, "".join(pieces)


def test_the_library_speaks_in_settings_not_flags():
    """Outside `zsseg.cli`, no error or warning names a command-line flag: the library names its
    settings (`SettingError`) and the command line translates them. (A command of another tool,
    `hf download ... --local-dir DIR`, is what to type, not one of zsseg's flags.)"""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "cli" in path.relative_to(PACKAGE).parts:
            continue
        for line, text in _message_strings(ast.parse(path.read_text(encoding="utf-8"))):
            flags = [f for f in FLAG.findall(text) if not (f == "--local-dir" and "hf download" in text)]
            if flags:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {flags}")
    assert found == []


def test_no_function_is_longer_than_80_lines():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80:
                long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert long == []


def test_the_message_check_sees_a_flag(tmp_path):
    source = 'def f(x):\n    raise ZssegError(f"{x} is bad; pass --max-masks to raise it")\n'
    assert [FLAG.findall(text) for _, text in _message_strings(ast.parse(source))] == [["--max-masks"]]
