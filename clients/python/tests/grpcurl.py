"""A test-only stand-in for grpcurl, so the commands of clients/grpcurl.md can
be run where grpcurl is not installed.

It understands the part of grpcurl's command line the document uses, and
refuses anything else (so a typo in the document fails the test instead of
being ignored):

    grpcurl -plaintext [-H 'name: value']... [-d JSON | -d @] ADDRESS list
    grpcurl -plaintext ADDRESS describe SYMBOL
    grpcurl -plaintext [-H ...] [-d ...] [-import-path DIR -proto FILE]... ADDRESS pkg.Service/Method

Methods are resolved like grpcurl does: through the server's reflection
service (v1, falling back to v1alpha) with grpcio-reflection's descriptor
database, or from `-proto` source files (compiled with grpcio-tools) when
given. `-d` JSON is parsed with the proto3 JSON mapping (`json_format`), `-d @`
reads a stream of JSON messages from standard input, and replies are printed
as grpcurl prints them: proto3 JSON with lowerCamelCase names, two-space
indent, one message after another.

`parse_markdown` reads the shell blocks of a markdown file into `Step`s:
variable assignments, commands (with `\\` continuations and `<<'TAG'`
here-documents), and the expected output shown on `#>` lines after a command.
"""

from __future__ import annotations

import json
import re
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import grpc
from google.protobuf import descriptor_pb2, json_format
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message_factory import GetMessageClass
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_reflection.v1alpha.reflection_pb2 import ServerReflectionRequest, ServerReflectionResponse


class UsageError(Exception):
    """The command line is not one this stand-in (or grpcurl) accepts."""


# ------------------------------------------------------------------ markdown


@dataclass
class Step:
    """One thing a shell block does."""

    line: int  # 1-based line in the markdown file
    kind: str  # "assign" or "command"
    text: str  # the command (continuations joined) or `NAME=value`
    stdin: Optional[str] = None  # a here-document's body
    expected: list[str] = field(default_factory=list)  # the `#>` lines, without the marker


_ASSIGN = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(\S*)\s*(#.*)?$")
_HEREDOC = re.compile(r"<<-?\s*'?\"?([A-Za-z_]+)'?\"?\s*$")


def parse_markdown(text: str, languages: tuple[str, ...] = ("sh", "bash", "shell")) -> list[Step]:
    """The steps of every fenced block in `languages`."""
    steps: list[Step] = []
    lines = text.splitlines()
    i = 0
    in_block = False
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            if in_block:
                in_block = False
            else:
                in_block = stripped[3:].strip() in languages
            i += 1
            continue
        if not in_block:
            i += 1
            continue
        start = i + 1
        if stripped.startswith("#>"):
            if not steps or steps[-1].kind != "command":
                raise UsageError(f"line {start}: expected output with no command before it")
            steps[-1].expected.append(stripped[3:] if stripped.startswith("#> ") else stripped[2:])
            i += 1
            continue
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        assign = _ASSIGN.match(stripped)
        if assign:
            steps.append(Step(start, "assign", f"{assign.group(1)}={assign.group(2)}"))
            i += 1
            continue
        command = stripped
        while command.endswith("\\"):
            i += 1
            if i >= len(lines):
                raise UsageError(f"line {start}: a continuation runs past the block")
            command = command[:-1].rstrip() + " " + lines[i].strip()
        stdin = None
        heredoc = _HEREDOC.search(command)
        if heredoc:
            tag = heredoc.group(1)
            command = command[: heredoc.start()].rstrip()
            body = []
            i += 1
            while i < len(lines) and lines[i].strip() != tag:
                body.append(lines[i])
                i += 1
            if i >= len(lines):
                raise UsageError(f"line {start}: here-document {tag} is not closed")
            stdin = "\n".join(body) + "\n"
        steps.append(Step(start, "command", command, stdin))
        i += 1
    if in_block:
        raise UsageError("a code block is not closed")
    return steps


def expand(text: str, variables: dict[str, str]) -> str:
    """Replaces `$NAME` and `${NAME}` of the given variables; any other
    variable left is an error (the document must define what it uses)."""

    def sub(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise UsageError(f"${name} is not defined in the document")
        return variables[name]

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", sub, text)


# ------------------------------------------------------------------ grpcurl


@dataclass
class Invocation:
    plaintext: bool = False
    headers: list[tuple[str, str]] = field(default_factory=list)
    data: Optional[str] = None
    import_paths: list[str] = field(default_factory=list)
    protos: list[str] = field(default_factory=list)
    emit_defaults: bool = False
    address: str = ""
    verb: str = ""  # "list", "describe" or "call"
    symbol: str = ""


_VALUE_FLAGS = {"-H", "-d", "-import-path", "-proto"}
_BOOL_FLAGS = {"-plaintext", "-emit-defaults"}


def parse_command(argv: list[str]) -> Invocation:
    """grpcurl's command line (the supported part)."""
    if not argv or argv[0] != "grpcurl":
        raise UsageError(f"not a grpcurl command: {argv[:1]}")
    inv = Invocation()
    args = argv[1:]
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-") and not positional:
            name, _, inline = arg.partition("=")
            name = "-" + name.lstrip("-")  # grpcurl accepts -flag and --flag
            if name in _BOOL_FLAGS:
                setattr(inv, name[1:].replace("-", "_"), inline != "false")
            elif name in _VALUE_FLAGS:
                if inline:
                    value = inline
                else:
                    i += 1
                    if i >= len(args):
                        raise UsageError(f"{name} needs a value")
                    value = args[i]
                if name == "-H":
                    key, sep, val = value.partition(":")
                    if not sep:
                        raise UsageError(f"-H {value!r}: expected 'name: value'")
                    inv.headers.append((key.strip().lower(), val.strip()))
                elif name == "-d":
                    inv.data = value
                elif name == "-import-path":
                    inv.import_paths.append(value)
                else:
                    inv.protos.append(value)
            else:
                raise UsageError(f"unsupported flag {arg}")
        else:
            positional.append(arg)
        i += 1
    if not positional:
        raise UsageError("no address")
    inv.address, rest = positional[0], positional[1:]
    if rest[:1] == ["list"]:
        inv.verb, rest = "list", rest[1:]
        if rest:
            inv.symbol, rest = rest[0], rest[1:]
    elif rest[:1] == ["describe"]:
        inv.verb, rest = "describe", rest[1:]
        if rest:
            inv.symbol, rest = rest[0], rest[1:]
    elif rest:
        inv.verb, inv.symbol, rest = "call", rest[0], rest[1:]
    else:
        raise UsageError("expected list, describe or a method")
    if rest:
        raise UsageError(f"unexpected arguments {rest}")
    if inv.data is not None and inv.verb != "call":
        raise UsageError("-d is only for a method call")
    if inv.protos and not inv.import_paths:
        raise UsageError("-proto without -import-path")
    return inv


@dataclass
class Result:
    ok: bool
    output: str  # what grpcurl would print on standard output
    error: str = ""  # what it would print on standard error
    code: Optional[grpc.StatusCode] = None  # the status of a failed call


_REFLECTION = {
    "v1": "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "v1alpha": "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
}


def _reflection_db(channel: grpc.Channel) -> ProtoReflectionDescriptorDatabase:
    """grpcio-reflection's descriptor database, speaking reflection v1 when the
    server has it and v1alpha otherwise (as grpcurl does). The two versions'
    messages are the same on the wire, so only the method path differs."""
    db = ProtoReflectionDescriptorDatabase(channel)
    v1 = channel.stream_stream(
        _REFLECTION["v1"],
        request_serializer=ServerReflectionRequest.SerializeToString,
        response_deserializer=ServerReflectionResponse.FromString,
    )
    try:
        list(v1(iter([ServerReflectionRequest(list_services="")]), timeout=10))
        db._stub.ServerReflectionInfo = v1  # the database's only use of its stub
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.UNIMPLEMENTED:
            raise
    return db


def _pool_from_protos(inv: Invocation) -> DescriptorPool:
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        include = str(Path(protoc.__file__).parent / "_proto")
        args = ["protoc", *(f"-I{p}" for p in inv.import_paths), f"-I{include}"]
        args += [f"--descriptor_set_out={out}", "--include_imports", *inv.protos]
        if protoc.main(args) != 0:
            raise UsageError(f"could not compile {inv.protos} from {inv.import_paths}")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = DescriptorPool()
    for f in files.file:
        pool.Add(f)
    return pool


def _services_of(pool: DescriptorPool, protos: list[str]) -> list[str]:
    names = []
    for proto in protos:
        names += [s.full_name for s in pool.FindFileByName(proto).services_by_name.values()]
    return sorted(names)


def _format(message) -> str:
    return json_format.MessageToJson(message, indent=2)


def _describe(pool: DescriptorPool, symbol: str) -> str:
    try:
        service = pool.FindServiceByName(symbol)
    except KeyError:
        service = None
    if service is not None:
        lines = [f"{symbol} is a service:", f"service {service.name} {{"]
        for m in service.methods:
            cs = "stream " if m.client_streaming else ""
            ss = "stream " if m.server_streaming else ""
            lines.append(
                f"  rpc {m.name} ( {cs}.{m.input_type.full_name} ) returns ( {ss}.{m.output_type.full_name} );"
            )
        return "\n".join(lines + ["}"])
    message = pool.FindMessageTypeByName(symbol)
    lines = [f"{symbol} is a message:", f"message {message.name} {{"]
    for f in message.fields:
        lines.append(f"  {f.name} = {f.number};")
    return "\n".join(lines + ["}"])


def run(inv: Invocation, stdin: Optional[str] = None, timeout: float = 10.0) -> Result:
    """Runs one grpcurl invocation against its address (plaintext only: the
    tests serve no TLS to this stand-in)."""
    if not inv.plaintext:
        raise UsageError("the stand-in speaks plaintext only: add -plaintext")
    with grpc.insecure_channel(inv.address) as channel:
        try:
            if inv.protos:
                pool = _pool_from_protos(inv)
                services = _services_of(pool, inv.protos)
            else:
                db = _reflection_db(channel)
                pool = DescriptorPool(db)
                services = sorted(db.get_services())
            if inv.verb == "list":
                if inv.symbol:
                    service = pool.FindServiceByName(inv.symbol)
                    return Result(True, "\n".join(sorted(m.full_name for m in service.methods)) + "\n")
                return Result(True, "\n".join(services) + "\n")
            if inv.verb == "describe":
                if not inv.symbol:
                    return Result(True, "\n".join(_describe(pool, s) for s in services) + "\n")
                return Result(True, _describe(pool, inv.symbol) + "\n")
            return _call(channel, pool, inv, stdin, timeout)
        except grpc.RpcError as e:
            return Result(False, "", f"ERROR:\n  Code: {e.code().name}\n  Message: {e.details()}", e.code())
        except KeyError as e:
            return Result(False, "", f"Failed to resolve symbol {e}")


def _call(channel, pool: DescriptorPool, inv: Invocation, stdin: Optional[str], timeout: float) -> Result:
    service_name, sep, method_name = inv.symbol.replace("/", ".").rpartition(".")
    if not sep:
        raise UsageError(f"{inv.symbol}: expected package.Service/Method")
    method = pool.FindServiceByName(service_name).methods_by_name[method_name]
    request_class = GetMessageClass(method.input_type)
    response_class = GetMessageClass(method.output_type)
    if inv.data == "@":
        if stdin is None:
            raise UsageError("-d @ needs standard input (a here-document)")
        requests = [json_format.ParseDict(d, request_class()) for d in _json_stream(stdin)]
    else:
        requests = [json_format.ParseDict(d, request_class()) for d in _json_stream(inv.data or "")] or [
            request_class()
        ]
    if not method.client_streaming and len(requests) != 1:
        raise UsageError(f"{inv.symbol} takes one request, got {len(requests)}")
    path = f"/{service_name}/{method_name}"
    kind = {
        (False, False): channel.unary_unary,
        (False, True): channel.unary_stream,
        (True, False): channel.stream_unary,
        (True, True): channel.stream_stream,
    }[(method.client_streaming, method.server_streaming)]
    call = kind(path, request_serializer=lambda m: m.SerializeToString(), response_deserializer=response_class.FromString)
    argument = iter(requests) if method.client_streaming else requests[0]
    response = call(argument, timeout=timeout, metadata=inv.headers)
    replies = list(response) if method.server_streaming else [response]
    return Result(True, "".join(_format(r) + "\n" for r in replies))


def _json_stream(text: str) -> list:
    """The JSON values of `text`, one after another (grpcurl's input format)."""
    decoder = json.JSONDecoder()
    values, i = [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return values
        value, i = decoder.raw_decode(text, i)
        values.append(value)


def matches(expected: list[str], output: str) -> Optional[str]:
    """None when `output` shows what the `#>` lines say; else why not.

    JSON output is compared as data (every message, every field); other
    output must contain the expected lines in order."""
    want = "\n".join(expected)
    try:
        want_json = _json_stream(want)
    except ValueError:
        want_json = None
    if want_json:
        got = _json_stream(output)
        return None if got == want_json else f"expected {want_json}, got {got}"
    lines = output.splitlines()
    pos = 0
    for line in expected:
        try:
            pos = lines.index(line, pos) + 1
        except ValueError:
            return f"line {line!r} not in the output:\n{output}"
    return None


def split(command: str) -> list[str]:
    """The words of a shell command line."""
    return shlex.split(command)
