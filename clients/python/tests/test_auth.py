"""Producer API keys: `authorization: Bearer KEY` on every PushService call."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from conftest import FAST_RETRY
from harness import Gateway
from pushgate import AsyncPushClient, PushClient, PushgateError

KEY = "test-key-1"


@pytest.fixture(scope="module")
def keyed() -> Iterator[Gateway]:
    gw = Gateway("--api-key", KEY, "--api-key", "test-key-2")
    yield gw
    assert gw.stop() == 0


def test_the_right_key_is_accepted(keyed, open_browser, user):
    with PushClient(keyed.internal, api_key=KEY, retry=FAST_RETRY) as client:
        browser = open_browser(user, gw=keyed, counter=client)
        assert client.push(user, "chat", "with key").delivered == 1
        assert browser.recv() == "with key"
    with PushClient(keyed.internal, api_key="test-key-2") as other:
        assert other.stats().connections >= 1, "any configured key works"


@pytest.mark.parametrize("key", ["wrong", None], ids=["wrong key", "no key"])
def test_a_wrong_or_missing_key_is_unauthenticated(keyed, user, key):
    with PushClient(keyed.internal, api_key=key, retry=FAST_RETRY) as client:
        for call in (
            lambda: client.push(user, "chat", "x"),
            lambda: client.push_batch([(user, "chat", "x")]),
            lambda: list(client.push_many([(user, "chat", "x")])),
            lambda: client.online([user]),
            lambda: client.stats(),
        ):
            with pytest.raises(PushgateError) as err:
                call()
            assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
            assert err.value.attempts == 1, "not retried"
            assert "key" in err.value.details


async def test_the_async_client_sends_the_key(keyed, user):
    async with AsyncPushClient(keyed.internal, api_key=KEY) as client:
        assert (await client.online([user])) == {user: 0}
    async with AsyncPushClient(keyed.internal, api_key="wrong") as client:
        with pytest.raises(PushgateError) as err:
            await client.push(user, "chat", "x")
        assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
