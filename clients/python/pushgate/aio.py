"""The asyncio producer client: the same calls as `PushClient`, awaitable."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any, Awaitable, Callable, Optional, TypeVar, Union

import grpc
import grpc.aio

from . import _common as c
from ._common import Message, PushgateError, PushItem, RetryArg, TLSArg
from ._proto import push_pb2 as pb
from ._proto import push_pb2_grpc as pb_grpc

T = TypeVar("T")


class AsyncPushClient:
    """A producer of a pushgate gateway for asyncio programs.

    >>> async with AsyncPushClient("127.0.0.1:50051") as client:
    ...     reply = await client.push("u1", "chat", "hello")
    ...     async for r in client.push_many(("u1", "chat", f"m{i}") for i in range(100)):
    ...         ...

    Takes the same arguments as `PushClient` and has the same methods, each a
    coroutine; `push_many` is an async iterator and accepts a sync or an
    async iterable of items. Create it inside the running event loop.
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
            self._channel = grpc.aio.insecure_channel(target, options=opts)
        else:
            self._channel = grpc.aio.secure_channel(target, self._tls.credentials(), options=opts)
        self._stub = pb_grpc.PushServiceStub(self._channel)
        # Replaceable in tests; waits between attempts.
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    # ------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        """Closes the channel; calls in progress are cancelled."""
        await self._channel.close()

    async def __aenter__(self) -> "AsyncPushClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ calls

    async def push(
        self,
        user_id: str,
        event: str,
        message: Message,
        idempotency_key: Optional[str] = None,
        ttl_ms: Optional[int] = None,
        *,
        request_id: Optional[str] = None,
    ) -> pb.PushReply:
        """Pushes one message; see `PushClient.push`."""
        request = c.push_request(
            user_id,
            event,
            message,
            idempotency_key=idempotency_key,
            ttl_ms=ttl_ms,
            request_id=request_id,
            with_key=self.retry.enabled,
        )
        return await self._unary(self._stub.Push, request)

    def push_many(
        self, items: Union[Iterable[PushItem], AsyncIterable[PushItem]], *, window: int = 256
    ) -> AsyncIterator[pb.PushReply]:
        """Pushes every item on one `PushStream`, yielding one reply per item
        in item order; see `PushClient.push_many`."""
        if window < 1:
            raise ValueError("window must be at least 1")
        return self._push_many(_aiter(items), window)

    async def _push_many(self, source: AsyncIterator[PushItem], window: int) -> AsyncIterator[pb.PushReply]:
        with_key = self.retry.enabled
        unacked: deque[pb.PushRequest] = deque()
        index = 0
        exhausted = False
        failures = 0
        while True:
            call = self._stub.PushStream(metadata=self._metadata)
            try:
                for request in unacked:
                    await call.write(request)
                closed = False
                if exhausted:
                    await call.done_writing()
                    closed = True
                while True:
                    while not exhausted and len(unacked) < window:
                        try:
                            item = await source.__anext__()
                        except StopAsyncIteration:
                            exhausted = True
                            break
                        request = c.item_request(item, with_key=with_key)
                        if not request.request_id:
                            request.request_id = str(index)
                        index += 1
                        unacked.append(request)
                        await call.write(request)
                    if exhausted and not closed:
                        await call.done_writing()
                        closed = True
                    if not unacked:
                        await _finish(call)
                        return
                    reply = await call.read()
                    if reply is grpc.aio.EOF:
                        raise PushgateError(
                            grpc.StatusCode.INTERNAL, f"the stream ended with {len(unacked)} pushes unanswered"
                        )
                    if c.is_retryable_reply(reply):
                        raise c.ReplyUnavailable(reply)
                    sent = unacked.popleft()
                    c.check_order(sent, reply)
                    failures = 0
                    yield reply
            except (grpc.RpcError, asyncio.InvalidStateError, c.ReplyUnavailable) as e:
                code, details = await _failure(e, call)
                failures += 1
                if code != grpc.StatusCode.UNAVAILABLE or failures >= self.retry.max_attempts:
                    raise PushgateError(code, details, failures) from None
                c.log.info("push stream: %s; resending %d pushes (retry %d)", code.name, len(unacked), failures)
                await self._sleep(self.retry.backoff(failures))
            finally:
                call.cancel()

    async def push_batch(self, items: Iterable[PushItem]) -> list[pb.PushReply]:
        """Pushes the items in one `PushBatch` call; see `PushClient.push_batch`."""
        requests = [c.item_request(item, with_key=self.retry.enabled) for item in items]
        replies: list[Optional[pb.PushReply]] = [None] * len(requests)
        todo = list(range(len(requests)))
        attempt = 0
        while todo:
            batch = pb.PushBatchRequest(pushes=[requests[i] for i in todo])
            answer, attempt = await self._attempts(self._stub.PushBatch, batch, first=attempt + 1)
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
                await self._sleep(self.retry.backoff(attempt))
            todo = again
        return [r for r in replies if r is not None]

    async def broadcast(
        self,
        event: str,
        message: Message,
        user_ids: Optional[Iterable[str]] = None,
        *,
        request_id: Optional[str] = None,
        retry: bool = False,
    ) -> pb.BroadcastReply:
        """Sends `message` to every connection subscribed to `event`; see
        `PushClient.broadcast` (not retried unless `retry=True`)."""
        request = c.broadcast_request(event, message, user_ids, request_id)
        return await self._unary(self._stub.Broadcast, request, retry=retry)

    async def disconnect(self, user_id: str, event: Optional[str] = None) -> int:
        """Closes the user's connections with 4502; returns how many."""
        reply = await self._unary(self._stub.Disconnect, c.disconnect_request(user_id, event))
        return int(reply.closed)

    async def online(self, user_ids: Iterable[str]) -> dict[str, int]:
        """Live connection counts: `{"u1": 2, "u2": 0}`."""
        request = c.online_request(user_ids)
        return c.online_counts(request, await self._unary(self._stub.Online, request))

    async def stats(self) -> pb.StatsReply:
        """The node's counters."""
        return await self._unary(self._stub.Stats, pb.StatsRequest())

    # ------------------------------------------------------------ internals

    async def _unary(self, method: Callable[..., Any], request: Any, *, retry: bool = True) -> Any:
        return (await self._attempts(method, request, retry=retry))[0]

    async def _attempts(
        self, method: Callable[..., Any], request: Any, *, retry: bool = True, first: int = 1
    ) -> tuple[Any, int]:
        attempt = first
        while True:
            try:
                return await method(request, timeout=self.timeout, metadata=self._metadata), attempt
            except grpc.RpcError as e:
                error = PushgateError.from_rpc(e, attempt)
                if error.code != grpc.StatusCode.UNAVAILABLE or not retry or attempt >= self.retry.max_attempts:
                    raise error from None
                c.log.info("call %s: %s; retry %d", type(request).__name__, error, attempt)
                await self._sleep(self.retry.backoff(attempt))
                attempt += 1


async def _failure(e: BaseException, call: Any) -> tuple[grpc.StatusCode, str]:
    if isinstance(e, c.ReplyUnavailable):
        return grpc.StatusCode.UNAVAILABLE, e.reply.error.message
    if isinstance(e, grpc.RpcError):
        error = PushgateError.from_rpc(e)
        return error.code, error.details
    # A write on a call that has already ended: its status says why.
    return await call.code(), await call.details() or str(e)


async def _finish(call: Any) -> None:
    """Waits for the end of a stream whose pushes were all answered, so it
    closes cleanly instead of being cancelled."""
    try:
        reply = await call.read()
    except grpc.RpcError:
        return  # every push was answered; how the stream ended changes nothing
    if reply is not grpc.aio.EOF:
        raise PushgateError(grpc.StatusCode.INTERNAL, f"a reply to no push: {reply.request_id!r}")


async def _aiter(items: Union[Iterable[T], AsyncIterable[T]]) -> AsyncIterator[T]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
