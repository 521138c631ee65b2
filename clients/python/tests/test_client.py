"""PushClient against the real gateway, with real WebSocket browsers."""

from __future__ import annotations

import uuid

import grpc
import pytest

from harness import WAIT, wait_until
from pushgate import PushClient, PushgateError, PushReply, pb


def test_push_text_reaches_the_browser(client, open_browser):
    browser = open_browser("u1", "chat")
    reply = client.push("u1", "chat", "hello")
    assert isinstance(reply, PushReply)
    assert reply.delivered == 1
    assert reply.seq >= 1
    assert not reply.duplicate
    assert browser.recv() == "hello"
    browser.close()
    wait_until(lambda: client.online(["u1"]) == {"u1": 0}, "u1 to leave")


def test_push_binary_arrives_as_a_binary_frame(client, open_browser, user):
    browser = open_browser(user)
    payload = bytes([0, 1, 2, 255]) + "é".encode()
    reply = client.push(user, "chat", payload)
    assert reply.delivered == 1
    frame = browser.recv()
    assert isinstance(frame, bytes) and frame == payload


def test_seq_is_monotonic_and_counts_connections(client, open_browser, user):
    first = open_browser(user)
    second = open_browser(user)
    other_event = open_browser(user, "news")
    a = client.push(user, "chat", "a", ttl_ms=60_000)
    b = client.push(user, "chat", "b")
    assert (a.delivered, b.delivered) == (2, 2), "both chat tabs, not the news one"
    assert b.seq == a.seq + 1
    assert first.recv_many(2) == ["a", "b"]
    assert second.recv_many(2) == ["a", "b"]
    assert client.push(user, "news", "n").delivered == 1
    assert other_event.recv() == "n", "the news tab got none of the chat pushes"
    assert client.push(f"nobody-{user}", "chat", "x").delivered == 0


def test_push_many_1000_in_order_with_request_ids(client, open_browser, user):
    browser = open_browser(user)
    replies = list(client.push_many((user, "chat", f"m{i}") for i in range(1000)))
    assert [r.request_id for r in replies] == [str(i) for i in range(1000)]
    assert all(r.delivered == 1 and not r.HasField("error") for r in replies)
    seqs = [r.seq for r in replies]
    assert seqs == list(range(seqs[0], seqs[0] + 1000)), "seq increases by one per push"
    assert browser.recv_many(1000) == [f"m{i}" for i in range(1000)]


def test_push_many_keeps_going_after_a_refused_push(client, open_browser, user):
    browser = open_browser(user)
    items = [
        (user, "chat", "one"),
        {"user_id": user, "event": "not an event", "message": "bad", "request_id": "bad"},
        pb.PushRequest(user_id=user, event="chat", data=b"\x02"),
    ]
    replies = list(client.push_many(items, window=1))
    assert [r.request_id for r in replies] == ["0", "bad", "2"]
    assert not replies[0].HasField("error") and replies[0].delivered == 1
    assert replies[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "event" in replies[1].error.message
    assert replies[2].delivered == 1
    assert browser.recv_many(2) == ["one", b"\x02"]


def test_push_many_is_lazy_and_closing_it_ends_the_stream(client, open_browser, user):
    browser = open_browser(user)
    taken = []

    def items():
        for i in range(10_000):
            taken.append(i)
            yield (user, "chat", f"m{i}")

    stream = client.push_many(items(), window=8)
    first = [next(stream) for _ in range(3)]
    stream.close()
    assert [r.request_id for r in first] == ["0", "1", "2"]
    assert len(taken) <= 3 + 8, f"at most a window ahead of the replies, took {len(taken)}"
    assert browser.recv_many(3) == ["m0", "m1", "m2"]


def test_push_batch(client, open_browser, user):
    other = f"{user}-b"
    browser = open_browser(user)
    other_browser = open_browser(other)
    replies = client.push_batch(
        [(user, "chat", "a"), (other, "chat", b"b"), (user, "", "no event"), {"user_id": user, "event": "chat", "message": "c"}]
    )
    assert [r.delivered for r in replies] == [1, 1, 0, 1]
    assert replies[2].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert replies[3].seq == replies[0].seq + 1
    assert browser.recv_many(2) == ["a", "c"]
    assert other_browser.recv() == b"b"
    assert client.push_batch([]) == []
    assert list(client.push_many([])) == []


def test_broadcast(client, open_browser, user):
    event = f"news-{uuid.uuid4().hex[:8]}"
    other = f"{user}-b"
    a = open_browser(user, event)
    b = open_browser(other, event)
    reply = client.broadcast(event, "to all")
    assert reply.delivered == 2
    assert a.recv() == "to all" and b.recv() == "to all"
    reply = client.broadcast(event, b"only a", user_ids=[user], request_id="r7")
    assert (reply.delivered, reply.request_id) == (1, "r7")
    assert a.recv() == b"only a"
    # b got nothing: the next thing it sees is the next broadcast.
    client.broadcast(event, "again")
    assert b.recv() == "again"


def test_disconnect_closes_with_4502(client, open_browser, user):
    chat = open_browser(user, "chat")
    news = open_browser(user, "news")
    assert client.disconnect(user, event="news") == 1
    assert news.close_code() == 4502
    assert client.online([user]) == {user: 1}
    assert client.disconnect(user) == 1
    assert chat.close_code() == 4502
    assert client.disconnect(user) == 0


def test_online(client, open_browser, user):
    open_browser(user)
    open_browser(user, "news")
    assert client.online([user, f"{user}-none"]) == {user: 2, f"{user}-none": 0}
    assert client.online(user) == {user: 2}, "a single user id is accepted"


def test_stats(client, open_browser, user):
    open_browser(user)
    before = client.stats()
    assert before.connections >= 1 and before.users >= 1 and before.subscriptions >= 1
    client.push(user, "chat", "x")
    client.broadcast("chat", "y", user_ids=[user])
    after = client.stats()
    assert after.pushes == before.pushes + 1
    assert after.broadcasts == before.broadcasts + 1
    assert after.deliveries == before.deliveries + 2


def test_invalid_argument_is_raised_and_not_retried(client, user):
    with pytest.raises(PushgateError) as err:
        client.push(user, "", "no event")
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "event" in err.value.details
    assert err.value.attempts == 1
    with pytest.raises(TypeError):
        client.push(user, "chat", 42)  # type: ignore[arg-type]


def test_an_idempotency_key_is_delivered_once(client, open_browser, user):
    browser = open_browser(user)
    key = f"order-{uuid.uuid4().hex}"
    first = client.push(user, "chat", "once", idempotency_key=key)
    again = client.push(user, "chat", "once", idempotency_key=key)
    assert (first.delivered, first.duplicate) == (1, False)
    assert (again.delivered, again.duplicate, again.seq) == (0, True, first.seq)
    client.push(user, "chat", "next")
    assert browser.recv_many(2) == ["once", "next"], "the repeat was not delivered"


def test_context_manager_closes_the_channel(gateway, user):
    with PushClient(gateway.internal) as c:
        assert c.push(user, "chat", "x").delivered == 0
    with pytest.raises(ValueError):
        c.push(user, "chat", "after close")


def test_an_unreachable_gateway_is_unavailable_after_the_retries(user):
    from conftest import FAST_RETRY
    from harness import Gateway

    gw = Gateway()
    address = gw.internal
    gw.stop()
    with PushClient(address, retry=FAST_RETRY, timeout=WAIT) as c:
        with pytest.raises(PushgateError) as err:
            c.push(user, "chat", "x")
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert err.value.attempts == FAST_RETRY.max_attempts
