"""Versioned prompt templates, loaded from ``reasoning/prompts/<name>_v<N>.md``.

Every Round records ``prompt_version`` (e.g. ``watch_v1``), so a template is never edited in place once
used: a change is a new file with the next version number. A file holds a leading ``<!-- ... -->``
comment (for maintainers, not sent), then ``[system]`` and ``[user]`` blocks; ``$name`` placeholders
are filled with ``string.Template`` (JSON braces in the examples need no escaping; ``$$`` is a dollar).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PROMPT_DIR = Path(__file__).resolve().parent.parent / "prompts"
_NAME = re.compile(r"^(?P<name>[a-z_]+?)_v(?P<version>\d+)\.md$")
_BLOCK = re.compile(r"^\[(system|user)\]\s*$", re.MULTILINE)


class PromptError(ValueError):
    pass


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: int
    system: str
    user: str
    path: str

    @property
    def id(self) -> str:
        """What a Round stores as ``prompt_version``."""
        return f"{self.name}_v{self.version}"

    def render(self, **values) -> tuple[str, str]:
        """(system, user) with every placeholder filled; a missing value is a bug, so it raises."""
        try:
            return (string.Template(self.system).substitute(values).strip(),
                    string.Template(self.user).substitute(values).strip())
        except KeyError as exc:
            raise PromptError(f"prompt {self.id}: no value for ${exc.args[0]}") from None


def available(directory: Path = PROMPT_DIR) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for p in Path(directory).glob("*.md"):
        if m := _NAME.match(p.name):
            out.setdefault(m["name"], []).append(int(m["version"]))
    return {k: sorted(v) for k, v in out.items()}


def load_prompt(name: str, version: int | str | None = None, directory: str | Path | None = None) -> PromptTemplate:
    """The named template; ``version`` None → the newest. Accepts ``2``, ``"2"``, ``"v2"`` or ``"watch_v2"``."""
    return _load(name, _version(name, version), str(Path(directory) if directory else PROMPT_DIR))


def _version(name: str, version: int | str | None) -> int | None:
    if version is None or isinstance(version, int):
        return version
    v = str(version).removeprefix(f"{name}_").removeprefix("v")
    if not v.isdigit():
        raise PromptError(f"bad prompt version {version!r} for {name!r} (use e.g. 1, 'v1' or '{name}_v1')")
    return int(v)


@lru_cache(maxsize=64)
def _load(name: str, version: int | None, directory: str) -> PromptTemplate:
    versions = available(Path(directory)).get(name, [])
    if not versions:
        raise PromptError(f"no prompt template named {name!r} in {directory}")
    v = versions[-1] if version is None else version
    if v not in versions:
        raise PromptError(f"prompt {name}_v{v} not found in {directory} (have: {', '.join(f'v{x}' for x in versions)})")
    path = Path(directory) / f"{name}_v{v}.md"
    text = re.sub(r"\A\s*<!--.*?-->\s*", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    parts = _BLOCK.split(text)
    blocks = {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}
    if "user" not in blocks:
        raise PromptError(f"{path}: needs a [user] block")
    return PromptTemplate(name=name, version=v, system=blocks.get("system", "").strip(),
                          user=blocks["user"].strip(), path=str(path))
