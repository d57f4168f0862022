"""The library layout (CONTRIBUTING.md, docs/architecture.md): no import cycle, every import goes down a floor, the
bottom floors load no model; the architecture page's tables match the code; and the graph tool itself, on a tiny
fake package, so that these checks cannot pass by seeing no edges."""

import dataclasses
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from minivid.utils.imports import (FLOORS, PACKAGE_DIR, cycles, layout_violations, module_graph, package_graph,
                                   package_lines)

# what the bottom floors must not load: the models and everything above them, and the heavy optional libraries
HIGHER = ("minivid.autoencoders", "minivid.unets", "minivid.transformers", "minivid.pipeline", "minivid.data",
          "minivid.conditioning", "torchvision", "triton")


@pytest.fixture(scope="module")
def graph():
    return module_graph(PACKAGE_DIR)


def test_the_graph_sees_the_package(graph):
    # a graph that misses the package would make the two tests below pass vacuously
    assert {"minivid", "minivid.__main__", "minivid.nn.attention", "minivid.diffusion.training"} <= set(graph)
    assert "minivid.kernels" in graph["minivid.nn.attention"]  # from .. import kernels
    assert "minivid.pipeline.demo" in graph["minivid.__main__"]  # an import inside main()
    assert sum(len(t) for t in graph.values()) > 50


def test_no_import_cycle(graph):
    assert cycles(graph) == []
    assert cycles({p: set(t) for p, t in package_graph(graph).items()}) == []


def test_every_import_goes_down_a_floor(graph):
    assert layout_violations(graph) == []


@pytest.mark.parametrize("module", ["minivid", "minivid.diffusion", "minivid.nn"])
def test_bottom_floors_load_no_model(module):
    code = (f"import sys, {module}\n"
            f"higher = {HIGHER!r}\n"
            "print(sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in higher)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", f"import {module} loaded {out.stdout.strip()}"


# ------------------------------------------------------------------ docs/architecture.md follows the code

ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def _table_rows(first_header: str) -> list[list[str]]:
    """The rows of the markdown table of docs/architecture.md whose first column is headed ``first_header``."""
    rows, inside = [], False
    for line in ARCHITECTURE.read_text().splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if cells and cells[0] == first_header:
            inside = True
        elif inside and not cells:
            break
        elif inside and not set(cells[0]) <= set("-"):
            rows.append(cells)
    return rows


def test_the_floors_table_of_the_architecture_page_is_floors():
    table = {re.sub(r"[`/]|\.py", "", package): int(floor) for floor, package, _ in _table_rows("floor")}
    assert table == FLOORS, "the floors table of docs/architecture.md differs from minivid.utils.imports.FLOORS"


def test_the_shared_config_names_table_lists_the_configs_that_use_each_name():
    import minivid.autoencoders  # noqa: F401  (registers the model classes)
    import minivid.conditioning  # noqa: F401
    import minivid.pipeline  # noqa: F401
    import minivid.transformers  # noqa: F401
    import minivid.unets  # noqa: F401
    from minivid.nn import model_classes

    configs = {cls.config_class for name, cls in model_classes().items() if cls.__module__.startswith("minivid.")}
    rows = _table_rows("field")
    assert len(rows) > 10
    for field, _, used_by in rows:
        name = field.strip("`")
        has_it = {c.__name__.removesuffix("Config") for c in configs if name in {f.name for f in dataclasses.fields(c)}}
        assert set(used_by.split(", ")) == has_it, f"docs/architecture.md, shared config names, row {name}"


# ------------------------------------------------------------------ the graph tool on a fake package

FAKE = {
    "__init__.py": "from .low import helper\n",
    "__main__.py": "def main():\n    from .top.run import go\n",
    "low/__init__.py": "from . import sub\nfrom .sub import thing\n",
    "low/sub.py": "import os\nimport numpy as np\n\ndef f():\n    from fake.low import other  # inside a function\n",
    "low/other.py": "VALUE = 1\n",
    "mid/__init__.py": "",
    "mid/a.py": "from ..low.sub import thing\nfrom .b import B\n",
    "mid/b.py": "from . import a  # a cycle a <-> b\nfrom ..top import run  # upward\n",
    "top/__init__.py": "",
    "top/run.py": "import fake.mid.a\nfrom .. import low\nfrom fake import helper  # the root package\n",
    "stray/__init__.py": "",
}
FAKE_FLOORS = {"low": 0, "mid": 1, "top": 2, "__main__": 3}


@pytest.fixture
def fake(tmp_path):
    for name, text in FAKE.items():
        path = tmp_path / "fake" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    (tmp_path / "fake" / "__pycache__").mkdir()
    (tmp_path / "fake" / "__pycache__" / "junk.py").write_text("import fake.top\n")
    return tmp_path / "fake"


def test_module_graph_resolves_relative_function_level_and_submodule_imports(fake):
    g = module_graph(fake)
    assert set(g) == {"fake", "fake.__main__", "fake.low", "fake.low.sub", "fake.low.other", "fake.mid", "fake.mid.a",
                      "fake.mid.b", "fake.top", "fake.top.run", "fake.stray"}  # no __pycache__
    assert g["fake"] == {"fake.low"}  # from .low import helper: helper is a name, not a module
    assert g["fake.__main__"] == {"fake.top.run"}  # inside a function
    assert g["fake.low"] == {"fake.low.sub"}  # from . import sub; from .sub import thing
    assert g["fake.low.sub"] == {"fake.low.other"}  # os and numpy are not the package's; absolute, in a function
    assert g["fake.low.other"] == set()
    assert g["fake.mid.a"] == {"fake.low.sub", "fake.mid.b"}  # no edge to the parents fake.low, fake.mid
    assert g["fake.mid.b"] == {"fake.mid.a", "fake.top.run"}  # from ..top import run: the submodule
    assert g["fake.top.run"] == {"fake.mid.a", "fake.low", "fake"}


def test_cycles_finds_the_cycle(fake):
    g = module_graph(fake)
    assert cycles(g) == [["fake.mid.a", "fake.mid.b", "fake.top.run"]]  # a <-> b, and a -> b -> run -> a
    assert cycles({"x": {"y"}, "y": {"z"}, "z": {"x", "w"}, "w": set(), "v": {"v"}}) == [["x", "y", "z"]]
    assert cycles({"x": {"y"}, "y": set()}) == []


def test_layout_violations_reports_upward_root_and_unplaced_imports(fake):
    g = module_graph(fake)
    assert layout_violations(g, FAKE_FLOORS) == [
        "fake.mid.b imports fake.top.run: floor 1 -> 2",
        "fake.stray is on no floor: add it to FLOORS in minivid/utils/imports.py",
        "fake.top.run imports the root package fake: import from the package that defines the name",
    ]
    same_floor = {**FAKE_FLOORS, "stray": 0, "mid": 2}  # mid and top on one floor: sideways is refused too
    assert "fake.mid.b imports fake.top.run: floor 2 -> 2" in layout_violations(g, same_floor)


def test_package_graph_counts_module_edges(fake):
    p = package_graph(module_graph(fake))
    assert p["fake.mid"] == {"fake.low": 1, "fake.top": 1}  # mid.a -> low.sub, mid.b -> top.run; a <-> b is inside
    assert p["fake.top"] == {"fake.mid": 1, "fake.low": 1, "fake": 1}
    assert p["fake.__main__"] == {"fake.top": 1}
    lines = package_lines(fake)
    assert lines["fake.low"] == 2 + 5 + 1 and lines["fake.stray"] == 0  # __pycache__ not counted


def test_floors_table():
    assert FLOORS["utils"] == 0 and FLOORS["__main__"] == max(FLOORS.values())
    assert FLOORS["unets"] == FLOORS["transformers"] == FLOORS["autoencoders"] < FLOORS["conditioning"]
    assert {p.name for p in PACKAGE_DIR.iterdir() if (p / "__init__.py").is_file()} <= set(FLOORS)
