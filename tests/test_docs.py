"""The design document and the API reference stay in step with the code.

- every `docs/design.md §N` (or §N.M) cited in fsdiag/ names a section that docs/design.md has,
  and so does every § cross-reference inside docs/design.md itself;
- every module that book/api.md documents imports, and every top-level `fsdiag` name is
  documented there, in a module that the page lists.
"""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
API = ROOT / "book" / "api.md"
PACKAGE = ROOT / "fsdiag"

_HEADING = re.compile(r"^#{2,4}\s+(\d+(?:\.\d+)*)\.?\s+\S", re.M)
# "docs/design.md §2", "docs/design.md §2.3, §8" (a list after one mention), "§5 claim 6".
_CITATION = re.compile(r"docs/design\.md\s+((?:§\d+(?:\.\d+)*(?:\s*(?:,|and|&)\s*)?)+)")
_SECTION = re.compile(r"§(\d+(?:\.\d+)*)")


def design_sections() -> set[str]:
    return set(_HEADING.findall(DESIGN.read_text(encoding="utf-8")))


def _python_sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "_book" not in p.parts)


def cited_sections() -> list[tuple[str, int, str]]:
    """(file, line, section) for every docs/design.md § citation in the package's sources."""
    out = []
    for path in _python_sources():
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in _CITATION.finditer(line):
                for sec in _SECTION.findall(match.group(1)):
                    out.append((str(path.relative_to(ROOT)), lineno, sec))
    return out


def test_design_sections_are_numbered_in_order():
    top = [int(s) for s in _HEADING.findall(DESIGN.read_text(encoding="utf-8")) if "." not in s]
    assert top == list(range(1, len(top) + 1)), f"docs/design.md: top-level sections {top}"


def test_design_cross_references_exist():
    text = DESIGN.read_text(encoding="utf-8")
    sections = design_sections()
    missing = sorted({s for s in _SECTION.findall(text) if s not in sections})
    assert not missing, f"docs/design.md refers to sections it does not have: {missing}"


def test_docstring_citations_name_existing_sections():
    sections = design_sections()
    bad = [f"{f}:{n}: §{s}" for f, n, s in cited_sections() if s not in sections]
    assert not bad, "citations of sections docs/design.md does not have:\n" + "\n".join(bad)


def test_no_citation_of_the_unshipped_design_notes():
    old = [f"{p.relative_to(ROOT)}:{n}" for p in _python_sources()
           for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if re.search(r"\bDESIGN §", line)]
    assert not old, "cite docs/design.md §N instead of DESIGN §N:\n" + "\n".join(old)


# ------------------------------------------------------------------ the API page
def api_modules() -> list[str]:
    """The modules book/api.md documents: its automodule directives (the page's one list)."""
    return re.findall(r"^\.\.\s+automodule::\s+(\S+)\s*$", API.read_text(encoding="utf-8"), re.M)


def test_api_page_lists_modules_once():
    mods = api_modules()
    assert mods and mods[0] == "fsdiag", mods
    assert len(mods) == len(set(mods)), f"book/api.md documents a module twice: {mods}"


@pytest.mark.parametrize("name", api_modules())
def test_api_modules_import(name):
    importlib.import_module(name)


def test_every_top_level_name_is_documented():
    import fsdiag

    text = API.read_text(encoding="utf-8")
    mods = set(api_modules())
    undocumented = []
    for name in fsdiag.__all__:
        obj = getattr(fsdiag, name)
        home = obj.__name__ if isinstance(obj, type(fsdiag)) else getattr(obj, "__module__", None)
        if not re.search(rf"\b{re.escape(name)}\b", text) or (home is not None and home not in mods):
            undocumented.append(f"{name} (defined in {home})")
    assert not undocumented, "top-level names missing from book/api.md: " + ", ".join(undocumented)


def test_api_summary_targets_are_documented_objects():
    """Each autosummary entry resolves to an object of a module the page documents (else a dead link)."""
    text = API.read_text(encoding="utf-8")
    block = re.search(r"\.\.\s+autosummary::\n((?:[ \t]+.*\n|\n)+)", text)
    assert block, "book/api.md: no autosummary of the top-level names"
    entries = [e.strip().lstrip("~") for e in block.group(1).splitlines() if e.strip() and not e.strip().startswith(":")]
    mods = set(api_modules())
    for entry in entries:
        if entry in mods:
            continue
        module, _, attr = entry.rpartition(".")
        assert module in mods, f"{entry}: module {module} is not documented on the page"
        assert hasattr(importlib.import_module(module), attr), f"{entry}: no such object"


def test_book_config_loads_autodoc():
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    assert "sphinx.ext.autodoc" in config["sphinx"]["extra_extensions"]
    for name, folder in config["sphinx"].get("local_extensions", {}).items():
        assert (ROOT / folder / f"{name}.py").is_file(), f"local extension {name} not in {folder}"
        ast.parse((ROOT / folder / f"{name}.py").read_text(encoding="utf-8"))
    toc = (ROOT / "_toc.yml").read_text(encoding="utf-8")
    assert "book/api" in toc
