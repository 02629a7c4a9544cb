"""The README and docs/ stay usable: size, set-up commands, links, CLI reference.

* README.md is at most 10 KiB, and its first two fenced commands are the two set-up
  commands ``make reproduce`` and ``make test``.
* Every relative link in README.md and docs/*.md points to a file or folder of the
  repository, and a ``#fragment`` into a Markdown file names one of its headings.
* docs/cli.md documents exactly the subcommands of the real parser
  (:func:`coarsegrad.cli.main.build_parser`), nested ones included, and every flag it
  names exists on the subcommand whose section names it.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from coarsegrad.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
SECTION = re.compile(r"^## `coarsegrad ([a-z][\w-]*)`\s*$", re.M)
HELP_HEADING = re.compile(r"^### `coarsegrad ([a-z][\w -]*?) --help`\s*$", re.M)
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


# ---------------------------------------------------------------------------- helpers

def fenced_commands(text: str) -> list[str]:
    """Non-empty lines of the fenced code blocks, in order, without trailing ``# comments``."""
    lines = []
    for block in FENCE.finditer(text):
        for line in block.group(0).splitlines()[1:-1]:
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def prose(text: str) -> str:
    """``text`` without fenced blocks and inline code (where link syntax is not a link)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def relative_links(text: str) -> list[str]:
    """Link targets that are neither URLs nor pure in-page anchors."""
    targets = [m.group(1) for m in LINK.finditer(prose(text))]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(h) for h in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8")))}


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def command_tree(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """{"train": parser, "theory angles": parser, ...} for every (nested) subcommand."""
    tree = {}
    for name, sub in subparsers(parser).items():
        path = f"{prefix} {name}".strip()
        tree[path] = sub
        tree.update(command_tree(sub, path))
    return tree


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Long options of ``parser`` and of all its nested subcommands."""
    found = {s for a in parser._actions for s in a.option_strings if s.startswith("--")}
    for sub in subparsers(parser).values():
        found |= option_strings(sub)
    return found


# ------------------------------------------------------------------------------ README

def test_readme_is_at_most_10_kib():
    size = len(README.read_bytes())
    assert size <= 10 * 1024, f"README.md is {size} bytes; move details to docs/"


def test_readme_first_commands_are_the_two_setup_commands():
    assert fenced_commands(README.read_text(encoding="utf-8"))[:2] == ["make reproduce", "make test"]


def test_fenced_commands_helper_can_fail():
    text = "intro\n\n```\nmake test   # first\nmake reproduce\n```\n"
    assert fenced_commands(text) == ["make test", "make reproduce"]


# ------------------------------------------------------------------------------- links

@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path):
    broken = []
    for target in relative_links(path.read_text(encoding="utf-8")):
        file_part, _, fragment = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if ROOT not in dest.parents and dest != ROOT:
            broken.append(f"{target} (outside the repository)")
        elif not dest.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target} (no heading #{fragment})")
    assert not broken, f"{path.relative_to(ROOT)}: broken links: {broken}"


def test_link_helpers_can_fail():
    text = "[a](docs/x.md) [b](https://e.org) ![c](img.png) `[d](not-a-link.md)` [e](#top)\n```\n[f](g.md)\n```\n"
    assert relative_links(text) == ["docs/x.md", "img.png", "#top"]
    assert slug("Full `--help` output") == "full---help-output"
    assert slug("1 bit with the ceil quantizer") == "1-bit-with-the-ceil-quantizer"


def test_docs_pages_named_in_the_brief_exist():
    names = {p.name for p in DOCS}
    for page in ("results.md", "speed.md", "theory.md", "export.md", "sweeps.md", "cli.md",
                 "architecture.md", "dependencies.md"):
        assert page in names


# ---------------------------------------------------------------------------- CLI docs

def cli_doc() -> str:
    return (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")


def test_cli_doc_sections_are_exactly_the_real_subcommands():
    documented = SECTION.findall(cli_doc())
    assert len(documented) == len(set(documented)), "a subcommand has two sections"
    assert set(documented) == set(subparsers(build_parser()))


def test_cli_doc_help_blocks_cover_every_nested_subcommand():
    documented = HELP_HEADING.findall(cli_doc())
    assert len(documented) == len(set(documented))
    assert set(documented) == set(command_tree(build_parser()))


def test_cli_doc_flags_exist_on_their_subcommand():
    text = cli_doc()
    tree = command_tree(build_parser())
    bounds = [(m.start(), m.group(1)) for m in SECTION.finditer(text)] + [(len(text), "")]
    help_start = text.find("## Full `--help` output")
    assert help_start > 0
    unknown = []
    for (start, name), (end, _) in zip(bounds, bounds[1:], strict=False):
        assert start < help_start, f"section {name} after the --help output"
        section = text[start:min(end, help_start)]
        valid = option_strings(tree[name]) | {"--help"}
        unknown += [f"{name}: {flag}" for flag in FLAG.findall(section) if flag not in valid]
    assert not unknown, f"docs/cli.md names flags the parser does not have: {sorted(set(unknown))}"
