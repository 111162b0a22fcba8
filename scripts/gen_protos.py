"""Regenerate the Python code for every ``.proto`` under ``protos/`` (or check it is fresh).

    .venv/bin/python scripts/gen_protos.py          # write services/common/stockade/v1/...
    .venv/bin/python scripts/gen_protos.py --check  # exit 1 when the checked-in code is stale

Files are generated with grpcio-tools with ``protos/`` as the include root, so
``protos/stockade/v1/sync.proto`` becomes the module ``stockade.v1.sync_pb2`` (plus ``.pyi``
stubs and ``sync_pb2_grpc``) under ``services/common``.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "services" / "common"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
INIT_TEXT = '"""Generated from protos/ by scripts/gen_protos.py: do not edit."""\n'


def proto_files() -> list[Path]:
    return sorted(PROTOS.rglob("*.proto"))


def generate(out: Path) -> None:
    """Run protoc on every proto into ``out`` and add an ``__init__.py`` to every package."""
    from grpc_tools import protoc  # type: ignore[import-untyped]  # only needed here

    files = proto_files()
    if not files:
        raise SystemExit(f"no .proto files under {PROTOS}")
    include = Path(protoc.__file__).parent / "_proto"  # well-known types (google/protobuf/...)
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *(str(f.relative_to(PROTOS)) for f in files),
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    for f in files:
        pkg = out / f.relative_to(PROTOS).parent
        (pkg / "__init__.py").write_text(INIT_TEXT)


def generated_files(base: Path) -> set[Path]:
    """Generated files below ``base``, relative to it (only packages that protos/ defines)."""
    found: set[Path] = set()
    for pkg in {f.relative_to(PROTOS).parent for f in proto_files()}:
        d = base / pkg
        if d.is_dir():
            found.update(p.relative_to(base) for p in d.iterdir() if p.name.endswith(GENERATED_SUFFIXES))
            if (d / "__init__.py").exists():
                found.add((d / "__init__.py").relative_to(base))
    return found


def stale(fresh_dir: Path) -> list[str]:
    """What differs between freshly generated code and the checked-in code."""
    fresh, current = generated_files(fresh_dir), generated_files(OUT)
    problems = [f"missing: {OUT / p}" for p in sorted(fresh - current)]
    problems += [f"no longer generated: {OUT / p}" for p in sorted(current - fresh)]
    problems += [
        f"differs: {OUT / p}" for p in sorted(fresh & current) if not filecmp.cmp(fresh_dir / p, OUT / p, shallow=False)
    ]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if the generated code is stale")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        problems = stale(Path(tmp))
        if args.check:
            if problems:
                print("generated protobuf code is stale; run: .venv/bin/python scripts/gen_protos.py")
                print("\n".join(f"  {p}" for p in problems))
                return 1
            print(f"protobuf code is fresh ({len(proto_files())} .proto files)")
            return 0
        for p in problems:
            if p.startswith("no longer generated: "):
                Path(p.removeprefix("no longer generated: ")).unlink()
        for rel in generated_files(Path(tmp)):
            (OUT / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(tmp) / rel, OUT / rel)
    print(f"generated code for {len(proto_files())} .proto files under {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
