"""Retries on UNAVAILABLE, and the idempotency keys that make them safe.

A real gRPC server written here stands between the client and the real
gateway: it forwards each push to the gateway and then, on the attempts it is
told to fail, answers UNAVAILABLE anyway, as when a reply is lost after the
gateway accepted the push. The retry carries the same idempotency key, so the
gateway acknowledges it as a duplicate and the browser sees the message once.
The real gateway's own UNAVAILABLE (while it shuts down after SIGTERM) is
tested at the end.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent import futures
from typing import Iterator, Optional

import grpc
import pytest

from conftest import FAST_RETRY
from harness import Gateway
from pushgate import PushClient, PushgateError, RetryPolicy, pb
from pushgate._proto import push_pb2_grpc as pb_grpc

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]


class LossyProxy(pb_grpc.PushServiceServicer):
    """Forwards PushService calls to `upstream` and fails some of them with
    UNAVAILABLE after forwarding. Records every request it received."""

    def __init__(self, upstream: Optional[str]) -> None:
        self.channel = grpc.insecure_channel(upstream) if upstream else None
        self.stub = pb_grpc.PushServiceStub(self.channel) if self.channel else None
        self.lock = threading.Lock()
        self.requests: list[tuple[str, object]] = []
        self.fail_calls = 0  # unary calls to fail (after forwarding)
        self.fail_stream_after: Optional[int] = None  # first stream: abort after this many replies
        self.refuse_stream_from: Optional[int] = None  # first stream: answer this item and later ones with error 14
        self.refuse_batch_items: set[int] = set()  # first batch: these pushes get error 14
        self.forward_refused = True  # a refused batch push or stream item is still forwarded
        self.streams = 0
        self.batches = 0
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        pb_grpc.add_PushServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.target = f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.stop(grace=None)
        if self.channel:
            self.channel.close()

    def _record(self, method: str, request: object) -> None:
        with self.lock:
            self.requests.append((method, request))

    def _forward_push(self, request: pb.PushRequest) -> pb.PushReply:
        if self.stub is None:
            return pb.PushReply(delivered=1, seq=1, request_id=request.request_id)
        return self.stub.Push(request, timeout=10)

    def _should_fail(self) -> bool:
        with self.lock:
            if self.fail_calls > 0:
                self.fail_calls -= 1
                return True
            return False

    def Push(self, request, context):
        self._record("Push", request)
        reply = self._forward_push(request)
        if self._should_fail():
            context.abort(grpc.StatusCode.UNAVAILABLE, "reply lost on the way back")
        return reply

    def Broadcast(self, request, context):
        self._record("Broadcast", request)
        if self._should_fail():
            context.abort(grpc.StatusCode.UNAVAILABLE, "not now")
        return pb.BroadcastReply(delivered=0, request_id=request.request_id)

    def Online(self, request, context):
        self._record("Online", request)
        if self._should_fail():
            context.abort(grpc.StatusCode.UNAVAILABLE, "not now")
        return pb.OnlineReply(connections={u: 0 for u in request.user_ids})

    def PushBatch(self, request, context):
        self._record("PushBatch", request)
        with self.lock:
            self.batches += 1
            first = self.batches == 1
        replies = []
        for i, push in enumerate(request.pushes):
            if first and i in self.refuse_batch_items:
                if self.forward_refused:
                    self._forward_push(push)
                replies.append(pb.PushReply(error=pb.PushError(code=UNAVAILABLE, message="shutting down")))
            else:
                replies.append(self._forward_push(push))
        if self._should_fail():
            context.abort(grpc.StatusCode.UNAVAILABLE, "reply lost on the way back")
        return pb.PushBatchReply(replies=replies)

    def PushStream(self, request_iterator, context):
        with self.lock:
            self.streams += 1
            first = self.streams == 1
        for n, request in enumerate(request_iterator):
            self._record("PushStream", request)
            if first and n == self.fail_stream_after:
                self._forward_push(request)  # accepted upstream, but the stream breaks
                context.abort(grpc.StatusCode.UNAVAILABLE, "stream broken")
            if first and self.refuse_stream_from is not None and n >= self.refuse_stream_from:
                if self.forward_refused:
                    self._forward_push(request)
                yield pb.PushReply(
                    request_id=request.request_id, error=pb.PushError(code=UNAVAILABLE, message="shutting down")
                )
                continue
            yield self._forward_push(request)


@pytest.fixture
def proxy(gateway: Gateway) -> Iterator[LossyProxy]:
    p = LossyProxy(gateway.internal)
    yield p
    p.close()


class Sleeps(list):
    """Records the waits between attempts instead of sleeping them."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def retrying_client(target: str, policy: RetryPolicy = FAST_RETRY) -> tuple[PushClient, Sleeps]:
    client = PushClient(target, retry=policy)
    sleeps = Sleeps()
    client._sleep = sleeps
    return client, sleeps


# ---------------------------------------------------------------- the policy


def test_backoff_is_exponential_with_jitter_and_capped():
    policy = RetryPolicy(max_attempts=10, initial_backoff=0.1, max_backoff=1.0, multiplier=2.0)
    rng = random.Random(7)
    for retry, cap in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)]:
        waits = [policy.backoff(retry, rng) for _ in range(200)]
        assert all(cap / 2 <= w <= cap for w in waits), (retry, min(waits), max(waits))
        assert max(waits) - min(waits) > cap / 4, "jittered, not fixed"
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    assert not RetryPolicy(max_attempts=1).enabled


# ---------------------------------------------------------------- push


def test_a_retried_push_keeps_its_key_and_is_delivered_once(proxy, open_browser, user):
    browser = open_browser(user)
    client, sleeps = retrying_client(proxy.target)
    proxy.fail_calls = 1
    with client:
        reply = client.push(user, "chat", "exactly once")
    attempts = [r for m, r in proxy.requests if m == "Push"]
    assert len(attempts) == 2
    keys = {r.idempotency_key for r in attempts}
    assert len(keys) == 1 and "" not in keys, f"one generated key on both attempts, got {keys}"
    assert reply.duplicate and reply.delivered == 0, "the gateway recognised the retry"
    assert len(sleeps) == 1 and FAST_RETRY.initial_backoff / 2 <= sleeps[0] <= FAST_RETRY.initial_backoff
    client2 = PushClient(proxy.target)
    client2.push(user, "chat", "after")
    client2.close()
    assert browser.recv_many(2) == ["exactly once", "after"], "the retried push was not delivered twice"


def test_the_callers_key_is_kept(proxy, user):
    client, _ = retrying_client(proxy.target)
    proxy.fail_calls = 2
    with client:
        reply = client.push(user, "chat", "x", idempotency_key="order-42-" + user)
    attempts = [r.idempotency_key for m, r in proxy.requests if m == "Push"]
    assert attempts == ["order-42-" + user] * 3
    assert reply.duplicate


def test_retries_are_bounded(proxy, user):
    client, sleeps = retrying_client(proxy.target)
    proxy.fail_calls = 100
    with client, pytest.raises(PushgateError) as err:
        client.push(user, "chat", "x")
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert err.value.attempts == FAST_RETRY.max_attempts
    assert len([1 for m, _ in proxy.requests if m == "Push"]) == FAST_RETRY.max_attempts
    assert len(sleeps) == FAST_RETRY.max_attempts - 1
    assert sleeps[1] >= FAST_RETRY.initial_backoff * FAST_RETRY.multiplier / 2, "the second wait is longer"


def test_without_retries_no_key_is_added(proxy, user):
    client, sleeps = retrying_client(proxy.target, RetryPolicy(max_attempts=1))
    proxy.fail_calls = 1
    with client, pytest.raises(PushgateError) as err:
        client.push(user, "chat", "x")
    assert (err.value.code, err.value.attempts, sleeps) == (grpc.StatusCode.UNAVAILABLE, 1, [])
    assert [r.idempotency_key for m, r in proxy.requests if m == "Push"] == [""]


def test_broadcast_is_retried_only_when_asked(proxy):
    client, _ = retrying_client(proxy.target)
    proxy.fail_calls = 1
    with client:
        with pytest.raises(PushgateError):
            client.broadcast("chat", "x")
        proxy.fail_calls = 1
        assert client.broadcast("chat", "x", retry=True).delivered == 0
        proxy.fail_calls = 1
        assert client.online(["a"]) == {"a": 0}, "a read is retried"
    assert [m for m, _ in proxy.requests] == ["Broadcast", "Broadcast", "Broadcast", "Online", "Online"]


# ---------------------------------------------------------------- batch


def test_a_batch_retries_only_its_unavailable_pushes(proxy, open_browser, user):
    browser = open_browser(user)
    client, _ = retrying_client(proxy.target)
    proxy.refuse_batch_items = {1, 3}
    proxy.forward_refused = False
    with client:
        replies = client.push_batch([(user, "chat", f"b{i}") for i in range(5)])
    batches = [r for m, r in proxy.requests if m == "PushBatch"]
    assert len(batches) == 2
    assert [p.message for p in batches[1].pushes] == ["b1", "b3"]
    first_keys = {p.message: p.idempotency_key for p in batches[0].pushes}
    assert all(p.idempotency_key == first_keys[p.message] != "" for p in batches[1].pushes)
    assert all(not r.HasField("error") and r.delivered == 1 for r in replies)
    assert sorted(browser.recv_many(5)) == [f"b{i}" for i in range(5)]


def test_a_lost_batch_reply_is_retried_without_double_delivery(proxy, open_browser, user):
    browser = open_browser(user)
    client, _ = retrying_client(proxy.target)
    proxy.fail_calls = 1
    with client:
        replies = client.push_batch([(user, "chat", "p0"), (user, "chat", "p1")])
        assert [r.duplicate for r in replies] == [True, True]
        client.push(user, "chat", "end")
    assert browser.recv_many(3) == ["p0", "p1", "end"]


# ---------------------------------------------------------------- stream


def test_a_broken_stream_resends_what_was_unanswered(proxy, open_browser, user):
    browser = open_browser(user)
    client, sleeps = retrying_client(proxy.target)
    proxy.fail_stream_after = 40
    with client:
        replies = list(client.push_many(((user, "chat", f"m{i}") for i in range(100)), window=16))
    assert [r.request_id for r in replies] == [str(i) for i in range(100)]
    assert len(sleeps) == 1
    sent = [r for m, r in proxy.requests if m == "PushStream"]
    by_id: dict[str, set[str]] = {}
    for r in sent:
        by_id.setdefault(r.request_id, set()).add(r.idempotency_key)
    assert all(len(keys) == 1 and "" not in keys for keys in by_id.values()), "a resent push keeps its key"
    assert len(sent) > 100, "some pushes were sent twice"
    assert replies[40].duplicate, "the push accepted before the break is acknowledged, not redelivered"
    assert browser.recv_many(100) == [f"m{i}" for i in range(100)], "each message once, in order"


def test_an_unavailable_stream_reply_resends_from_there(proxy, open_browser, user):
    browser = open_browser(user)
    client, _ = retrying_client(proxy.target)
    proxy.refuse_stream_from = 5  # as a gateway that begins to shut down
    proxy.forward_refused = False
    with client:
        replies = list(client.push_many(((user, "chat", f"m{i}") for i in range(20)), window=4))
    assert [r.request_id for r in replies] == [str(i) for i in range(20)]
    assert all(not r.HasField("error") for r in replies)
    assert proxy.streams == 2
    assert browser.recv_many(20) == [f"m{i}" for i in range(20)]


# ---------------------------------------------------------------- the real gateway


def test_a_push_retried_across_a_gateway_restart_succeeds(user):
    """The gateway is down on the first attempt and back for a retry."""
    first = Gateway()
    address = first.internal
    first.stop()
    restarted: list[Gateway] = []
    client = PushClient(address, retry=RetryPolicy(max_attempts=5, initial_backoff=0.05, max_backoff=0.2))

    def restart_then_wait(seconds: float) -> None:
        if not restarted:
            restarted.append(Gateway(internal_addr=address))
        time.sleep(seconds)  # the client's own backoff, as without this hook

    client._sleep = restart_then_wait
    try:
        reply = client.push(user, "chat", "x")
        assert reply.delivered == 0 and reply.seq == 1
        assert restarted, "the first attempt failed and was retried"
    finally:
        client.close()
        for gw in restarted:
            gw.stop()


def test_the_gateway_answers_unavailable_while_shutting_down(open_browser, user):
    """SIGTERM: pushes on a stream already open are refused with UNAVAILABLE
    per reply; the client resends them until its attempts run out."""
    gw = Gateway("--drain-timeout", "4s")
    try:
        probe = PushClient(gw.internal)
        browser = open_browser(user, gw=gw, counter=probe)
        client, sleeps = retrying_client(gw.internal)
        stream = client.push_many(((user, "chat", f"m{i}") for i in range(10)), window=1)
        assert next(stream).delivered == 1
        assert browser.recv() == "m0"
        gw.terminate()
        assert browser.close_code() == 1001, "the shutdown has begun: browsers are told to go away"
        with pytest.raises(PushgateError) as err:
            next(stream)
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
        assert err.value.attempts == FAST_RETRY.max_attempts
        assert len(sleeps) == FAST_RETRY.max_attempts - 1
        with pytest.raises(PushgateError) as err:
            probe.push(user, "chat", "late")
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
        client.close()
        probe.close()
    finally:
        assert gw.stop() == 0
