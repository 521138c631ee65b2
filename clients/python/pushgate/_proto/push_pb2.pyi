from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PushRequest(_message.Message):
    __slots__ = ("user_id", "event", "message", "data", "request_id", "idempotency_key", "ttl_ms")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    event: str
    message: str
    data: bytes
    request_id: str
    idempotency_key: str
    ttl_ms: int
    def __init__(self, user_id: _Optional[str] = ..., event: _Optional[str] = ..., message: _Optional[str] = ..., data: _Optional[bytes] = ..., request_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., ttl_ms: _Optional[int] = ...) -> None: ...

class PushReply(_message.Message):
    __slots__ = ("delivered", "seq", "request_id", "error", "duplicate", "nodes")
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    delivered: int
    seq: int
    request_id: str
    error: PushError
    duplicate: bool
    nodes: int
    def __init__(self, delivered: _Optional[int] = ..., seq: _Optional[int] = ..., request_id: _Optional[str] = ..., error: _Optional[_Union[PushError, _Mapping]] = ..., duplicate: _Optional[bool] = ..., nodes: _Optional[int] = ...) -> None: ...

class PushError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class PushBatchRequest(_message.Message):
    __slots__ = ("pushes",)
    PUSHES_FIELD_NUMBER: _ClassVar[int]
    pushes: _containers.RepeatedCompositeFieldContainer[PushRequest]
    def __init__(self, pushes: _Optional[_Iterable[_Union[PushRequest, _Mapping]]] = ...) -> None: ...

class PushBatchReply(_message.Message):
    __slots__ = ("replies",)
    REPLIES_FIELD_NUMBER: _ClassVar[int]
    replies: _containers.RepeatedCompositeFieldContainer[PushReply]
    def __init__(self, replies: _Optional[_Iterable[_Union[PushReply, _Mapping]]] = ...) -> None: ...

class BroadcastRequest(_message.Message):
    __slots__ = ("event", "message", "data", "user_ids", "request_id")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    event: str
    message: str
    data: bytes
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    request_id: str
    def __init__(self, event: _Optional[str] = ..., message: _Optional[str] = ..., data: _Optional[bytes] = ..., user_ids: _Optional[_Iterable[str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class BroadcastReply(_message.Message):
    __slots__ = ("delivered", "request_id")
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    delivered: int
    request_id: str
    def __init__(self, delivered: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class DisconnectRequest(_message.Message):
    __slots__ = ("user_id", "event")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    event: str
    def __init__(self, user_id: _Optional[str] = ..., event: _Optional[str] = ...) -> None: ...

class DisconnectReply(_message.Message):
    __slots__ = ("closed",)
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    closed: int
    def __init__(self, closed: _Optional[int] = ...) -> None: ...

class OnlineRequest(_message.Message):
    __slots__ = ("user_ids",)
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, user_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class OnlineReply(_message.Message):
    __slots__ = ("connections",)
    class ConnectionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    connections: _containers.ScalarMap[str, int]
    def __init__(self, connections: _Optional[_Mapping[str, int]] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsReply(_message.Message):
    __slots__ = ("connections", "users", "subscriptions", "pushes", "deliveries", "drops", "broadcasts", "node_id")
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    PUSHES_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    DROPS_FIELD_NUMBER: _ClassVar[int]
    BROADCASTS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    connections: int
    users: int
    subscriptions: int
    pushes: int
    deliveries: int
    drops: int
    broadcasts: int
    node_id: str
    def __init__(self, connections: _Optional[int] = ..., users: _Optional[int] = ..., subscriptions: _Optional[int] = ..., pushes: _Optional[int] = ..., deliveries: _Optional[int] = ..., drops: _Optional[int] = ..., broadcasts: _Optional[int] = ..., node_id: _Optional[str] = ...) -> None: ...
