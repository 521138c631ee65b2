"""What the sync and the asyncio clients share: TLS settings, the retry
policy, the error type, and turning Python values into proto requests."""

from __future__ import annotations

import logging
import os
import random
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Optional, Tuple, Union

import grpc

from ._proto import push_pb2 as pb

log = logging.getLogger("pushgate")

#: A payload: `str` is pushed as text (a WebSocket text frame), `bytes` as
#: binary data (a binary frame).
Message = Union[str, bytes, bytearray, memoryview]

#: One push for `push_many` / `push_batch`: a tuple `(user_id, event, message)`,
#: a mapping with the keys of `PushClient.push` (`user_id`, `event`, `message`
#: and optionally `idempotency_key`, `ttl_ms`, `request_id`), or a ready
#: `PushRequest`.
PushItem = Union[Tuple[str, str, Message], Mapping[str, Any], pb.PushRequest]

PathOrPem = Union[str, "os.PathLike[str]", bytes]


class PushgateError(Exception):
    """A call the gateway (or the transport to it) refused.

    `code` is the gRPC status (`grpc.StatusCode.UNAUTHENTICATED`,
    `INVALID_ARGUMENT`, `UNAVAILABLE`, ...), `details` the gateway's message
    (it names the offending field), and `attempts` how many times the call was
    tried before giving up.
    """

    def __init__(self, code: grpc.StatusCode, details: str, attempts: int = 1) -> None:
        super().__init__(f"{code.name}: {details}" if details else code.name)
        self.code = code
        self.details = details
        self.attempts = attempts

    @classmethod
    def from_rpc(cls, error: grpc.RpcError, attempts: int = 1) -> "PushgateError":
        """Wraps a `grpc.RpcError` (or a `grpc.aio.AioRpcError`)."""
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        return cls(code or grpc.StatusCode.UNKNOWN, details or "", attempts)


def status_code(number: int) -> grpc.StatusCode:
    """The `grpc.StatusCode` of a status number (as in `PushError.code`)."""
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    return grpc.StatusCode.UNKNOWN


UNAVAILABLE_NUMBER = grpc.StatusCode.UNAVAILABLE.value[0]


@dataclass(frozen=True)
class TLS:
    """TLS settings for the connection to the gateway's internal listener.

    - `ca`: the CA that signed the gateway's certificate, as a PEM file path or
      PEM bytes; `None` trusts the system's roots.
    - `cert`, `key`: this producer's client certificate chain and private key
      (path or PEM bytes), for a gateway started with `--tls-client-ca`
      (mutual TLS). Give both or neither.
    - `server_name`: the name to verify the gateway's certificate against when
      it differs from the host in the target (e.g. connecting to an IP address
      with a certificate issued for `localhost`).

    `PushClient(..., tls=...)` also takes `True` (TLS, system roots) or a CA
    path alone.
    """

    ca: Optional[PathOrPem] = None
    cert: Optional[PathOrPem] = None
    key: Optional[PathOrPem] = None
    server_name: Optional[str] = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("TLS: give both cert and key for mutual TLS, or neither")

    def credentials(self) -> grpc.ChannelCredentials:
        """The gRPC channel credentials for these settings."""
        return grpc.ssl_channel_credentials(
            root_certificates=_pem(self.ca),
            private_key=_pem(self.key),
            certificate_chain=_pem(self.cert),
        )

    def channel_options(self) -> list[tuple[str, Any]]:
        """Channel options these settings need (the server name override)."""
        if self.server_name:
            return [("grpc.ssl_target_name_override", self.server_name)]
        return []


TLSArg = Union[TLS, bool, str, "os.PathLike[str]", None]


def tls_settings(tls: TLSArg) -> Optional[TLS]:
    """Normalises the `tls` argument of the clients: `None`/`False` is
    plaintext, `True` TLS with the system roots, a path a CA file."""
    if tls is None or tls is False:
        return None
    if tls is True:
        return TLS()
    if isinstance(tls, TLS):
        return tls
    if isinstance(tls, (str, os.PathLike)):
        return TLS(ca=tls)
    raise TypeError(f"tls: expected a TLS, a CA path, True or None, got {type(tls).__name__}")


def _pem(value: Optional[PathOrPem]) -> Optional[bytes]:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    with open(value, "rb") as f:
        return f.read()


@dataclass(frozen=True)
class RetryPolicy:
    """How calls that fail with `UNAVAILABLE` are retried.

    A call is tried at most `max_attempts` times (1 disables retries). Before
    retry number n (1, 2, ...) the client waits a random time between half and
    all of `min(max_backoff, initial_backoff * multiplier ** (n - 1))` seconds:
    exponential backoff with jitter, so producers that failed together do not
    come back together.

    While retries are enabled every push carries an idempotency key (a uuid4
    when the caller gave none), from its first attempt on: the gateway
    acknowledges a repeat of a key with the first push's `seq`
    (`duplicate=True`) and does not deliver it again, so a retry whose first
    attempt did reach the gateway is never delivered twice.
    """

    max_attempts: int = 4
    initial_backoff: float = 0.1
    max_backoff: float = 3.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("RetryPolicy: backoffs must be >= 0 and the multiplier >= 1")

    @property
    def enabled(self) -> bool:
        """True when a failed call may be tried again."""
        return self.max_attempts > 1

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number `retry` (1-based)."""
        cap = min(self.max_backoff, self.initial_backoff * self.multiplier ** max(retry - 1, 0))
        return (rng or random).uniform(cap / 2, cap)

    def channel_options(self) -> list[tuple[str, Any]]:
        """Keeps gRPC's own reconnect backoff within this policy's, so a retry
        after a lost connection does not fail fast on a channel still waiting
        to reconnect."""
        initial_ms = max(int(self.initial_backoff * 1000), 10)
        max_ms = max(int(self.max_backoff * 1000), initial_ms)
        return [
            ("grpc.initial_reconnect_backoff_ms", initial_ms),
            ("grpc.min_reconnect_backoff_ms", initial_ms),
            ("grpc.max_reconnect_backoff_ms", max_ms),
        ]


RetryArg = Union[RetryPolicy, int, None]


def retry_policy(retry: RetryArg) -> RetryPolicy:
    """Normalises the `retry` argument: a policy, a number of attempts, or
    `None` for the default policy."""
    if retry is None:
        return RetryPolicy()
    if isinstance(retry, RetryPolicy):
        return retry
    if isinstance(retry, int) and not isinstance(retry, bool):
        return RetryPolicy(max_attempts=retry)
    raise TypeError(f"retry: expected a RetryPolicy, an int or None, got {type(retry).__name__}")


def metadata(api_key: Optional[str]) -> tuple[tuple[str, str], ...]:
    """The call metadata carrying the producer key."""
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


def new_idempotency_key() -> str:
    """A fresh idempotency key."""
    return uuid.uuid4().hex


def _set_payload(request: Any, message: Message) -> None:
    if isinstance(message, str):
        request.message = message
    elif isinstance(message, (bytes, bytearray, memoryview)):
        request.data = bytes(message)
    else:
        raise TypeError(f"message: expected str or bytes, got {type(message).__name__}")


def push_request(
    user_id: str,
    event: str,
    message: Message,
    *,
    idempotency_key: Optional[str] = None,
    ttl_ms: Optional[int] = None,
    request_id: Optional[str] = None,
    with_key: bool = False,
) -> pb.PushRequest:
    """A `PushRequest`; with `with_key`, one without a key gets a fresh one."""
    request = pb.PushRequest(user_id=user_id, event=event)
    _set_payload(request, message)
    if idempotency_key:
        request.idempotency_key = idempotency_key
    elif with_key:
        request.idempotency_key = new_idempotency_key()
    if ttl_ms:
        request.ttl_ms = int(ttl_ms)
    if request_id:
        request.request_id = request_id
    return request


_ITEM_KEYS = {"user_id", "event", "message", "idempotency_key", "ttl_ms", "request_id"}


def item_request(item: PushItem, *, with_key: bool) -> pb.PushRequest:
    """The `PushRequest` for one item of `push_many` / `push_batch`."""
    if isinstance(item, pb.PushRequest):
        request = pb.PushRequest()
        request.CopyFrom(item)
        if with_key and not request.idempotency_key:
            request.idempotency_key = new_idempotency_key()
        return request
    if isinstance(item, Mapping):
        unknown = set(item) - _ITEM_KEYS
        if unknown:
            raise TypeError(f"push item: unknown keys {sorted(unknown)}")
        fields = dict(item)
        return push_request(
            fields.pop("user_id"), fields.pop("event"), fields.pop("message", ""), with_key=with_key, **fields
        )
    if isinstance(item, tuple) and len(item) == 3:
        user_id, event, message = item
        return push_request(user_id, event, message, with_key=with_key)
    raise TypeError("push item: expected (user_id, event, message), a mapping or a PushRequest")


def broadcast_request(
    event: str, message: Message, user_ids: Optional[Iterable[str]], request_id: Optional[str]
) -> pb.BroadcastRequest:
    """A `BroadcastRequest`."""
    request = pb.BroadcastRequest(event=event, user_ids=_user_list(user_ids) if user_ids is not None else [])
    _set_payload(request, message)
    if request_id:
        request.request_id = request_id
    return request


def disconnect_request(user_id: str, event: Optional[str]) -> pb.DisconnectRequest:
    """A `DisconnectRequest` (all of the user's events when `event` is None)."""
    request = pb.DisconnectRequest(user_id=user_id)
    if event is not None:
        request.event = event
    return request


def _user_list(user_ids: Iterable[str]) -> list[str]:
    if isinstance(user_ids, str):
        return [user_ids]
    return list(user_ids)


def online_request(user_ids: Iterable[str]) -> pb.OnlineRequest:
    """An `OnlineRequest`; a single user id is accepted as well."""
    return pb.OnlineRequest(user_ids=_user_list(user_ids))


def online_counts(request: pb.OnlineRequest, reply: pb.OnlineReply) -> dict[str, int]:
    """`{user_id: connections}` for every requested user, in request order."""
    return {user: int(reply.connections.get(user, 0)) for user in request.user_ids}


def channel_options(tls: Optional[TLS], retry: RetryPolicy, extra: Iterable[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """All channel options: reconnect backoff, TLS name override, the caller's."""
    options = retry.channel_options()
    if tls is not None:
        options += tls.channel_options()
    options += list(extra)
    return options


def is_retryable_reply(reply: pb.PushReply) -> bool:
    """True for a stream or batch reply refused with UNAVAILABLE."""
    return reply.HasField("error") and reply.error.code == UNAVAILABLE_NUMBER


class ReplyUnavailable(Exception):
    """A stream reply refused with UNAVAILABLE: handled like a stream failure."""

    def __init__(self, reply: pb.PushReply) -> None:
        super().__init__(reply.error.message)
        self.reply = reply


def check_order(sent: pb.PushRequest, reply: pb.PushReply) -> None:
    """Fails unless `reply` answers `sent` (stream replies come in order)."""
    if reply.request_id != sent.request_id:
        raise PushgateError(
            grpc.StatusCode.INTERNAL,
            f"reply for request {reply.request_id!r} where {sent.request_id!r} was expected",
        )
