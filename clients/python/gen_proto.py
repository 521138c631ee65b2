#!/usr/bin/env python3
"""Generates the gRPC stubs of the pushgate package from the published proto.

    python gen_proto.py                 # rewrite pushgate/_proto/ in place
    python gen_proto.py --out DIR       # write the stubs into DIR instead

The stubs are committed; tests/test_stubs.py regenerates them into a temporary
directory and fails when they differ, so they cannot drift from the proto.
Needs grpcio-tools (a test extra), pinned so the output is reproducible.

grpc_tools writes the modules as `pushgate/v1/push_pb2*.py`, whose imports name
a package `pushgate.v1` that would collide with this package's own name. The
modules are therefore moved flat into `pushgate/_proto/` and the two places
that name their module path are rewritten; each rewrite must match exactly
once, so a change in the generator's output fails here instead of shipping.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The repository's proto root (clients/python -> repository root).
PROTO_ROOT = HERE.parent.parent / "proto"
PROTO_FILE = "pushgate/v1/push.proto"
DEFAULT_OUT = HERE / "pushgate" / "_proto"

# (generated file, text to find, replacement)
REWRITES = [
    ("push_pb2.py", "'pushgate.v1.push_pb2'", "'pushgate._proto.push_pb2'"),
    (
        "push_pb2_grpc.py",
        "from pushgate.v1 import push_pb2 as pushgate_dot_v1_dot_push__pb2",
        "from . import push_pb2 as pushgate_dot_v1_dot_push__pb2",
    ),
]
FILES = ("push_pb2.py", "push_pb2.pyi", "push_pb2_grpc.py")


def generate(out: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Writes the stubs into `out` and returns the paths written."""
    from grpc_tools import protoc  # imported here: only this script needs it

    if not (proto_root / PROTO_FILE).is_file():
        raise FileNotFoundError(f"{proto_root / PROTO_FILE} not found")
    with tempfile.TemporaryDirectory() as tmp:
        include = str(Path(protoc.__file__).parent / "_proto")
        args = [
            "grpc_tools.protoc",
            f"-I{proto_root}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            PROTO_FILE,
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed on " + PROTO_FILE)
        generated = Path(tmp) / Path(PROTO_FILE).parent
        texts = {name: (generated / name).read_text(encoding="utf-8") for name in FILES}
    for name, old, new in REWRITES:
        count = texts[name].count(old)
        if count != 1:
            raise RuntimeError(f"{name}: expected exactly one {old!r}, found {count}")
        texts[name] = texts[name].replace(old, new)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in FILES:
        path = out / name
        path.write_text(texts[name], encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument("--proto-root", type=Path, default=PROTO_ROOT, help="directory holding pushgate/v1/push.proto")
    args = parser.parse_args(argv)
    for path in generate(args.out, args.proto_root):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
