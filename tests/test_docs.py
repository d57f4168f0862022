"""docs/equations.md names, for each equation ID, the code that implements it and the tests that check it: every
named test must exist and every named file must be there (paths move; the table must move with them)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "equations.md"


def _test_functions(path: Path) -> set[str]:
    return set(re.findall(r"^(?:async )?def (test_\w+)", path.read_text(), flags=re.M))


def _references(line: str):
    """(file, test) pairs of one row: `tests/x/test_y.py::name`, `test_y.py::name` (a file named earlier or found
    under tests/) and `::name` (the row's last file)."""
    last = None
    for file, name in re.findall(r"`((?:tests/[\w/]+/)?test_\w+\.py)?::(\w+)", line):
        if file:
            last = file
        yield last, name


def test_every_test_named_in_the_equation_table_exists():
    by_name = {}
    for p in (ROOT / "tests").rglob("test_*.py"):
        by_name.setdefault(p.name, []).append(p)
    missing = []
    for n, line in enumerate(TABLE.read_text().splitlines(), 1):
        for file, name in _references(line):
            if file is None:
                missing.append(f"line {n}: ::{name} with no file before it")
                continue
            paths = [ROOT / file] if "/" in file else by_name.get(file, [])
            if not paths or not any(p.is_file() and name in _test_functions(p) for p in paths):
                missing.append(f"line {n}: {file}::{name}")
    assert not missing, "docs/equations.md names tests that do not exist:\n" + "\n".join(missing)


def test_every_path_named_in_the_equation_table_exists():
    missing = sorted({p for p in re.findall(r"`((?:minivid|tests|bench|notebooks|docs)/[\w/.\-]+)`", TABLE.read_text())
                      if not (ROOT / p).exists()})
    assert not missing, f"docs/equations.md names paths that do not exist: {missing}"
