"""The layout, kept true: the README's Layout tree names every package and module of app/ (one line each,
nothing that is not there), no module is over 300 lines and no function over 60 (design.md: "a module past
~300 lines is two"). A metric's declaration (`self.x = Counter(...)`, Gauge, Histogram, Summary) does not
count against its function: Metrics declares every metric in one place on purpose."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app"
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60
METRIC_TYPES = frozenset({"Counter", "Gauge", "Histogram", "Summary"})


def modules() -> list[Path]:
    return sorted(APP.rglob("*.py"))


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
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and function_lines(node) > MAX_FUNCTION_LINES:
                long[f"{path.relative_to(APP.parent)}:{node.lineno} {node.name}"] = function_lines(node)
    assert long == {}, f"split these functions (at most {MAX_FUNCTION_LINES} lines, metric declarations aside): {long}"


def test_the_check_sees_what_it_measures() -> None:
    """The walk finds the app's modules and counts a long function (so the two tests above can fail)."""
    assert len(modules()) > 40 and any(p.name == "main.py" for p in modules())
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    (node,) = ast.parse(f"def f():\n{body}\n").body
    assert isinstance(node, ast.FunctionDef) and function_lines(node) == 62
    (declared,) = ast.parse('class M:\n    def __init__(self):\n        self.c = Counter(\n"a",\n"b")\n').body
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
