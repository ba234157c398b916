"""Which source files a `danlu <command>` job runs: the code inputs of its rule.

A rule lists these files as inputs, so editing any of them reruns the rule
(and their digests go into its manifest). They are derived from the code, not
kept by hand: the command's entry function, the functions of its module it
calls, and everything they import within `danlu`, transitively (imports
inside functions included, since commands import their stage lazily), plus
package data files (`*.json`, `*.yaml`) those modules name. Following whole
modules over-approximates (an edit to a function the job never calls reruns
it): a needless rerun costs time, a missed one costs the audit.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

PACKAGE = "danlu"
ROOT = Path(__file__).resolve().parent
_DATA_FILE = re.compile(r"^[\w.-]+\.(json|yaml|yml)$")


def command_entry(command: str) -> tuple[str, str]:
    """(module, function) that `danlu <command>` runs, as the CLI maps it."""
    from danlu.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")  # noqa: SLF001
    if command not in subparsers.choices:
        raise KeyError(f"no danlu command {command!r}")
    module, function = subparsers.choices[command].get_default("func").split(":")
    return module, function


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The source file of a `danlu` module (a package's __init__.py) in the
    package directory `root`, if any."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _imported(node: ast.AST, module: str, root: Path) -> set[tuple[str, str | None]]:
    """What `node` imports from danlu: (module, None) for a whole module,
    (module, name) for a function or class taken from one."""
    found: set[tuple[str, str | None]] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Import):
            found.update((a.name, None) for a in n.names)
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:  # relative: resolve against the importing module's package
                package = module.split(".")[: -n.level]
                base = ".".join([*package, *([base] if base else [])])
            for a in n.names:
                sub = f"{base}.{a.name}"
                found.add((sub, None) if module_file(sub, root) else (base, a.name))
    return {(m, f) for m, f in found if module_file(m, root) is not None}


def _called_functions(tree: ast.Module, entry: str) -> list[ast.AST]:
    """The entry function and the module-level functions it reaches by name."""
    functions = {n.name: n for n in tree.body
                 if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)}
    if entry not in functions:
        raise KeyError(f"no function {entry!r}")
    reached, todo = {}, [entry]
    while todo:
        name = todo.pop()
        if name in reached or name not in functions:
            continue
        reached[name] = functions[name]
        todo.extend(n.id for n in ast.walk(functions[name]) if isinstance(n, ast.Name))
    return list(reached.values())


def _type_checking_only(node: ast.stmt) -> bool:
    """`if TYPE_CHECKING:` (imports for annotations, never run)."""
    return isinstance(node, ast.If) and (
        (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
        or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING"))


def _without_type_checking(tree: ast.Module) -> ast.Module:
    return ast.Module(body=[n for n in tree.body if not _type_checking_only(n)], type_ignores=[])


def _module_level(tree: ast.Module) -> ast.Module:
    """The module without its function and class bodies (what runs on import)."""
    body = [n for n in tree.body
            if not isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and not _type_checking_only(n)]
    return ast.Module(body=body, type_ignores=[])


def _parents(module: str) -> set[str]:
    """Packages whose __init__ runs when `module` is imported."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def _data_files(path: Path) -> set[Path]:
    names = {n.value for n in ast.walk(_tree(path))
             if isinstance(n, ast.Constant) and isinstance(n.value, str)
             and _DATA_FILE.match(n.value)}
    return {path.parent / name for name in names if (path.parent / name).is_file()}


def _runs(module: str, function: str | None, root: Path) -> set[tuple[str, str | None]]:
    """What importing `module` and running `function` in it (or, for None,
    anything in it) imports in turn."""
    tree = _tree(module_file(module, root))
    if function is None:
        return _imported(_without_type_checking(tree), module, root)
    try:
        called = _called_functions(tree, function)
    except KeyError:  # a constant or a name re-exported from elsewhere: the whole module
        return _imported(_without_type_checking(tree), module, root)
    return _imported(_module_level(tree), module, root) | {
        item for f in called for item in _imported(f, module, root)}


def closure(module: str, function: str | None = None, root: Path = ROOT) -> set[Path]:
    """Source and data files that `module` (or only `function` in it and what it
    calls) runs, following danlu imports transitively, function by function
    where an import names a function."""
    if module_file(module, root) is None:
        raise KeyError(f"no danlu module {module!r}")
    seen: set[tuple[str, str | None]] = set()
    todo = [(module, function)]
    while todo:
        item = todo.pop()
        if item in seen:
            continue
        seen.add(item)
        todo.extend((parent, None) for parent in _parents(item[0]))
        todo.extend(_runs(*item, root))
    files = {module_file(m, root) for m, _ in seen}
    for f in list(files):
        files |= _data_files(f)
    return files


def command_code(command: str, project_root: Path) -> list[str]:
    """The code inputs of a rule that runs `danlu <command>`: sorted paths,
    relative to the working directory where they lie below it. The package's
    source is `project_root/src/danlu` where there is one (a clone, installed
    editable), else the installed package, which is then what runs."""
    local = Path(project_root).resolve() / "src" / PACKAGE
    root = local if (local / "__init__.py").is_file() else ROOT
    here = Path.cwd().resolve()
    files = closure(*command_entry(command), root=root)
    return sorted(f.relative_to(here).as_posix() if f.is_relative_to(here) else f.as_posix()
                  for f in files)
