"""pushgate: the Python producer client of the pushgate push gateway.

    from pushgate import PushClient, TLS

    with PushClient("127.0.0.1:50051", api_key="k1") as client:
        reply = client.push("u1", "chat", "hello")   # .delivered, .seq

`AsyncPushClient` offers the same calls for asyncio. Failures raise
`PushgateError` with the gRPC status code. Replies are the generated protobuf
messages of `pushgate.v1` (`pushgate.pb`).
"""

from ._common import TLS, PushgateError, PushItem, RetryPolicy
from ._proto import push_pb2 as pb
from ._proto.push_pb2 import (
    BroadcastReply,
    PushBatchReply,
    PushReply,
    PushRequest,
    StatsReply,
)
from .aio import AsyncPushClient
from .client import PushClient

__version__ = "0.1.0"

__all__ = [
    "AsyncPushClient",
    "BroadcastReply",
    "PushBatchReply",
    "PushClient",
    "PushItem",
    "PushReply",
    "PushRequest",
    "PushgateError",
    "RetryPolicy",
    "StatsReply",
    "TLS",
    "pb",
]
