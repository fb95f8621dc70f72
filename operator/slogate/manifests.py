"""Reading and writing manifest files (YAML, possibly multi-document)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Document:
    source: str  # "path" or "path#2" for the third document in a file
    body: Any
    error: str | None = None  # the file could not be read or parsed


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_NoAliasDumper, sort_keys=False, width=100)


def expand_paths(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files as given, and manifest files found under directories, in a stable order."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix in MANIFEST_SUFFIXES)
        else:
            yield path


def load_documents(paths: Iterable[str | Path]) -> Iterator[Document]:
    """Every non-empty YAML document in the given files and directories; a file that cannot
    be read or parsed yields one Document carrying the error, so the others still count."""
    for path in expand_paths(paths):
        try:
            docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            yield Document(str(path), None, f"cannot read: {exc}")
            continue
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            yield Document(str(path), None, f"not valid YAML{where}: {problem}")
            continue
        many = len(docs) > 1
        for index, body in enumerate(docs):
            if body is None:
                continue
            yield Document(f"{path}#{index}" if many else str(path), body)
