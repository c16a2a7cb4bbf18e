"""The docs say what the code does: the two READMEs agree, links resolve, names exist."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import voice_trio

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_VI = ROOT / "README.vi.md"

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_COMMENT = re.compile(r"\s+#.*$")


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
