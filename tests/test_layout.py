"""The layout of the package: its modules import one another along the pipeline, never in a
cycle (imports inside functions count as much as those at the top), and no module reaches into
another's private names.  Read from the source with ``ast``; nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "einderiv"

#: The modules of matrix notation, in their subpackage.
MATRIX_MODULES = ("form", "reading", "syntax", "translate", "tree")

#: (module, module it must not depend on, even through others): the pipeline read downwards.
#: The text's front end knows nothing of the normal form; the normal form nothing of the text,
#: of lowering, printing or differentiation; lowering nothing of differentiation or printing.
UPSTREAM = (
    ("glyphs", "ir"),
    ("ir", "elementwise"),
    ("ir", "parser"),
    ("parser", "normal"),
    ("parser", "lower"),
    ("render", "normal"),
    ("elementwise", "parser"),
    ("normal", "parser"),
    ("normal", "rewrites"),
    ("normal", "lower"),
    ("normal", "printing"),
    ("normal", "differentiate"),
    ("rewrites", "lower"),
    ("rewrites", "printing"),
    ("lower", "printing"),
    ("lower", "differentiate"),
    ("differentiate", "program"),
    ("differentiate", "functions"),
    ("matrix.tree", "normal"),
    ("matrix.syntax", "normal"),
    ("program", "api"),
    ("api", "gradients"),
    ("gradients", "products"),
)


def module_name(path: Path) -> str:
    parts = ["einderiv", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(module: str, node: ast.Import | ast.ImportFrom) -> list[tuple[ast.alias, str, str | None]]:
    """``(alias, module, name)`` for each einderiv module that ``node`` imports (``name``: the name
    taken from it, None for a whole module)."""
    if isinstance(node, ast.Import):
        return [(alias, alias.name, None) for alias in node.names if alias.name.split(".")[0] == "einderiv"]
    if node.level:
        base = module.split(".")
        if MODULES[module].name != "__init__.py":
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join([*base, node.module] if node.module else base)
    else:
        source = node.module or ""
    if source.split(".")[0] != "einderiv":
        return []
    out = []
    for alias in node.names:
        submodule = f"{source}.{alias.name}"
        out.append((alias, submodule, None) if submodule in MODULES else (alias, source, alias.name))
    return out


def imports() -> dict[str, list[tuple[str, str | None, int]]]:
    """module -> ``(module imported, name, line)`` for every import in it, at the top or nested."""
    out: dict[str, list[tuple[str, str | None, int]]] = {}
    for module, path in MODULES.items():
        found = out.setdefault(module, [])
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.extend((target, name, node.lineno) for _, target, name in imported(module, node))
    return out


def graph() -> dict[str, set[str]]:
    return {module: {target for target, _, _ in found if target != module} for module, found in imports().items()}


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    stack = [start]
    while stack:
        for target in edges.get(stack.pop(), ()):
            if target not in seen:
                seen.add(target)
                stack.append(target)
    return seen


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle of imports as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(edges):
        if module not in state:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def test_every_import_names_a_module_of_the_package():
    unknown = [
        (module, target) for module, found in imports().items() for target, _, _ in found if target not in MODULES
    ]
    assert not unknown


def test_the_modules_import_one_another_without_a_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_imports_follow_the_pipeline():
    edges = graph()
    for upstream, downstream in UPSTREAM:
        upstream, downstream = f"einderiv.{upstream}", f"einderiv.{downstream}"
        assert upstream in MODULES, f"no module {upstream}"
        assert downstream in MODULES, f"no module {downstream}"
        assert downstream not in reachable(edges, upstream), f"{upstream} depends on {downstream}"


def test_no_module_takes_a_private_name_from_another():
    private = [
        f"{module}:{line} imports {name} from {target}"
        for module, found in imports().items()
        for target, name, line in found
        if name is not None and name.startswith("_") and not name.startswith("__")
    ]
    assert not private


def test_no_module_reads_a_private_name_of_a_module_it_imports():
    """``from . import render`` then ``render._name`` is a private name taken all the same."""
    private = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias, target, name in imported(module, node):
                    if name is None and target != module:
                        aliases[alias.asname or alias.name.split(".")[0]] = target
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                private.append(f"{module}:{node.lineno} reads {aliases[node.value.id]}.{node.attr}")
    assert not private


def test_matrix_notation_lives_in_its_subpackage():
    assert not sorted(PACKAGE.glob("matrix_*.py"))
    assert (PACKAGE / "matrix" / "__init__.py").is_file()
    for name in MATRIX_MODULES:
        assert f"einderiv.matrix.{name}" in MODULES, name
    imported_modules = {target for found in imports().values() for target, _, _ in found}
    assert not {m for m in imported_modules if m.startswith("einderiv.matrix_")}
