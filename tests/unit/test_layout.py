"""The layout, kept true: the README's Layout tree names every package and module of app/ (one line each,
nothing that is not there), no module is over 300 lines and no function over 60 (design.md: "a module past
~300 lines is two"). A metric's declaration (`self.x = Counter(...)`, Gauge, Histogram, Summary) does not
count against its function: Metrics declares every metric in one place on purpose. The structure too: a
handful of modules at the top of app/, no import cycle (type-only imports count), every route path written
once, in app/api/routes.py, Settings read only at the wiring point (issue 20); each check is tried against a
small package that breaks it."""

from __future__ import annotations

import ast
import gc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app"
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60
METRIC_TYPES = frozenset({"Counter", "Gauge", "Histogram", "Summary"})


def modules() -> list[Path]:
    return sorted(APP.rglob("*.py"))


def parse(source: str) -> ast.Module:
    """ast.parse with the cyclic GC paused. On CPython 3.11.7 a collection during the building of the tree (run
    by its allocations) can upset the builder's recursion-depth count: SystemError "AST constructor recursion
    depth mismatch" (gh-106905, fixed in 3.11.8), seen here when earlier tests had left garbage behind."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(source)
    finally:
        if enabled:
            gc.enable()


def declares_a_metric(statement: ast.stmt) -> bool:
    value = statement.value if isinstance(statement, ast.Assign | ast.AnnAssign) else None
    return isinstance(value, ast.Call) and getattr(value.func, "id", None) in METRIC_TYPES


def function_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    assert node.end_lineno is not None
    lines = node.end_lineno - node.lineno + 1
    for statement in node.body:
        if declares_a_metric(statement):
            assert statement.end_lineno is not None
            lines -= statement.end_lineno - statement.lineno + 1
    return lines


def test_no_module_is_over_300_lines() -> None:
    long = {str(p.relative_to(APP.parent)): n for p in modules() if (n := len(p.read_text().splitlines())) > 300}
    assert long == {}, f"split these modules (at most {MAX_MODULE_LINES} lines): {long}"


def test_no_function_is_over_60_lines() -> None:
    long = {}
    for path in modules():
        for node in ast.walk(parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and function_lines(node) > MAX_FUNCTION_LINES:
                long[f"{path.relative_to(APP.parent)}:{node.lineno} {node.name}"] = function_lines(node)
    assert long == {}, f"split these functions (at most {MAX_FUNCTION_LINES} lines, metric declarations aside): {long}"


def test_the_check_sees_what_it_measures() -> None:
    """The walk finds the app's modules and counts a long function (so the two tests above can fail)."""
    assert len(modules()) > 40 and any(p.name == "main.py" for p in modules())
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    (node,) = parse(f"def f():\n{body}\n").body
    assert isinstance(node, ast.FunctionDef) and function_lines(node) == 62
    (declared,) = parse('class M:\n    def __init__(self):\n        self.c = Counter(\n"a",\n"b")\n').body
    assert isinstance(declared, ast.ClassDef)
    init = declared.body[0]
    assert isinstance(init, ast.FunctionDef) and function_lines(init) == 1


def readme_tree() -> set[str]:
    """The paths the README's Layout tree names under app/ (packages end in '/'), from its indentation."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("## Layout") :].split("```")[1]
    stack: list[str] = []
    named: set[str] = set()
    for line in block.splitlines():
        if not line.strip():
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        name = line.split()[0]
        stack = stack[:depth]
        if stack and stack[0] == "app/" and not name.startswith("*"):
            named.add("".join(stack[1:]) + name)
        if name.endswith("/"):
            stack.append(name)
    return named


def test_the_readme_layout_names_every_package_and_module() -> None:
    actual = {str(p.relative_to(APP)) for p in modules() if p.name != "__init__.py"}
    actual |= {str(p.relative_to(APP)) + "/" for p in APP.rglob("*") if (p / "__init__.py").is_file()}
    named = readme_tree()
    assert named - actual == set(), "the README's Layout names what app/ does not hold"
    assert actual - named == set(), "add these to the README's Layout tree, one line each"


# The top level of app/ holds a handful of modules (main, cli, service, errors, metrics); every other
# concept lives in a package named by what it is (issue 20).
MAX_TOP_LEVEL_MODULES = 6
ROUTE_TABLE = APP / "api" / "routes.py"
ROUTE_PREFIXES = ("/v1/", "/api/", "/compatible-mode")
OPERATION_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def top_level_modules(app: Path) -> list[str]:
    return sorted(p.name for p in app.glob("*.py") if p.name != "__init__.py")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_module(node: ast.ImportFrom, package: list[str]) -> str:
    """The absolute name of the module `from X import ...` names, in the module of package `package`."""
    base = package[: len(package) - node.level + 1] if node.level else []
    return ".".join([*base, *(node.module.split(".") if node.module else [])])


def imported_at_load(path: Path, root: Path, known: set[str]) -> set[str]:
    """The modules of `known` that `path` imports at module level, also under if/try and `if TYPE_CHECKING:`
    (a type-only import is still a dependency: a cycle through one is a cycle of concepts; break it with a
    protocol or a module that owns the shared type), not those inside functions."""
    name = module_name(path, root)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.ImportFrom):
                mod = imported_module(node, package)
                for alias in node.names:
                    found.add(f"{mod}.{alias.name}" if f"{mod}.{alias.name}" in known else mod)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.If | ast.Try | ast.With):
                for field in ("body", "orelse", "finalbody"):
                    visit(getattr(node, field, []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(parse(path.read_text()).body)
    return found & known


def import_cycles(root: Path, package: str = "app") -> list[list[str]]:
    """Every import cycle among the modules of `package` under `root` (strongly connected components of the
    import graph, Tarjan's algorithm)."""
    paths = {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}
    graph = {m: sorted(imported_at_load(p, root, set(paths))) for m, p in paths.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component or v in graph[v]:
                cycles.append(sorted([v, *component]))

    for v in graph:
        if v not in index:
            connect(v)
    return cycles


# One wiring point: Settings is read where the process is put together (create_app in main.py, app/wiring/,
# the command line) and in its own package; every component takes values (issue 20).
SETTINGS_MODULE = "app.config.settings"
SETTINGS_READERS = ("app.config", "app.wiring", "app.main", "app.cli")


def settings_readers(root: Path, package: str = "app") -> list[str]:
    """The modules outside SETTINGS_READERS that import the name Settings from app/config/settings.py, or
    that module itself (its Settings then within reach), at any depth (functions and TYPE_CHECKING too)."""
    found = []
    for path in sorted((root / package).rglob("*.py")):
        name = module_name(path, root)
        if any(name == r or name.startswith(r + ".") for r in SETTINGS_READERS):
            continue
        package_parts = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                mod = imported_module(node, package_parts)
                targets = {f"{mod}.{alias.name}" for alias in node.names}
                if {SETTINGS_MODULE, f"{SETTINGS_MODULE}.Settings"} & targets:
                    found.append(f"{name}:{node.lineno}")
            elif isinstance(node, ast.Import) and any(a.name == SETTINGS_MODULE for a in node.names):
                found.append(f"{name}:{node.lineno}")
    return found


def route_paths_outside_the_table(app: Path, table: Path) -> list[str]:
    """String literals (docstrings aside) that are a route path or a route prefix, outside the route table."""
    found = []
    for path in sorted(app.rglob("*.py")):
        if path == table:
            continue
        tree = parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                text = node.value
                if text.startswith(ROUTE_PREFIXES) or text in OPERATION_PATHS:
                    found.append(f"{path.relative_to(app.parent)}:{node.lineno} {text!r}")
    return found


def test_the_top_level_of_app_holds_a_handful_of_modules() -> None:
    top = top_level_modules(APP)
    assert len(top) <= MAX_TOP_LEVEL_MODULES, f"put these in a package named by what they hold: {top}"


def test_app_has_no_import_cycle() -> None:
    assert import_cycles(ROOT) == [], "break these import cycles (a protocol, or a module that owns the shared type)"


def test_settings_are_read_only_at_the_wiring_point() -> None:
    assert settings_readers(ROOT) == [], "pass these components values: only create_app and app/wiring read Settings"


def test_route_paths_are_written_only_in_the_route_table() -> None:
    assert route_paths_outside_the_table(APP, ROUTE_TABLE) == [], "name these paths from app/api/routes.py"


def test_the_structure_checks_catch_a_violation(tmp_path: Path) -> None:
    """Each check above, against a small package that breaks it (so the checks can fail)."""
    pkg = tmp_path / "app"
    (pkg / "api").mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""p"""\n')
    (pkg / "api" / "__init__.py").write_text("")
    (pkg / "api" / "routes.py").write_text('HEALTHZ = "/healthz"\n')
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("from .api import routes\nfrom .c import x\n")
    (pkg / "c.py").write_text('from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import b\nx = "/v1/x"\n')
    assert import_cycles(tmp_path) == [["app.b", "app.c"]]  # a type-only import closes a cycle too
    (pkg / "c.py").write_text('x = "/v1/x"\n')
    assert import_cycles(tmp_path) == []
    (pkg / "c.py").write_text('"""/v1/x in a docstring is prose"""\nfrom .a import y\nx = 1\n')
    assert import_cycles(tmp_path) == [["app.a", "app.b", "app.c"]]
    assert route_paths_outside_the_table(pkg, pkg / "api" / "routes.py") == []
    (pkg / "d.py").write_text('def f():\n    return "/api/v1/tasks", "/readyz"\n')
    assert route_paths_outside_the_table(pkg, pkg / "api" / "routes.py") == [
        "app/d.py:2 '/api/v1/tasks'",
        "app/d.py:2 '/readyz'",
    ]
    (pkg / "config").mkdir()
    (pkg / "config" / "__init__.py").write_text("")
    (pkg / "config" / "settings.py").write_text("class Settings: ...\nLEVEL = 1\n")
    (pkg / "config" / "catalog.py").write_text("from .settings import Settings\n")  # its own package may
    (pkg / "api" / "ops.py").write_text("from ..config.settings import LEVEL\n")  # a value of it, not Settings
    assert settings_readers(tmp_path) == []
    (pkg / "api" / "usage.py").write_text("def f():\n    from ..config.settings import LEVEL, Settings\n")
    (pkg / "api" / "jobs.py").write_text("from ..config import settings\n")
    (pkg / "e.py").write_text("import app.config.settings\n")
    assert settings_readers(tmp_path) == ["app.api.jobs:1", "app.api.usage:2", "app.e:1"]
    for i in range(5):
        (pkg / f"m{i}.py").write_text("")
    assert len(top_level_modules(pkg)) == 10 > MAX_TOP_LEVEL_MODULES
