"""Imports point one way: the layer table of docs/architecture.md, read from the document itself,
against every import in src/hepta (those inside functions too), found with `ast`.

A unit is a package of src/hepta (`serve/`) or a top-level module (`cli.py`, `__init__.py`).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "hepta"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
TORCH_FREE_UNITS = ("live/",)
INDENT = "\n  "


@dataclass(frozen=True)
class Layer:
    unit: str
    may_import: frozenset[str] | None  # None: everything below


@dataclass(frozen=True)
class Import:
    module: str  # dotted name of the importing module
    line: int
    target: str  # dotted name of what it imports (a module, or a package for `from pkg import name`)
    source_unit: str
    target_unit: str

    def describe(self) -> str:
        return f"{self.module} (line {self.line}) imports {self.target}"


# --- the document -------------------------------------------------------------------------------


def read_layers(markdown: str) -> list[Layer]:
    """The rows of the table in the "## Layers" section, top layer first."""
    section = re.search(r"^## Layers\n(.*?)(?=^## |\Z)", markdown, re.S | re.M)
    assert section, "docs/architecture.md has no '## Layers' section"
    rows = [line for line in section.group(1).splitlines() if line.startswith("|")]
    assert len(rows) > 2, "the '## Layers' section of docs/architecture.md has no table"
    layers = []
    for row in rows[2:]:  # after the header and its |---| line
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        unit = re.match(r"`([^`]+)`", cells[0])
        assert unit and len(cells) == 3, f"a row of the layer table is not `unit` | concern | may import: {row}"
        allowed = cells[2]
        if allowed == "everything below":
            may_import = None
        elif allowed == "nothing":
            may_import = frozenset()
        else:
            may_import = frozenset(re.findall(r"`([^`]+)`", allowed))
            assert may_import, f"the 'may import' cell of {unit.group(1)} names no unit: {allowed!r}"
        layers.append(Layer(unit.group(1), may_import))
    return layers


def doc_problems(layers: list[Layer], units: set[str]) -> list[str]:
    """The table must list each unit of the source once, and a row may only allow units below it."""
    names = [layer.unit for layer in layers]
    problems = [f"the layer table lists {u} more than once" for u in sorted({u for u in names if names.count(u) > 1})]
    problems += [f"{u} is in src/hepta but not in the layer table; add a row in layer order" for u in sorted(units - set(names))]
    problems += [f"the layer table lists {u}, which is not in src/hepta" for u in sorted(set(names) - units)]
    for i, layer in enumerate(layers):
        for allowed in sorted(layer.may_import or ()):
            if allowed not in names[i + 1:]:
                problems.append(f"the row of {layer.unit} allows {allowed}, which is not below it in the table")
    return problems


# --- the source ---------------------------------------------------------------------------------


def module_name(path: Path, source: Path) -> str:
    parts = (source.name, *path.relative_to(source).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str, source: Path) -> str:
    """`hepta.serve.app` -> `serve/`, `hepta.cli` -> `cli.py`, `hepta` -> `__init__.py`."""
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__.py"
    return f"{parts[1]}/" if (source / parts[1]).is_dir() else f"{parts[1]}.py"


def _is_module(dotted: str, source: Path) -> bool:
    relative = Path(*dotted.split(".")[1:])
    return (source / relative).with_suffix(".py").is_file() or (source / relative / "__init__.py").is_file()


def _targets(node: ast.AST, module: str, is_package: bool, source: Path) -> list[str]:
    """Dotted names of the project's modules an import node (or `importlib.import_module("...")`) loads."""
    top = source.name
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[:len(package) - (node.level - 1)]
            base = ".".join(package + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        if base != top and not base.startswith(top + "."):
            return []
        # `from hepta.serve import cli` imports the module hepta.serve.cli; `from hepta.x import name` the module x
        return [f"{base}.{a.name}" if _is_module(f"{base}.{a.name}", source) else base for a in node.names]
    if (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
        return [node.args[0].value]
    return []


def project_imports(source: Path) -> list[Import]:
    """Every import from one unit of the package into another, with the line it is on."""
    found = []
    for path in sorted(source.rglob("*.py")):
        module = module_name(path, source)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            for target in dict.fromkeys(_targets(node, module, path.name == "__init__.py", source)):
                if target != source.name and not target.startswith(source.name + "."):
                    continue
                source_unit, target_unit = unit_of(module, source), unit_of(target, source)
                if source_unit != target_unit:
                    found.append(Import(module, node.lineno, target, source_unit, target_unit))
    return found


def external_imports(source: Path, unit: str, top_level: str) -> list[str]:
    """`module (line n) imports torch...` for each import of package `top_level` in `unit`."""
    folder = source / unit.rstrip("/")
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and not node.level and node.module else [])
            found += [f"{module_name(path, source)} (line {node.lineno}) imports {n}" for n in names
                      if n == top_level or n.startswith(top_level + ".")]
    return found


def source_units(source: Path) -> set[str]:
    return {f"{p.name}/" for p in source.iterdir() if (p / "__init__.py").is_file()} | \
           {p.name for p in source.glob("*.py")}


# --- the rules ----------------------------------------------------------------------------------


def order_violations(imports: list[Import], layers: list[Layer]) -> list[str]:
    position = {layer.unit: i for i, layer in enumerate(layers)}
    by_unit = {layer.unit: layer for layer in layers}
    problems = []
    for imp in imports:
        if imp.source_unit not in position or imp.target_unit not in position:
            continue  # reported by doc_problems
        layer = by_unit[imp.source_unit]
        if position[imp.target_unit] <= position[imp.source_unit]:
            problems.append(f"{imp.describe()}: {imp.target_unit} stands above {imp.source_unit} in the layer table "
                            f"of docs/architecture.md, and imports point downward only")
        elif layer.may_import is not None and imp.target_unit not in layer.may_import:
            allowed = ", ".join(sorted(layer.may_import)) or "nothing of hepta"
            problems.append(f"{imp.describe()}: the row of {imp.source_unit} in docs/architecture.md allows "
                            f"{allowed}, not {imp.target_unit}")
    return problems


def command_module_violations(imports: list[Import], top_level_cli: str = "cli.py") -> list[str]:
    """A command module of a package is imported only within that package and by the top-level CLI."""
    problems = []
    for imp in imports:
        leaf = imp.target.rsplit(".", 1)[-1]
        is_command = imp.target_unit.endswith("/") and (leaf == "cli" or leaf.endswith("_cli") or leaf.startswith("cli_"))
        if is_command and imp.source_unit != top_level_cli:
            problems.append(f"{imp.describe()}: {imp.target} is a command module, which only {top_level_cli} "
                            f"imports; move what both need below both (see docs/architecture.md)")
    return problems


def unit_cycles(imports: list[Import]) -> list[str]:
    """Each strongly connected group of units (Tarjan), shown as a loop with one import per step."""
    edges: dict[str, dict[str, Import]] = {}
    for imp in imports:
        edges.setdefault(imp.source_unit, {}).setdefault(imp.target_unit, imp)
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(unit: str) -> None:
        index[unit] = low[unit] = len(index)
        stack.append(unit)
        on_stack.add(unit)
        for nxt in edges.get(unit, {}):
            if nxt not in index:
                visit(nxt)
                low[unit] = min(low[unit], low[nxt])
            elif nxt in on_stack:
                low[unit] = min(low[unit], index[nxt])
        if low[unit] == index[unit]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == unit:
                    break
            if len(group) > 1:
                groups.append(set(group))

    for unit in sorted(edges):
        if unit not in index:
            visit(unit)
    problems = []
    for group in groups:
        steps = [imp for src in sorted(group) for dst, imp in edges[src].items() if dst in group]
        problems.append(f"cycle between {', '.join(sorted(group))}:" + "".join(
            f"{INDENT}  {imp.describe()}" for imp in steps))
    return problems


def layer_problems(source: Path, markdown: str) -> list[str]:
    layers = read_layers(markdown)
    imports = project_imports(source)
    problems = doc_problems(layers, source_units(source))
    problems += order_violations(imports, layers)
    problems += command_module_violations(imports)
    problems += unit_cycles(imports)
    for unit in TORCH_FREE_UNITS:
        problems += [f"{line}: {unit} imports no torch (docs/architecture.md)"
                     for line in external_imports(source, unit, "torch")]
    return problems


# --- on the project -------------------------------------------------------------------------------


def test_every_import_of_hepta_follows_the_layer_table_of_the_architecture_document():
    problems = layer_problems(SOURCE, ARCHITECTURE.read_text(encoding="utf-8"))
    assert not problems, "imports against docs/architecture.md:" + "".join(INDENT + p for p in problems)


def test_the_table_is_read_in_order_with_what_each_row_allows():
    layers = read_layers(ARCHITECTURE.read_text(encoding="utf-8"))
    names = [layer.unit for layer in layers]
    # the order DESIGN.md gives, cli > serve > infer > train > scale > interop > model > config
    chain = ["cli.py", "serve/", "infer/", "train/", "scale/", "interop/", "model/", "config/"]
    assert [names.index(u) for u in chain] == sorted(names.index(u) for u in chain)
    by_unit = {layer.unit: layer.may_import for layer in layers}
    assert by_unit["live/"] == {"errors.py"} and by_unit["cli.py"] is None and by_unit["errors.py"] == frozenset()


def test_imports_inside_functions_are_found():
    imports = project_imports(SOURCE)
    # cli.py imports the training loop only when `hepta train` runs
    assert any(i.module == "hepta.cli" and i.target == "hepta.train.loop" for i in imports)
    assert any(i.module == "hepta.cli" and i.target == "hepta.train.cli" for i in imports)


# --- the check fails on broken trees (a synthetic package in tmp_path) ------------------------------

SYNTHETIC_DOC = """# synthetic

## Layers

| unit | one concern | may import |
|---|---|---|
| `cli.py` | commands | everything below |
| `__init__.py` | public names | everything below |
| `serve/` | HTTP | everything below |
| `live/` | posts | `errors.py` |
| `train/` | training | everything below |
| `scale/` | arithmetic | `errors.py` |
| `errors.py` | errors | nothing |

## Next
"""


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    source = tmp_path / "hepta"
    for name, text in {"__init__.py": "", "errors.py": "", "cli.py": "", "live/__init__.py": "",
                       "live/cli.py": "", "serve/__init__.py": "", "train/__init__.py": "", "scale/__init__.py": "", **files}.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(text)
    return source


def test_a_tree_that_follows_the_table_passes(tmp_path):
    source = _tree(tmp_path, {"train/loop.py": "from hepta.scale import plan\nfrom hepta import errors\n",
                              "scale/plan.py": "from hepta.errors import HeptaError\n",
                              "cli.py": "def main():\n    from hepta.live import cli\n"})
    assert layer_problems(source, SYNTHETIC_DOC) == []


def test_an_upward_lazy_import_a_cycle_and_a_forbidden_unit_are_each_named_with_the_rule(tmp_path):
    source = _tree(tmp_path, {
        "train/loop.py": "from hepta.scale.memory import FP32\n",
        "scale/memory.py": "FP32 = 4\n\ndef measure():\n    from hepta.train import loop  # lazy, still counts\n",
        "live/ingest.py": "from ..train.loop import run\nimport torch\n",
    })
    problems = layer_problems(source, SYNTHETIC_DOC)
    print("\n".join(problems))
    assert len(problems) == 4
    text = "\n".join(problems)
    assert ("hepta.scale.memory (line 4) imports hepta.train.loop: train/ stands above scale/ in the layer table"
            in text)
    assert "hepta.live.ingest (line 1) imports hepta.train.loop: the row of live/ in docs/architecture.md allows " \
           "errors.py, not train/" in text
    assert "cycle between scale/, train/:" in text and "hepta.train.loop (line 1) imports hepta.scale.memory" in text
    assert "hepta.live.ingest (line 2) imports torch: live/ imports no torch" in text


def test_a_command_module_imported_by_another_layer_is_named(tmp_path):
    source = _tree(tmp_path, {"live/cli.py": "def parse_duration(text): ...\n",
                              "serve/routes.py": "from hepta.live.cli import parse_duration\n"})
    assert layer_problems(source, SYNTHETIC_DOC) == [
        "hepta.serve.routes (line 1) imports hepta.live.cli: hepta.live.cli is a command module, which only cli.py "
        "imports; move what both need below both (see docs/architecture.md)"]


@pytest.mark.parametrize("old, new, problem", [
    ("| `scale/` | arithmetic | `errors.py` |", "| `scale/` | arithmetic | `train/` |",
     "the row of scale/ allows train/, which is not below it in the table"),
    ("| `__init__.py` | public names | everything below |\n", "",
     "__init__.py is in src/hepta but not in the layer table; add a row in layer order"),
    ("| `errors.py` | errors | nothing |", "| `errors.py` | errors | nothing |\n| `gone/` | - | nothing |",
     "the layer table lists gone/, which is not in src/hepta"),
])
def test_a_table_that_misses_a_unit_or_contradicts_itself_is_named(tmp_path, old, new, problem):
    assert problem in layer_problems(_tree(tmp_path, {}), SYNTHETIC_DOC.replace(old, new))


def test_a_may_import_cell_that_names_no_unit_is_refused():
    doc = SYNTHETIC_DOC.replace("| `scale/` | arithmetic | `errors.py` |", "| `scale/` | arithmetic | the rest |")
    with pytest.raises(AssertionError, match="the 'may import' cell of scale/ names no unit"):
        read_layers(doc)
