"""Fixtures: one real gateway per test module, clients, browsers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Callable

import pytest

from harness import Browser, Gateway, wait_until
from pushgate import PushClient, RetryPolicy

#: Quick retries, so tests that exhaust them stay fast.
FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff=0.02, max_backoff=0.1)


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    """A gateway with default settings (`--auth none`, no API key)."""
    gw = Gateway()
    yield gw
    assert gw.stop() == 0, "the gateway should exit cleanly on SIGTERM"


@pytest.fixture
def client(gateway: Gateway) -> Iterator[PushClient]:
    with PushClient(gateway.internal, retry=FAST_RETRY) as c:
        yield c


@pytest.fixture
def user() -> str:
    """A user id no other test uses, so `delivered` counts are exact."""
    return f"u1-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def open_browser(gateway: Gateway) -> Iterator[Callable[..., Browser]]:
    """Opens a registered browser: returns once the gateway counts it online.
    Every browser opened is closed after the test."""
    opened: list[Browser] = []
    with PushClient(gateway.internal, retry=FAST_RETRY) as probe:

        def open_one(
            user: str, event: str | list[str] = "chat", gw: Gateway | None = None, counter: PushClient | None = None
        ) -> Browser:
            """`gw` defaults to the module's gateway; `counter` is the client
            that polls its online count (needed for a TLS or keyed gateway)."""
            counter = counter or probe
            before = counter.online([user])[user]
            browser = Browser(gw or gateway, user, event)
            opened.append(browser)
            wait_until(lambda: counter.online([user])[user] == before + 1, f"{user} to be online")
            return browser

        yield open_one
    for browser in opened:
        browser.close()
