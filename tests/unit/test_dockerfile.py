"""The Dockerfile and .dockerignore, read as text: no Docker engine runs on the project's
machines, so the properties an image reviewer would check are checked here instead of by a build.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PINNED_BASE = re.compile(
    r"^(docker\.io/library/)?python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?$"
)
BUILD_TOOLS = re.compile(
    r"\b(gcc|g\+\+|clang|build-essential|make|cmake|python3?-dev|libc6?-dev|cargo|rustc)\b"
)


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def parse() -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the build stages, FROM images with ARGs substituted."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, rest in instructions(DOCKERFILE.read_text()):
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(image, alias))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def test_multi_stage_build_on_a_pinned_slim_python() -> None:
    _, stages = parse()
    assert len(stages) >= 2, "build and runtime must be separate stages"
    names = {s.name for s in stages if s.name}
    for stage in stages:
        if stage.image in names:
            continue  # FROM an earlier stage
        assert "latest" not in stage.image
        assert PINNED_BASE.match(stage.image), f"unpinned or unexpected base image {stage.image}"
    assert stages[0].name == "build"
    assert stages[-1].image == stages[0].image, "venv symlinks need the same interpreter path"


def test_runtime_stage_runs_as_a_numeric_non_root_user() -> None:
    _, stages = parse()
    final = stages[-1]
    users = final.all("USER")
    assert users, "the runtime stage sets no USER (it would run as root)"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, "USER must be a numeric non-zero UID (runAsNonRoot)"
    assert not gid or (gid.isdigit() and int(gid) > 0)
    last_user = max(i for i, (kw, _) in enumerate(final.instructions) if kw == "USER")
    assert not [kw for kw, _ in final.instructions[last_user:] if kw == "RUN"], (
        "nothing may run as root after USER is set"
    )


def test_entrypoint_is_slogate_with_the_role_as_argument() -> None:
    _, stages = parse()
    entrypoints = stages[-1].all("ENTRYPOINT")
    assert entrypoints, "no ENTRYPOINT"
    assert json.loads(entrypoints[-1]) == ["slogate"]  # exec form: signals reach slogate
    cmd = stages[-1].all("CMD")
    assert not cmd or isinstance(json.loads(cmd[-1]), list)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "slogate" in project["scripts"]


def test_runtime_stage_carries_no_build_tools_or_caches() -> None:
    _, stages = parse()
    final = stages[-1]
    for run in final.all("RUN"):
        assert not BUILD_TOOLS.search(run), f"build tools in the runtime stage: {run}"
        assert "apt-get install" not in run and "pip install" not in run, run
    copies = final.all("COPY")
    assert copies, "the runtime stage copies nothing from the build stage"
    for copy in copies:
        assert copy.startswith("--from=build "), f"runtime copies from the build context: {copy}"
        assert copy.split()[1:] == ["/opt/slogate", "/opt/slogate"], copy
    for stage in stages:
        for run in stage.all("RUN"):
            if "pip" in run and " install" in run:
                env = " ".join(stage.all("ENV"))
                assert "--no-cache-dir" in run or "PIP_NO_CACHE_DIR=1" in env, run
            assert "apt-get install" not in run or "rm -rf /var/lib/apt/lists" in run, run


def test_build_copies_only_what_the_package_needs() -> None:
    _, stages = parse()
    sources: list[str] = []
    for stage in stages:
        for copy in stage.all("COPY") + stage.all("ADD"):
            if copy.startswith("--from="):
                continue
            words = [w for w in copy.split() if not w.startswith("--")]
            sources += words[:-1]
    assert sorted(s.rstrip("/") for s in sources) == ["README.md", "operator", "pyproject.toml"]
    for source in sources:
        assert (REPO / source).exists(), source
    # setuptools reads the readme named in pyproject.toml while building the wheel.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["readme"] in sources


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker matches it (Go filepath.Match plus ``**``)."""
    out = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(c, re.escape(c))
        i += 1
    return re.compile(out)


def ignored(path: str, lines: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for line in lines:
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        pattern = pattern.strip().strip("/")
        regex = _pattern_regex(pattern)
        if any(regex.fullmatch(c) for c in candidates):
            verdict = not negate
    return verdict


def dockerignore_lines() -> list[str]:
    lines = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        "tests/unit/test_dockerfile.py",
        "bench/bench_math.py",
        "localenv/demo.py",
        "localenv/faultproxy.py",
        "charts/slogate/values.yaml",
        "docs/install.md",
        ".mypy_cache/x",
        "operator/slogate.egg-info/PKG-INFO",
        "operator/slogate/__pycache__/cli.cpython-311.pyc",
        "operator/slogate/core/__pycache__/gate.cpython-311.pyc",
        ".env",
    ],
)
def test_dockerignore_keeps_out(path: str) -> None:
    assert ignored(path, dockerignore_lines()), f"{path} would be sent to the Docker daemon"


@pytest.mark.parametrize(
    "path", ["pyproject.toml", "README.md", "operator/slogate/cli.py", "operator/slogate/py.typed"]
)
def test_dockerignore_lets_in_what_the_build_copies(path: str) -> None:
    assert not ignored(path, dockerignore_lines()), f"the build needs {path}"


def test_dockerignore_names_the_big_three_explicitly() -> None:
    # Explicit entries survive someone widening the allow-list later.
    lines = dockerignore_lines()
    for name in (".venv", ".git", "tests"):
        assert name in lines, f".dockerignore does not name {name}"


def test_build_context_is_only_the_package() -> None:
    lines = dockerignore_lines()
    sent = []
    for path in REPO.rglob("*"):
        rel = path.relative_to(REPO).as_posix()
        if rel.split("/")[0] in (".git", ".venv") or not path.is_file():
            continue
        if not ignored(rel, lines):
            sent.append(rel)
    assert "pyproject.toml" in sent and "operator/slogate/__init__.py" in sent
    stray = [p for p in sent if p not in ("pyproject.toml", "README.md")]
    stray = [p for p in stray if not p.startswith("operator/slogate/") or "__pycache__" in p]
    assert not stray, f"sent to the Docker daemon but not needed: {stray}"
