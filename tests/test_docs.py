"""The docs say what the code does: the two READMEs agree, links resolve, names exist."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re
from pathlib import Path

import pytest

import voice_trio

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_VI = ROOT / "README.vi.md"
DOCS = ROOT / "docs"
GUIDES = [README, README_VI, *sorted(DOCS.glob("*.md"))]

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_COMMENT = re.compile(r"\s+#.*$")
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def section(text: str, heading: str) -> str:
    """The body of the ``## heading`` section (up to the next ``## ``)."""
    start = text.index(f"\n## {heading}\n") + len(heading) + 5
    end = text.find("\n## ", start)
    return text[start : end if end >= 0 else len(text)]


def shell_commands(markdown: str) -> list[str]:
    """The commands of the ``sh`` blocks, comments dropped (they are in each README's language)."""
    commands = []
    for language, body in _FENCE.findall(markdown):
        if language != "sh":
            continue
        for line in body.splitlines():
            command = _COMMENT.sub("", line).strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def test_quick_start_commands_are_the_same_in_both_readmes() -> None:
    english = shell_commands(section(README.read_text(), "Quick start"))
    vietnamese = shell_commands(section(README_VI.read_text(), "Chạy thử nhanh"))
    assert english == ["bash ./scripts/serve.sh", "bash ./scripts/test.sh"]
    assert vietnamese == english
    for command in english:
        assert (ROOT / command.split()[1]).is_file(), command


def test_the_readmes_link_each_other_near_the_top() -> None:
    assert "](README.vi.md)" in "\n".join(README.read_text().splitlines()[:5])
    assert "](README.md)" in "\n".join(README_VI.read_text().splitlines()[:5])


def _classes() -> dict[str, type]:
    found: dict[str, type] = {}
    for info in pkgutil.walk_packages(voice_trio.__path__, "voice_trio."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if inspect.isclass(value) and value.__module__ == module.__name__:
                found.setdefault(name, value)
    return found


def test_architecture_names_what_exists() -> None:
    """Every ``Class.member`` and ``voice_trio`` path the architecture page names is real."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    classes = _classes()
    checked, wrong = 0, []
    for owner, member in re.findall(r"\b([A-Z][A-Za-z]+)\.([a-z_][a-z_]*)\b", text):
        cls = classes.get(owner)
        if cls is None:
            continue
        checked += 1
        source = inspect.getsource(cls)
        if not hasattr(cls, member) and not re.search(rf"\bself\.{member}\b", source):
            wrong.append(f"{owner}.{member}")
    for path in re.findall(r"`((?:room|providers)/[a-z_]+\.py)", text):
        if not (ROOT / "voice_trio" / path).is_file():
            wrong.append(path)
    assert checked >= 15
    assert not wrong, f"docs/architecture.md names what the code does not have: {wrong}"


@pytest.mark.parametrize("page", GUIDES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    missing = []
    for target in _LINK.findall(page.read_text()):
        if "://" in target or target.startswith("#"):
            continue
        if not (page.parent / target.split("#", 1)[0]).exists():
            missing.append(target)
    assert not missing, f"{page.name} links to files that do not exist: {missing}"


@pytest.mark.parametrize("page", ["customise.md", "customise.vi.md"])
def test_the_guides_code_excerpts_are_the_examples_code(page: str) -> None:
    """A block that starts ``# examples/x.py`` is copied from that file, as it is now."""
    excerpts = 0
    for language, body in _FENCE.findall((DOCS / page).read_text()):
        first, _, code = body.partition("\n")
        if language != "python" or not first.startswith("# examples/"):
            continue
        source = (ROOT / first[2:]).read_text()
        assert code in source, f"{page}: this excerpt is not in {first[2:]} any more:\n{code}"
        excerpts += 1
    assert excerpts >= 4


@pytest.mark.parametrize("page", ["customise.md", "customise.vi.md"])
async def test_the_guides_offline_test_runs(page: str) -> None:
    """The "test it offline" snippet of the guide passes as written."""
    from examples.order_graph import build_order_graph

    snippets = [
        body
        for language, body in _FENCE.findall((DOCS / page).read_text())
        if language == "python" and body.startswith("graph = build_order_graph()")
    ]
    assert len(snippets) == 1
    scope: dict[str, object] = {"json": json, "build_order_graph": build_order_graph}
    indented = "".join(f"    {line}\n" for line in snippets[0].splitlines())
    exec(f"async def snippet():\n{indented}", scope)  # noqa: S102  # our own docs
    await scope["snippet"]()  # type: ignore[operator]
