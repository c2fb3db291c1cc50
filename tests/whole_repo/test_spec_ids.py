"""Spec IDs, checkers and mutants in one-to-one step; import layering; Simplified markers.

``specs/README.md`` requires every live ID to have exactly one ``### <ID> — <title>`` heading,
exactly one registered checker and at least one mutant its checker catches
(``tests/test_mutants.py`` proves the catching; here only the bookkeeping is checked).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from invariants.registry import REGISTRY, _load_all, checks_for
from tests.mutants import mutants

REPO_ROOT = Path(__file__).resolve().parents[2]
SPECS = REPO_ROOT / "specs"

ID = r"[A-Z]+-[IR]\d+"
#: A live or retired spec heading: level 3, the ID, an em dash with a space either side.
HEADING = re.compile(rf"^### ({ID}) — (.+?)\s*$")
#: Any markdown heading whose text starts with something shaped like an ID.
ID_LIKE_HEADING = re.compile(rf"^(#+)\s+({ID})\b")


def spec_documents() -> list[Path]:
    """Every spec document (README.md states conventions, not IDs)."""
    return sorted(p for p in SPECS.glob("*.md") if p.name != "README.md")


def spec_headings() -> list[tuple[str, str, str]]:
    """(ID, title, file name) for every ``### <ID> — <title>`` heading in specs/*.md."""
    found = []
    for path in spec_documents():
        for line in path.read_text(encoding="utf-8").splitlines():
            match = HEADING.match(line)
            if match:
                found.append((match.group(1), match.group(2), path.name))
    return found


def live_headings() -> dict[str, str]:
    """ID -> title for every heading that is not retired."""
    return {cid: title for cid, title, _doc in spec_headings()
            if not title.lower().startswith("retired:")}


def registered() -> dict[str, str]:
    """ID -> title of every registered checker."""
    _load_all()
    return {cid: check.title for cid, check in REGISTRY.items()}


def test_spec_documents_exist():
    """There is at least one spec document to hold the headings (specs/buddy.md)."""
    assert ["buddy.md"] == [p.name for p in spec_documents() if p.name == "buddy.md"]


def test_every_spec_heading_has_a_checker_and_every_checker_a_heading():
    """The live IDs under ``### <ID> — <title>`` headings are exactly the registered IDs."""
    assert sorted(registered()) == sorted(live_headings())


def test_spec_heading_titles_are_the_checker_titles():
    """Each heading's title is the title its checker reports under."""
    headings = live_headings()
    assert registered() == {cid: headings.get(cid, "<no heading>") for cid in registered()}


def test_each_id_has_one_heading():
    """No ID is headed twice, in one document or across documents."""
    ids = [cid for cid, _title, _doc in spec_headings()]
    assert [] == sorted({cid for cid in ids if ids.count(cid) > 1})


def test_every_id_heading_is_well_formed():
    """A heading that starts with an ID is a level-3 ``### <ID> — <title>`` heading."""
    malformed = []
    for path in spec_documents():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if ID_LIKE_HEADING.match(line) and not HEADING.match(line):
                malformed.append(f"{path.name}:{number}: {line}")
    assert [] == malformed


def test_retired_ids_have_no_checker():
    """A heading titled ``retired: …`` has no registered checker."""
    retired = sorted(cid for cid, title, _doc in spec_headings()
                     if title.lower().startswith("retired:"))
    assert [] == [cid for cid in retired if cid in registered()]


def test_every_checker_has_a_mutant():
    """Every registered ID is the target of at least one mutant in tests/mutants/."""
    targets = {cls.target for cls in mutants()}
    assert [] == sorted(cid for cid in registered() if cid not in targets)


def test_every_mutant_targets_a_registered_id():
    """No mutant names an ID that has no checker (a typo, or a retired ID)."""
    assert [] == sorted(f"{cls.__name__} -> {cls.target}" for cls in mutants()
                        if cls.target not in registered())


def test_checks_for_lists_every_buddy_id_in_order():
    """checks_for('buddy') returns every BUDDY ID once, invariants first, numerically."""
    ids = [check.id for check in checks_for("buddy")]
    buddy = [cid for cid in registered() if cid.startswith("BUDDY-")]
    assert sorted(buddy, key=lambda cid: (cid[6], int(cid[7:]))) == ids


# ---------------------------------------------------------------------------------------------
# Import layering
# ---------------------------------------------------------------------------------------------

STDLIB = frozenset(sys.stdlib_module_names)
PACKAGES = ("specs", "refmodel", "fastmodel", "invariants", "stateful_tests", "vmconform")

#: package -> the top-level modules it may import (None: anything not in FORBIDDEN)
ALLOWED: dict[str, frozenset[str] | None] = {
    "specs": STDLIB | {"attrs", "specs"},
    "refmodel": STDLIB | {"attrs", "specs", "refmodel"},
    "invariants": STDLIB | {"attrs", "numpy", "specs", "invariants"},
    "fastmodel": None,
    "stateful_tests": None,
    "vmconform": None,
}
FORBIDDEN: dict[str, frozenset[str]] = {
    "fastmodel": frozenset({"refmodel", "invariants", "stateful_tests", "vmconform"}),
    "stateful_tests": frozenset({"vmconform"}),
}


def imported_modules(path: Path, package: str) -> set[str]:
    """Top-level names of every module a file imports, anywhere in it (relative imports
    count as the file's own package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(package if node.level else (node.module or "").split(".")[0])
    return names


def layering_violations(package: str) -> list[str]:
    """``file: module`` for every import the layering rules forbid in one package."""
    allowed, forbidden = ALLOWED[package], FORBIDDEN.get(package, frozenset())
    problems = []
    for path in sorted((REPO_ROOT / package).rglob("*.py")):
        for name in sorted(imported_modules(path, package)):
            if (allowed is not None and name not in allowed) or name in forbidden:
                problems.append(f"{path.relative_to(REPO_ROOT)}: {name}")
    return problems


@pytest.mark.parametrize("package", PACKAGES)
def test_import_layering(package):
    """specs < refmodel < invariants: each layer imports only the layers below it (and the
    stdlib, attrs, numpy as listed); fastmodel shares nothing with refmodel or the checkers;
    the state machines never import the CLI."""
    assert [] == layering_violations(package)


def test_invalid_layering_is_detected(tmp_path):
    """The layering scan sees imports inside functions and relative imports."""
    source = tmp_path / "probe.py"
    source.write_text("from . import sibling\n\ndef f():\n    import numpy.linalg\n",
                      encoding="utf-8")
    assert {"refmodel", "numpy"} == imported_modules(source, "refmodel")


# ---------------------------------------------------------------------------------------------
# [Simplified: ...] markers and the spec's Known departures
# ---------------------------------------------------------------------------------------------

MARKER = "[Simplified:"
MARKED_SOURCES = ("refmodel", "specs")
#: A row of the Known departures table: the file, then the function or constant, or (module).
DEPARTURE_ROW = re.compile(r"^\|\s*`([^`]+\.py)`\s*(?:`([^`]+)`|\(module\))")


def marker_locations(path: Path, root: Path = REPO_ROOT) -> list[str]:
    """``<file> <name>`` for each [Simplified: ...] marker: the innermost function or class
    holding it, the constant assigned on its line, or ``(module)`` for the module docstring.
    The convention's own mention, ``[Simplified: …]``, is not a marker."""
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text)
    spans = []  # (first line, last line, name), outermost first
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            spans.append((node.lineno, node.end_lineno or node.lineno, node.name))
        elif isinstance(node, ast.Assign | ast.AnnAssign) and node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            named = [t.id for t in targets if isinstance(t, ast.Name)]
            if named:
                spans.append((node.lineno, node.end_lineno or node.lineno, named[0]))
    relative = path.relative_to(root).as_posix()
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for match in re.finditer(re.escape(MARKER) + r"\s*([^\]]*)", line):
            if match.group(1).strip() in ("…", "...", ""):
                continue
            holders = [s for s in spans if s[0] <= number <= s[1]]
            name = min(holders, key=lambda s: s[1] - s[0])[2] if holders else "(module)"
            found.append(f"{relative} {name}")
    return found


def departure_rows(document: Path) -> set[str]:
    """``<file> <name>`` for each row of the document's ``## Known departures`` table."""
    text = document.read_text(encoding="utf-8")
    section = text.split("## Known departures", 1)[1] if "## Known departures" in text else ""
    section = section.split("\n## ", 1)[0]
    rows = set()
    for line in section.splitlines():
        match = DEPARTURE_ROW.match(line)
        if match:
            rows.add(f"{match.group(1)} {match.group(2) or '(module)'}")
    return rows


def test_every_simplified_marker_is_a_known_departure():
    """Each [Simplified: ...] in refmodel/ and specs/ has a row in a spec's Known departures."""
    rows = set().union(*(departure_rows(doc) for doc in spec_documents()))
    markers = [loc for package in MARKED_SOURCES
               for path in sorted((REPO_ROOT / package).rglob("*.py"))
               for loc in marker_locations(path)]
    assert [] == [loc for loc in markers if loc not in rows]


def test_invalid_marker_outside_the_table_is_detected(tmp_path):
    """The marker scan names the function holding a marker, and skips the convention's own."""
    package = tmp_path / "refmodel"
    package.mkdir()
    source = package / "probe.py"
    source.write_text('"""Mark with ``[Simplified: …]``."""\n\n\ndef f():\n'
                      '    """[Simplified: nothing]"""\n', encoding="utf-8")
    assert ["refmodel/probe.py f"] == marker_locations(source, root=tmp_path)
