"""Every command of clients/grpcurl.md, run against a real gateway.

grpcurl is not installed here, so `grpcurl.py` stands in for it (through the
gateway's gRPC reflection, like grpcurl); `pushgate ...` commands run the
gateway binary. The document's variables ADDR and KEY are replaced by
the test gateway's address and its key.

Run 1, a gateway without keys set up as the document says (browsers u1 and u2
on chat and news): every command succeeds and prints what its `#>` lines show.
Run 2, a gateway with an API key: a PushService call succeeds exactly when it
carries the key, as the document says; reflection and health need none.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2

import grpcurl
from harness import REPO, WAIT, Gateway, binary

DOC = REPO / "clients" / "grpcurl.md"
KEY = "doc-test-key"
# The node id the document's gateway runs with (`--node-id`), shown by Stats.
NODE_ID = "node-a"

# grpc.health.v1's proto (the definitions of grpc's health.proto); checked
# below against the descriptor grpcio-health-checking ships.
HEALTH_PROTO = """\
syntax = "proto3";

package grpc.health.v1;

message HealthCheckRequest {
  string service = 1;
}

message HealthCheckResponse {
  enum ServingStatus {
    UNKNOWN = 0;
    SERVING = 1;
    NOT_SERVING = 2;
    SERVICE_UNKNOWN = 3;
  }
  ServingStatus status = 1;
}

message HealthListRequest {}

message HealthListResponse {
  map<string, HealthCheckResponse> statuses = 1;
}

service Health {
  rpc Check(HealthCheckRequest) returns (HealthCheckResponse);
  rpc List(HealthListRequest) returns (HealthListResponse);
  rpc Watch(HealthCheckRequest) returns (stream HealthCheckResponse);
}
"""


@pytest.fixture(scope="module")
def protos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("protos")
    path = root / "grpc" / "health" / "v1" / "health.proto"
    path.parent.mkdir(parents=True)
    path.write_text(HEALTH_PROTO)
    return root


def test_the_health_proto_is_grpcs(protos):
    from grpc_tools import protoc

    out = protos.parent / "health.pb"
    assert protoc.main(["protoc", f"-I{protos}", f"--descriptor_set_out={out}", "grpc/health/v1/health.proto"]) == 0
    ours = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    theirs = descriptor_pb2.FileDescriptorProto()
    health_pb2.DESCRIPTOR.CopyToProto(theirs)
    for f in (ours, theirs):
        f.ClearField("options")
        _clear_json_names(f.message_type)
    assert (ours.package, list(ours.message_type), list(ours.service)) == (
        theirs.package,
        list(theirs.message_type),
        list(theirs.service),
    )


def _clear_json_names(messages) -> None:
    """json_name is derived from the field name; descriptors do not all carry it."""
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _clear_json_names(message.nested_type)


def steps() -> list[grpcurl.Step]:
    found = grpcurl.parse_markdown(DOC.read_text())
    assigned = {s.text.split("=", 1)[0] for s in found if s.kind == "assign"}
    assert {"ADDR", "KEY"} <= assigned, "the document defines its placeholders"
    return found


def variables(found: list[grpcurl.Step], **overrides: str) -> dict[str, str]:
    values = dict(s.text.split("=", 1) for s in found if s.kind == "assign")
    values.update(overrides)
    return values


def execute(step: grpcurl.Step, values: dict[str, str]) -> tuple[bool, str, str, str]:
    """Runs one command: (succeeded, stdout, stderr, a status name or exit code)."""
    argv = grpcurl.split(grpcurl.expand(step.text, values))
    if argv[0] == "grpcurl":
        result = grpcurl.run(grpcurl.parse_command(argv), step.stdin)
        return result.ok, result.output, result.error, result.code.name if result.code else ""
    if argv[0] == "pushgate":
        env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGATE_")}
        done = subprocess.run(
            [str(binary()), *argv[1:]], input=step.stdin, capture_output=True, text=True, timeout=WAIT, env=env
        )
        return done.returncode == 0, done.stdout, done.stderr, str(done.returncode)
    raise AssertionError(f"line {step.line}: no runner for {argv[0]!r}")


def test_every_command_runs_and_prints_what_the_document_shows(protos, open_browser):
    gw = Gateway("--node-id", NODE_ID)
    try:
        with_checked = _run_doc(gw, protos, open_browser)
    finally:
        assert gw.stop() == 0
    assert with_checked >= 15, "the document's outputs were checked"


def _run_doc(gw: Gateway, protos: Path, open_browser) -> int:
    from pushgate import PushClient

    found = steps()
    values = variables(found, ADDR=gw.internal, KEY=KEY, PROTOS=str(protos))
    with PushClient(gw.internal) as probe:
        u1 = open_browser("u1", ["chat", "news"], gw=gw, counter=probe)
        u2 = open_browser("u2", ["chat", "news"], gw=gw, counter=probe)
    commands = [s for s in found if s.kind == "command"]
    assert len(commands) >= 15, f"only {len(commands)} commands found in {DOC.name}"
    checked = 0
    for step in commands:
        ok, out, err, status = execute(step, values)
        assert ok, f"{DOC.name} line {step.line} failed ({status}): {step.text}\n{err}"
        if step.expected:
            why = grpcurl.matches(step.expected, out)
            assert why is None, f"{DOC.name} line {step.line} printed something else: {why}"
            checked += 1
    # What the browsers received, as the commands say.
    assert u1.recv_many(7) == ["hello", b"\x00\x01\x02\x03", "hi", "one", "a", "maintenance at 22:00", "hi"]
    assert u1.close_code() == 4502
    assert u2.recv_many(2) == ["two", "maintenance at 22:00"]
    assert u2.close_code() == 4502
    return checked


def _carries_key(argv: list[str]) -> bool:
    return f"authorization: Bearer {KEY}" in argv or "--api-key" in argv


def _is_push_service(argv: list[str]) -> bool:
    return argv[0] == "pushgate" or any(a.startswith("pushgate.v1.PushService/") for a in argv)


def test_with_an_api_key_only_the_commands_carrying_it_push(protos, open_browser):
    found = steps()
    gw = Gateway("--api-key", KEY, "--node-id", NODE_ID)
    try:
        values = variables(found, ADDR=gw.internal, KEY=KEY, PROTOS=str(protos))
        from pushgate import PushClient

        with PushClient(gw.internal, api_key=KEY) as probe:
            open_browser("u1", ["chat", "news"], gw=gw, counter=probe)
        keyed = 0
        for step in (s for s in found if s.kind == "command"):
            argv = grpcurl.split(grpcurl.expand(step.text, values))
            ok, _, err, status = execute(step, values)
            where = f"{DOC.name} line {step.line}"
            if not _is_push_service(argv):
                assert ok, f"{where}: needs no key, yet failed: {err}"
            elif _carries_key(argv):
                assert ok, f"{where}: carries the key, yet failed: {err}"
                keyed += 1
            else:
                assert not ok, f"{where}: pushed without the key"
                assert status == grpc.StatusCode.UNAUTHENTICATED.name or "Unauthenticated" in err, err
        assert keyed >= 1, "the document shows a call with the key"
    finally:
        assert gw.stop() == 0


def test_the_stand_in_refuses_what_it_does_not_understand():
    parse = grpcurl.parse_command
    with pytest.raises(grpcurl.UsageError):
        parse(["grpcurl", "-plaintxt", "127.0.0.1:1", "list"])  # a typo
    with pytest.raises(grpcurl.UsageError):
        parse(["grpcurl", "-plaintext", "127.0.0.1:1"])  # no verb or method
    with pytest.raises(grpcurl.UsageError):
        parse(["grpcurl", "-plaintext", "127.0.0.1:1", "pkg.S/M", "extra"])
    with pytest.raises(grpcurl.UsageError):
        parse(["grpcurl", "-plaintext", "-H", "no-colon", "127.0.0.1:1", "list"])
    with pytest.raises(grpcurl.UsageError):
        grpcurl.run(parse(["grpcurl", "127.0.0.1:1", "list"]))  # TLS: not what the doc's gateway serves
    with pytest.raises(grpcurl.UsageError):
        grpcurl.expand("grpcurl $UNDEFINED list", {"ADDR": "x"})
    inv = parse(["grpcurl", "-plaintext", "-H", "Authorization: Bearer k", "-d", "{}", "h:1", "a.B/C"])
    assert (inv.headers, inv.data, inv.address, inv.verb, inv.symbol) == (
        [("authorization", "Bearer k")],
        "{}",
        "h:1",
        "call",
        "a.B/C",
    )


def test_the_markdown_reader():
    text = """
intro `grpcurl not-in-a-block`
```sh
A=1   # comment
# a comment
grpcurl -plaintext $A \\
  list
#> x
grpcurl -plaintext -d @ $A p.S/M <<'JSON'
{"a": 1}
JSON
```
```json
{"not": "shell"}
```
"""
    found = grpcurl.parse_markdown(text)
    assert [(s.kind, s.text) for s in found] == [
        ("assign", "A=1"),
        ("command", "grpcurl -plaintext $A list"),
        ("command", "grpcurl -plaintext -d @ $A p.S/M"),
    ]
    assert found[1].expected == ["x"] and found[2].stdin == '{"a": 1}\n'


def test_outputs_are_compared_in_substance():
    assert grpcurl.matches(['{"a": 1,', '"b": "2"}'], '{\n  "b": "2",\n  "a": 1\n}\n') is None
    assert grpcurl.matches(['{"a": 1}'], '{"a": 2}') is not None
    assert grpcurl.matches(['{"a": 1}'], '{"a": 1}\n{"a": 1}\n') is not None, "every message counts"
    assert grpcurl.matches(["x", "z"], "x\ny\nz\n") is None
    assert grpcurl.matches(["z", "x"], "x\ny\nz\n") is not None
