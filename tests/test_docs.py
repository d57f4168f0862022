"""The docs stay true to the code: docs/equations.md names, for each equation ID, the code that implements it and
the tests that check it (every named test and file must exist: paths move, the table must move with them); the
python examples of the README and docs import names that exist; the CLI flags they show are the CLI's."""

import re
from pathlib import Path

import pytest

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


DOCS = ["README.md", "CONTRIBUTING.md", "data/README.md", "data/pretrained/README.md", "docs/architecture.md",
        "docs/equations.md", "docs/evaluation.md"]


def _python_blocks(path: Path):
    """(line, code) of every ```python block of a markdown file."""
    lines = path.read_text().splitlines()
    start = None
    for n, line in enumerate(lines, 1):
        if start is None and line.strip() == "```python":
            start = n
        elif start is not None and line.strip() == "```":
            yield start, "\n".join(lines[start:n - 1])
            start = None


def test_the_docs_python_examples_parse_and_import_names_that_exist():
    """Every python example in the README and docs parses, and every name it imports from minivid exists: a
    function that moves between packages must take its examples along (data/README.md once imported
    trajectory_error from minivid.data after it had moved to minivid.metrics)."""
    import ast
    import importlib
    import importlib.util

    blocks, problems = 0, []
    for doc in DOCS:
        for line, code in _python_blocks(ROOT / doc):
            blocks += 1
            try:
                tree = ast.parse(code)
            except SyntaxError as e:
                problems.append(f"{doc}:{line + (e.lineno or 0)}: does not parse ({e.msg})")
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "minivid":
                    module = importlib.import_module(node.module)
                    problems += [f"{doc}:{line + node.lineno}: {node.module} has no {a.name}"
                                 for a in node.names if not hasattr(module, a.name)
                                 and importlib.util.find_spec(f"{node.module}.{a.name}") is None]
                elif isinstance(node, ast.Import):
                    for a in node.names:
                        if a.name.split(".")[0] == "minivid" and importlib.util.find_spec(a.name) is None:
                            problems.append(f"{doc}:{line + node.lineno}: no module {a.name}")
    assert blocks >= 5, f"found only {blocks} python examples: did the fences change?"
    assert not problems, "\n".join(problems)


def _documented_commands():
    """(where, subcommand, flags) of every ``python -m minivid SUB ...`` in the docs, notebooks' markdown and the
    scripts (shell line continuations joined)."""
    import json

    sources = [(d, (ROOT / d).read_text()) for d in DOCS]
    scripts = [ROOT / "bench" / "gpu_session.sh", ROOT / "Makefile"]
    sources += [(str(p.relative_to(ROOT)), p.read_text()) for p in scripts]
    for p in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(p.read_text())["cells"]
        sources += [(f"{p.name} cell {i}", "".join(c["source"])) for i, c in enumerate(cells)
                    if c["cell_type"] == "markdown"]
    for where, text in sources:
        text = re.sub(r"\\\n\s*", " ", text)
        for m in re.finditer(r"(?:python|PY\)?\"?) -m minivid ([a-z]+)([^`\n|]*)", text):
            flags = {f.rstrip(".,;:)") for f in re.findall(r"(?<![\w-])--[a-z][\w-]*", m.group(2))}
            yield where, m.group(1), flags


def test_every_documented_cli_flag_exists():
    """Each ``--flag`` a document shows after ``python -m minivid SUB`` is one that SUB's ``--help`` lists, so a
    renamed option cannot leave the README, the notebooks or the GPU script behind."""
    import contextlib
    import io

    from minivid.__main__ import main

    helps, missing, seen = {}, [], 0
    for where, sub, flags in _documented_commands():
        if sub not in helps:
            out = io.StringIO()
            with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
                main([sub, "--help"])
            helps[sub] = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", out.getvalue()))
        seen += len(flags)
        missing += [f"{where}: python -m minivid {sub} {f}" for f in sorted(flags - helps[sub])]
    assert seen >= 20, f"found only {seen} documented flags: did the command pattern change?"
    assert not missing, "documented flags the CLI does not have:\n" + "\n".join(missing)
