"""The command line is an edge: experiments, benchmarks and other tests use the library, and
the CLI only through its entry points; the data modules do not import each other in a circle."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENTRY_POINTS = {"main", "build_parser"}
"""What a test outside the CLI's own may use of ``zylax.cli``: running the command."""
CLI_TESTS = {"test_cli.py"}


def _cli_uses(path: pathlib.Path) -> tuple[bool, set[str]]:
    """(whether ``path`` imports ``zylax.cli``, the attributes it reads from ``cli``)."""
    tree = ast.parse(path.read_text(), str(path))
    imported = False
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "zylax" and any(
                alias.name == "cli" for alias in node.names):
            imported = True
        elif isinstance(node, ast.ImportFrom) and node.module == "zylax.cli":
            imported = True
        elif isinstance(node, ast.Import) and any(a.name == "zylax.cli" for a in node.names):
            imported = True
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name) and node.value.id == "cli"}
    used |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
             and isinstance(node.value, ast.Attribute) and node.value.attr == "cli"}
    return imported, used


def test_experiments_and_benchmarks_never_import_the_cli():
    offenders = [str(p.relative_to(ROOT)) for folder in ("experiments", "benchmarks", "scripts")
                 for p in sorted((ROOT / folder).rglob("*.py")) if _cli_uses(p)[0]]
    assert offenders == []


def test_other_tests_run_the_cli_only_through_its_entry_points():
    misuse = {}
    for path in sorted((ROOT / "tests").glob("*.py")):
        if path.name in CLI_TESTS:
            continue
        imported, used = _cli_uses(path)
        if imported and used - ENTRY_POINTS:
            misuse[path.name] = sorted(used - ENTRY_POINTS)
    assert misuse == {}


def test_the_checker_sees_a_private_use(tmp_path):
    sample = tmp_path / "t.py"
    sample.write_text("from zylax import cli\ncli._model_file('x', None, 'evaluate', None)\n")
    assert _cli_uses(sample) == (True, {"_model_file"})


def _zylax_imports(path: pathlib.Path) -> set[str]:
    """Every zylax module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("zylax"):
            found |= ({f"zylax.{a.name}" for a in node.names} if node.module == "zylax"
                      else {node.module})
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("zylax")}
    return found


def test_data_and_scenes_are_not_a_circle():
    assert "zylax.scenes" not in _zylax_imports(ROOT / "zylax" / "data.py")
    assert "zylax.data" in _zylax_imports(ROOT / "zylax" / "scenes.py")  # it registers itself


def test_the_cli_is_thin():
    """Each module of the command (parser, checks, sources, commands) stays a short read."""
    sizes = {p.name: len(p.read_text().splitlines()) for p in (ROOT / "zylax" / "cli").glob("*.py")}
    assert set(sizes) >= {"__init__.py", "arguments.py", "checks.py", "sources.py", "commands.py"}
    assert max(sizes.values()) <= 350, sizes
