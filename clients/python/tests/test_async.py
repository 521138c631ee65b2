"""AsyncPushClient against the real gateway (and the lossy proxy for retries)."""

from __future__ import annotations

import uuid

import grpc
import pytest

from conftest import FAST_RETRY
from pushgate import AsyncPushClient, PushgateError, PushReply
from test_retry import LossyProxy


@pytest.fixture
async def aclient(gateway):
    async with AsyncPushClient(gateway.internal, retry=FAST_RETRY) as c:
        yield c


async def test_push_text_and_binary(aclient, open_browser, user):
    browser = open_browser(user)
    text = await aclient.push(user, "chat", "hello")
    data = await aclient.push(user, "chat", b"\x00\xff")
    assert isinstance(text, PushReply)
    assert (text.delivered, data.delivered, data.seq) == (1, 1, text.seq + 1)
    assert browser.recv_many(2) == ["hello", b"\x00\xff"]


async def test_push_many_1000_in_order(aclient, open_browser, user):
    browser = open_browser(user)
    replies = [r async for r in aclient.push_many((user, "chat", f"m{i}") for i in range(1000))]
    assert [r.request_id for r in replies] == [str(i) for i in range(1000)]
    assert all(r.delivered == 1 for r in replies)
    assert [r.seq - replies[0].seq for r in replies] == list(range(1000))
    assert browser.recv_many(1000) == [f"m{i}" for i in range(1000)]


async def test_push_many_from_an_async_source(aclient, open_browser, user):
    browser = open_browser(user)

    async def items():
        for i in range(50):
            yield {"user_id": user, "event": "chat", "message": f"a{i}", "request_id": f"r{i}"}

    replies = [r async for r in aclient.push_many(items(), window=7)]
    assert [r.request_id for r in replies] == [f"r{i}" for i in range(50)]
    assert browser.recv_many(50) == [f"a{i}" for i in range(50)]
    assert [r async for r in aclient.push_many([])] == []


async def test_batch_broadcast_disconnect_online_stats(aclient, open_browser, user):
    event = f"news-{uuid.uuid4().hex[:8]}"
    browser = open_browser(user, event)
    before = await aclient.stats()
    replies = await aclient.push_batch([(user, event, "b0"), (user, "", "bad"), (user, event, "b1")])
    assert [r.delivered for r in replies] == [1, 0, 1]
    assert replies[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert (await aclient.broadcast(event, "all")).delivered == 1
    assert browser.recv_many(3) == ["b0", "b1", "all"]
    after = await aclient.stats()
    assert (after.pushes - before.pushes, after.broadcasts - before.broadcasts) == (2, 1)
    assert await aclient.online([user, "nobody-" + user]) == {user: 1, "nobody-" + user: 0}
    assert await aclient.disconnect(user) == 1
    assert browser.close_code() == 4502


async def test_errors_are_raised(aclient, user):
    with pytest.raises(PushgateError) as err:
        await aclient.push(user, "bad event", "x")
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and err.value.attempts == 1


async def test_a_retried_async_push_keeps_its_key(gateway, open_browser, user):
    browser = open_browser(user)
    proxy = LossyProxy(gateway.internal)
    try:
        proxy.fail_calls = 1
        async with AsyncPushClient(proxy.target, retry=FAST_RETRY) as client:
            reply = await client.push(user, "chat", "once")
            assert reply.duplicate
            await client.push(user, "chat", "next")
        keys = [r.idempotency_key for m, r in proxy.requests if m == "Push"]
        assert len(keys) == 3 and keys[0] == keys[1] != "" and keys[2] not in ("", keys[0])
        assert browser.recv_many(2) == ["once", "next"]
    finally:
        proxy.close()


async def test_an_async_stream_resends_after_a_break(gateway, open_browser, user):
    browser = open_browser(user)
    proxy = LossyProxy(gateway.internal)
    try:
        proxy.fail_stream_after = 10
        async with AsyncPushClient(proxy.target, retry=FAST_RETRY) as client:
            replies = [r async for r in client.push_many(((user, "chat", f"m{i}") for i in range(30)), window=4)]
        assert [r.request_id for r in replies] == [str(i) for i in range(30)]
        assert proxy.streams == 2 and replies[10].duplicate
        assert browser.recv_many(30) == [f"m{i}" for i in range(30)]
    finally:
        proxy.close()


async def test_async_retries_are_bounded(gateway, user):
    proxy = LossyProxy(gateway.internal)
    try:
        proxy.fail_calls = 100
        async with AsyncPushClient(proxy.target, retry=FAST_RETRY) as client:
            with pytest.raises(PushgateError) as err:
                await client.push_batch([(user, "chat", "x")])
        assert (err.value.code, err.value.attempts) == (grpc.StatusCode.UNAVAILABLE, FAST_RETRY.max_attempts)
    finally:
        proxy.close()
