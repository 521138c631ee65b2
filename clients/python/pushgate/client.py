"""The blocking producer client."""

from __future__ import annotations

import queue
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, Callable, Optional, TypeVar

import grpc

from . import _common as c
from ._common import Message, PushgateError, PushItem, RetryArg, TLSArg
from ._proto import push_pb2 as pb
from ._proto import push_pb2_grpc as pb_grpc

T = TypeVar("T")

_END = object()


class PushClient:
    """A producer of a pushgate gateway, over gRPC.

    >>> with PushClient("127.0.0.1:50051", api_key="k1") as client:
    ...     reply = client.push("u1", "chat", "hello")
    ...     reply.delivered, reply.seq

    - `target`: the gateway's internal listener, `host:port`.
    - `api_key`: sent as `authorization: Bearer KEY` on every call.
    - `tls`: `None` for plaintext; a `TLS` (CA, client certificate for mutual
      TLS, server name), a CA path, or `True` for the system roots.
    - `retry`: a `RetryPolicy`, a number of attempts, or `None` for the
      default (4 attempts); `1` disables retries. Only `UNAVAILABLE` is retried.
    - `timeout`: deadline in seconds of each unary attempt (`None`: none).
    - `options`: extra gRPC channel options.

    Errors are raised as `PushgateError` carrying the gRPC status code.
    A client is safe to share between threads; `close()` it (or use `with`).
    """

    def __init__(
        self,
        target: str,
        api_key: Optional[str] = None,
        tls: TLSArg = None,
        *,
        retry: RetryArg = None,
        timeout: Optional[float] = 10.0,
        options: Iterable[tuple[str, Any]] = (),
    ) -> None:
        self.target = target
        self.retry = c.retry_policy(retry)
        self.timeout = timeout
        self._tls = c.tls_settings(tls)
        self._metadata = c.metadata(api_key)
        opts = c.channel_options(self._tls, self.retry, options)
        if self._tls is None:
            self._channel = grpc.insecure_channel(target, options=opts)
        else:
            self._channel = grpc.secure_channel(target, self._tls.credentials(), options=opts)
        self._stub = pb_grpc.PushServiceStub(self._channel)
        # Replaceable in tests; waits between attempts.
        self._sleep: Callable[[float], None] = time.sleep

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Closes the channel; calls in progress are cancelled."""
        self._channel.close()

    def __enter__(self) -> "PushClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ calls

    def push(
        self,
        user_id: str,
        event: str,
        message: Message,
        idempotency_key: Optional[str] = None,
        ttl_ms: Optional[int] = None,
        *,
        request_id: Optional[str] = None,
    ) -> pb.PushReply:
        """Pushes one message to the connections of `user_id` subscribed to
        `event`. `message` is text (`str`) or binary (`bytes`).

        Returns the `PushReply`: `.delivered` (connections it was queued to),
        `.seq` (the user's sequence number), `.duplicate` (a repeated
        idempotency key: not delivered again). `ttl_ms` keeps the message out
        of history replay once it is older.
        """
        request = c.push_request(
            user_id,
            event,
            message,
            idempotency_key=idempotency_key,
            ttl_ms=ttl_ms,
            request_id=request_id,
            with_key=self.retry.enabled,
        )
        return self._unary(self._stub.Push, request)

    def push_many(self, items: Iterable[PushItem], *, window: int = 256) -> Iterator[pb.PushReply]:
        """Pushes every item on one `PushStream` and yields one reply per item,
        in item order.

        Items are `(user_id, event, message)` tuples, mappings or
        `PushRequest`s; each gets `request_id` = its index unless it carries
        one. At most `window` pushes are in flight unanswered. A push the
        gateway refused gets a reply with `.error` set (check
        `reply.HasField("error")`) and the stream goes on. When the stream
        fails with UNAVAILABLE, or a reply says UNAVAILABLE, the unanswered
        pushes are sent again on a new stream (with their idempotency keys) per
        the retry policy. Items are read lazily, as the replies are taken.

        Replies always come in item order. Messages keep their order across a
        resend too when the gateway refuses every push after the first one it
        refused, which is what a gateway that is shutting down does.
        """
        if window < 1:
            raise ValueError("window must be at least 1")
        return self._push_many(iter(items), window)

    def _push_many(self, source: Iterator[PushItem], window: int) -> Iterator[pb.PushReply]:
        with_key = self.retry.enabled
        unacked: deque[pb.PushRequest] = deque()
        index = 0
        exhausted = False
        failures = 0
        while True:
            requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
            call = self._stub.PushStream(iter(requests.get, _END), metadata=self._metadata)
            try:
                for request in unacked:
                    requests.put(request)
                if exhausted:
                    requests.put(_END)
                while True:
                    while not exhausted and len(unacked) < window:
                        try:
                            item = next(source)
                        except StopIteration:
                            exhausted = True
                            requests.put(_END)
                            break
                        request = c.item_request(item, with_key=with_key)
                        if not request.request_id:
                            request.request_id = str(index)
                        index += 1
                        unacked.append(request)
                        requests.put(request)
                    if not unacked:
                        _finish(call)
                        return
                    reply = next(call)
                    if c.is_retryable_reply(reply):
                        raise c.ReplyUnavailable(reply)
                    sent = unacked.popleft()
                    c.check_order(sent, reply)
                    failures = 0
                    yield reply
            except StopIteration:
                raise PushgateError(
                    grpc.StatusCode.INTERNAL, f"the stream ended with {len(unacked)} pushes unanswered"
                ) from None
            except (grpc.RpcError, c.ReplyUnavailable) as e:
                code, details = _failure(e)
                failures += 1
                if code != grpc.StatusCode.UNAVAILABLE or failures >= self.retry.max_attempts:
                    raise PushgateError(code, details, failures) from None
                c.log.info("push stream: %s; resending %d pushes (retry %d)", code.name, len(unacked), failures)
                self._sleep(self.retry.backoff(failures))
            finally:
                # Releases gRPC's request-reading thread and ends the call.
                requests.put(_END)
                call.cancel()

    def push_batch(self, items: Iterable[PushItem]) -> list[pb.PushReply]:
        """Pushes the items in one `PushBatch` call; `replies[i]` answers
        `items[i]`. A refused push gets a reply with `.error` set; the others
        still happen. Pushes refused with UNAVAILABLE (and the whole call, when
        it fails so) are retried per the retry policy with their idempotency
        keys; one still refused after the last attempt keeps its error reply.
        """
        requests = [c.item_request(item, with_key=self.retry.enabled) for item in items]
        replies: list[Optional[pb.PushReply]] = [None] * len(requests)
        todo = list(range(len(requests)))
        attempt = 0
        while todo:
            batch = pb.PushBatchRequest(pushes=[requests[i] for i in todo])
            answer, attempt = self._attempts(self._stub.PushBatch, batch, first=attempt + 1)
            if len(answer.replies) != len(todo):
                raise PushgateError(
                    grpc.StatusCode.INTERNAL, f"{len(answer.replies)} replies to a batch of {len(todo)}", attempt
                )
            again = []
            for i, reply in zip(todo, answer.replies):
                replies[i] = reply
                if c.is_retryable_reply(reply) and attempt < self.retry.max_attempts:
                    again.append(i)
            if again:
                c.log.info("push batch: %d pushes UNAVAILABLE; retrying them (retry %d)", len(again), attempt)
                self._sleep(self.retry.backoff(attempt))
            todo = again
        return [r for r in replies if r is not None]

    def broadcast(
        self,
        event: str,
        message: Message,
        user_ids: Optional[Iterable[str]] = None,
        *,
        request_id: Optional[str] = None,
        retry: bool = False,
    ) -> pb.BroadcastReply:
        """Sends `message` to every connection subscribed to `event` (only
        those of `user_ids` when given). Returns the `BroadcastReply`
        (`.delivered`).

        A broadcast has no idempotency key, so it is not retried unless
        `retry=True` (it might then be delivered twice).
        """
        request = c.broadcast_request(event, message, user_ids, request_id)
        return self._unary(self._stub.Broadcast, request, retry=retry)

    def disconnect(self, user_id: str, event: Optional[str] = None) -> int:
        """Closes the user's connections (only those subscribed to `event` when
        given) with WebSocket close code 4502; returns how many were closed."""
        reply = self._unary(self._stub.Disconnect, c.disconnect_request(user_id, event))
        return int(reply.closed)

    def online(self, user_ids: Iterable[str]) -> dict[str, int]:
        """Live connection counts: `{"u1": 2, "u2": 0}`."""
        request = c.online_request(user_ids)
        return c.online_counts(request, self._unary(self._stub.Online, request))

    def stats(self) -> pb.StatsReply:
        """The node's counters (`.connections`, `.users`, `.pushes`, ...)."""
        return self._unary(self._stub.Stats, pb.StatsRequest())

    # ------------------------------------------------------------ internals

    def _unary(self, method: Callable[..., T], request: Any, *, retry: bool = True) -> T:
        """Calls `method`, retrying UNAVAILABLE per the policy."""
        return self._attempts(method, request, retry=retry)[0]

    def _attempts(self, method: Callable[..., T], request: Any, *, retry: bool = True, first: int = 1) -> tuple[T, int]:
        """Calls `method`, retrying UNAVAILABLE per the policy; returns the
        result and the number of the attempt that succeeded. Attempts are
        counted from `first`, so a batch's per-push retries and its whole-call
        retries share one budget."""
        attempt = first
        while True:
            try:
                return method(request, timeout=self.timeout, metadata=self._metadata), attempt
            except grpc.RpcError as e:
                code, details = _failure(e)
                if code != grpc.StatusCode.UNAVAILABLE or not retry or attempt >= self.retry.max_attempts:
                    raise PushgateError(code, details, attempt) from None
                c.log.info("call %s: %s (%s); retry %d", type(request).__name__, code.name, details, attempt)
                self._sleep(self.retry.backoff(attempt))
                attempt += 1


def _failure(e: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(e, c.ReplyUnavailable):
        return grpc.StatusCode.UNAVAILABLE, e.reply.error.message
    error = PushgateError.from_rpc(e)
    return error.code, error.details


def _finish(call: Any) -> None:
    """Waits for the end of a stream whose pushes were all answered, so it
    closes cleanly instead of being cancelled."""
    try:
        for reply in call:
            raise PushgateError(grpc.StatusCode.INTERNAL, f"a reply to no push: {reply.request_id!r}")
    except grpc.RpcError:
        pass  # every push was answered; how the stream ended changes nothing
