//! Registration (docs/protocol.md, "Client messages"): the register phase of a new connection,
//! and the later registers and subscribes that add events to a joined one.

use std::sync::Arc;

use tokio::time::Instant;

use super::protocol::{self, BadRequest, ClientMessage, Register};
use super::session::{End, Incoming, Session};
use super::{Mode, envelope};
use crate::core::{AuthError, Broker, CloseCode, EventName, Hub, Identity, JoinError, Outbox, Replay, UserId};

/// A connection joined to the hub. Dropping it removes the connection from
/// the hub and tells the broker, so every way out of a session leaves.
pub(super) struct Membership {
    hub: Arc<Hub>,
    broker: Arc<dyn Broker>,
    pub user: UserId,
    pub identity: Identity,
    /// What the connection is subscribed to, as the hub last said.
    pub events: Vec<EventName>,
    pub outbox: Arc<Outbox>,
    id: u64,
}

impl Drop for Membership {
    fn drop(&mut self) {
        // No producer's thread writes to the socket once the session ends.
        self.outbox.detach_wire();
        self.hub.leave(&self.user, self.id);
        self.broker.left(&self.user);
    }
}

/// Reads messages until a valid register joins the hub. Bounded by
/// `--register-timeout` (4001); shutdown ends it with 1001. `handshake` is
/// the identity of a token given at the handshake, if any.
pub(super) async fn register(conn: &mut Session<'_>, handshake: Option<Box<Identity>>) -> Result<Membership, End> {
    let ctx = conn.ctx;
    let deadline = Instant::now() + ctx.config.register_timeout;
    let attempt = async {
        loop {
            // Also writes out the answers queued so far.
            let text = match conn.next().await? {
                Incoming::Text(text) => text,
                Incoming::Alive => continue,
            };
            if let Some(member) = first_message(conn, handshake.as_deref(), &text).await? {
                return Ok(member);
            }
        }
    };
    tokio::select! {
        () = ctx.shutdown.cancelled() => Err(CloseCode::GoingAway.into()),
        result = tokio::time::timeout_at(deadline, attempt) => {
            result.unwrap_or_else(|_| Err(CloseCode::RegisterTimeout.into()))
        }
    }
}

/// Handles a message of the register phase; `Some` once joined.
async fn first_message(
    conn: &mut Session<'_>,
    handshake: Option<&Identity>,
    text: &str,
) -> Result<Option<Membership>, End> {
    let message = match protocol::parse(text) {
        Ok(message) => message,
        Err(bad) => return conn.bad_request(&bad).map(|()| None),
    };
    match (conn.mode, message) {
        (_, ClientMessage::Register(register)) => join(conn, handshake, register).await,
        // With a token given at the handshake, a subscribe can open the session.
        (Mode::Envelope, ClientMessage::Subscribe { events, since }) if handshake.is_some() => {
            join(conn, handshake, Register { token: None, events, since }).await
        }
        (Mode::Envelope, ClientMessage::Ping) => conn.queue(envelope::pong()).map(|()| None),
        (Mode::Envelope, _) => conn.error("not_registered", "send a register message first").map(|()| None),
        (Mode::Compat, other) => conn.bad_request(&BadRequest::UnknownType(kind(&other).into())).map(|()| None),
    }
}

/// Authenticates, checks and joins; `None` when the envelope client was told
/// why not and may try again.
async fn join(
    conn: &mut Session<'_>,
    handshake: Option<&Identity>,
    register: Register,
) -> Result<Option<Membership>, End> {
    let identity = resolve(conn, register.token.as_deref(), handshake).await?;
    check_allowed(&identity, &register.events)?;
    let (hub, broker) = (&conn.ctx.hub, &conn.ctx.broker);
    let outbox = hub.new_outbox();
    let since = register.since.filter(|_| conn.mode == Mode::Envelope);
    if let Err(error) = broker.joining(&identity.user).await {
        return refused_join(conn, &error).map(|()| None);
    }
    let joined = match hub.join(&identity.user, conn.id, Arc::clone(&outbox), &register.events, since.as_ref()) {
        Ok(joined) => joined,
        Err(error) => {
            broker.left(&identity.user);
            return refused_join(conn, &error).map(|()| None);
        }
    };
    tracing::Span::current().record("user", &*identity.user);
    tracing::debug!(events = joined.events.len(), "joined");
    let member = Membership {
        hub: Arc::clone(hub),
        broker: Arc::clone(broker),
        user: Arc::clone(&identity.user),
        identity,
        events: joined.events.clone(),
        outbox,
        id: conn.id,
    };
    if conn.mode == Mode::Envelope {
        conn.queue(envelope::registered(&member.user, conn.id, &joined))?;
        if let Some(replay) = &joined.replay {
            // Taken atomically with the join: written before anything from
            // the outbox, it leaves no gap and no duplicate.
            queue_replay(conn, replay)?;
        }
    }
    Ok(Some(member))
}

/// Adds events to a joined connection: a second register (which may carry a
/// token of the same user) or a subscribe. A `since` replays what the new
/// events missed; the events already subscribed were live all along, so
/// their history is not replayed again.
pub(super) async fn add_events(
    conn: &mut Session<'_>,
    member: &mut Membership,
    register: Register,
    reply: Reply,
) -> Result<(), End> {
    if register.token.is_some() {
        let identity = resolve(conn, register.token.as_deref(), Some(&member.identity)).await?;
        check_allowed(&identity, &member.events)?;
        member.identity = identity;
    }
    check_allowed(&member.identity, &register.events)?;
    let since = register.since.filter(|_| conn.mode == Mode::Envelope);
    let joined = match conn.ctx.hub.subscribe(&member.user, conn.id, &register.events, since.as_ref()) {
        Ok(joined) => joined,
        // Gone from the hub (disconnected): its outbox is closing already.
        Err(JoinError::ShuttingDown) => return Ok(()),
        Err(error) => return refused_join(conn, &error),
    };
    member.events = joined.events.clone();
    if conn.mode == Mode::Envelope {
        let message = match reply {
            Reply::Registered => envelope::registered(&member.user, conn.id, &joined),
            Reply::Subscribed => envelope::subscriptions("subscribed", &member.events),
        };
        conn.queue(message)?;
        if let Some(replay) = &joined.replay {
            queue_replay(conn, replay)?;
        }
    }
    Ok(())
}

/// Which answer [`add_events`] gives in envelope mode.
pub(super) enum Reply {
    Registered,
    Subscribed,
}

/// The identity of `token`, or the connection's current one when there is
/// no token. A token of another user than `current`'s is refused (4500).
async fn resolve(conn: &Session<'_>, token: Option<&str>, current: Option<&Identity>) -> Result<Identity, End> {
    let Some(token) = token else {
        return current.cloned().ok_or_else(|| End::close(CloseCode::Unauthorized, "no token"));
    };
    let identity = conn.ctx.authenticate(token).await.map_err(|e| refused_token(&e))?;
    if current.is_some_and(|c| c.user != identity.user) {
        return Err(End::close(CloseCode::Unauthorized, "the token is another user's"));
    }
    Ok(identity)
}

/// The close for a refused token: 4500, 4002 when expired, 1011 when the
/// authenticator could not decide.
pub(super) fn refused_token(error: &AuthError) -> End {
    tracing::debug!(%error, "token refused");
    match error {
        AuthError::Invalid(_) => CloseCode::Unauthorized.into(),
        AuthError::Expired => CloseCode::TokenExpired.into(),
        AuthError::Unavailable(_) => End::close(CloseCode::Internal, "authentication unavailable"),
    }
}

/// 4501 unless `identity` may subscribe to each of `events`.
pub(super) fn check_allowed(identity: &Identity, events: &[EventName]) -> Result<(), End> {
    match events.iter().find(|e| !identity.allows(e)) {
        Some(e) => Err(End::close(CloseCode::EventNotAllowed, format!("event `{e}` is not allowed"))),
        None => Ok(()),
    }
}

/// A refused join or subscribe: 4003 over the per-user limit, 1001 at
/// shutdown, 1011 while the broker is away (reconnect with backoff); too many events is an error message in envelope mode (the
/// client may retry with fewer) and 4503 in the wserver-compatible mode.
fn refused_join(conn: &mut Session<'_>, error: &JoinError) -> Result<(), End> {
    match error {
        JoinError::UserLimit(_) => Err(End::close(CloseCode::ConnectionLimit, error.to_string())),
        JoinError::ShuttingDown => Err(CloseCode::GoingAway.into()),
        JoinError::Unavailable(reason) => {
            tracing::warn!(%reason, "join refused: the broker is unavailable");
            Err(End::close(CloseCode::Internal, "broker unavailable"))
        }
        JoinError::TooManyEvents(_) => match conn.mode {
            Mode::Envelope => conn.error("too_many_events", &error.to_string()),
            Mode::Compat => Err(End::close(CloseCode::ProtocolViolation, error.to_string())),
        },
    }
}

/// Queues a replay's deliveries, then `recovered`.
fn queue_replay(conn: &mut Session<'_>, replay: &Replay) -> Result<(), End> {
    for delivery in &replay.deliveries {
        conn.queue(envelope::delivery(conn.mode, delivery))?;
    }
    conn.queue(envelope::recovered(replay))
}

/// The `type` of a parsed message, for error messages.
pub(super) fn kind(message: &ClientMessage) -> &'static str {
    match message {
        ClientMessage::Register(_) => "register",
        ClientMessage::Subscribe { .. } => "subscribe",
        ClientMessage::Unsubscribe(_) => "unsubscribe",
        ClientMessage::Refresh(_) => "refresh",
        ClientMessage::Ping => "ping",
    }
}
