"""The committed stubs are exactly what gen_proto.py makes of the proto now."""

from __future__ import annotations

import importlib.util
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_proto", PACKAGE / "gen_proto.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_match_the_proto(tmp_path):
    gen = load_generator()
    written = gen.generate(tmp_path)
    assert {p.name for p in written} == set(gen.FILES)
    committed_dir = PACKAGE / "pushgate" / "_proto"
    for fresh in written:
        committed = committed_dir / fresh.name
        assert committed.is_file(), f"{committed.name} is not committed"
        assert fresh.read_text() == committed.read_text(), (
            f"pushgate/_proto/{fresh.name} is stale: run `python gen_proto.py` in clients/python and commit"
        )


def test_the_check_notices_a_changed_proto(tmp_path):
    """A proto with one more field does not generate the committed stubs."""
    gen = load_generator()
    proto = (gen.PROTO_ROOT / gen.PROTO_FILE).read_text()
    changed = proto.replace("message StatsRequest {}", "message StatsRequest { bool verbose = 1; }")
    assert changed != proto
    root = tmp_path / "proto"
    (root / Path(gen.PROTO_FILE).parent).mkdir(parents=True)
    (root / gen.PROTO_FILE).write_text(changed)
    out = tmp_path / "out"
    gen.generate(out, root)
    committed = (PACKAGE / "pushgate" / "_proto" / "push_pb2.py").read_text()
    assert (out / "push_pb2.py").read_text() != committed


def test_the_generated_imports_work_inside_the_package():
    from pushgate._proto import push_pb2, push_pb2_grpc

    assert push_pb2.PushRequest.__module__ == "pushgate._proto.push_pb2"
    assert push_pb2_grpc.pushgate_dot_v1_dot_push__pb2 is push_pb2
    assert push_pb2.DESCRIPTOR.name == "pushgate/v1/push.proto"
    assert push_pb2.DESCRIPTOR.package == "pushgate.v1"
