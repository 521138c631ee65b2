//! The socket options every accepted connection gets: `TCP_NODELAY` (pushes
//! are small and latency matters) and, where asked for, `SO_SNDBUF`.
//!
//! Linux passes a listening socket's options on to the sockets it accepts
//! (whether they were set before or after `listen`), so they are set once,
//! on the listener: two system calls fewer per connection than setting them
//! on each socket (BENCHMARKS.md, "Socket options set once"). The first
//! socket accepted is checked; if it did not come with them (another kernel,
//! or the listener refused them), every socket gets them itself, as before.
//!
//! A socket takes its listener's options as they are when its handshake
//! completes, which may be before anything is accepted: after a restart,
//! browsers reconnect while the gateway still connects to its broker. So the
//! gateway sets them before `listen` ([`before_listen`], used by
//! `server::bind`); set only when the accept loop starts, the first socket
//! would have come without them and every later one been set by hand.

use std::io;

use socket2::SockRef;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Sets the options on a socket about to listen, so that every connection
/// it queues has them; on failure they are set when accepting (logged).
pub(crate) fn before_listen(socket: &TcpSocket, send_buffer: usize) {
    if let Err(error) = set(SockRef::from(socket), send_buffer) {
        tracing::debug!(%error, "socket options not set before listen");
    }
}

/// Sets `TCP_NODELAY` and, unless 0, `send_buffer` as `SO_SNDBUF` on
/// `socket`; the send buffer the kernel made of it.
fn set(socket: SockRef<'_>, send_buffer: usize) -> io::Result<usize> {
    socket.set_tcp_nodelay(true)?;
    if send_buffer > 0 {
        socket.set_send_buffer_size(send_buffer)?;
    }
    socket.send_buffer_size()
}

/// The options of one listener's accepted sockets.
pub(crate) struct SocketOptions {
    /// `SO_SNDBUF` to ask for; 0 leaves the kernel's own sizing.
    send_buffer: usize,
    /// What the kernel made of `send_buffer` on the listener (Linux doubles
    /// it), which an accepted socket that inherited it reports too; `None`
    /// when the listener refused the options.
    listener_buffer: Option<usize>,
    /// Whether accepted sockets come with the options; `None` until the
    /// first is checked.
    inherited: Option<bool>,
}

impl SocketOptions {
    /// Sets the options on `listener` (again, when it was bound by
    /// `server::bind`: a listener from elsewhere gets them here).
    pub(crate) fn on_listener(listener: &TcpListener, send_buffer: usize) -> Self {
        let set = set(SockRef::from(listener), send_buffer);
        if let Err(error) = &set {
            tracing::debug!(%error, "socket options not set on the listener; set on each accepted socket");
        }
        Self { send_buffer, listener_buffer: set.ok(), inherited: None }
    }

    /// Gives `stream`, just accepted, the options it did not inherit.
    pub(crate) fn apply(&mut self, stream: &TcpStream) {
        let inherited = match self.inherited {
            Some(inherited) => inherited,
            None => *self.inherited.insert(self.came_with_them(stream)),
        };
        if inherited {
            return;
        }
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY not set");
        }
        if self.send_buffer > 0
            && let Err(error) = SockRef::from(stream).set_send_buffer_size(self.send_buffer)
        {
            tracing::debug!(%error, "SO_SNDBUF not set");
        }
    }

    /// Whether `stream` has the options its listener was given (never, when
    /// the listener refused them).
    fn came_with_them(&self, stream: &TcpStream) -> bool {
        if self.listener_buffer.is_none() {
            return false;
        }
        let socket = SockRef::from(stream);
        let buffer = self.send_buffer == 0 || socket.send_buffer_size().ok() == self.listener_buffer;
        let came = socket.tcp_nodelay().unwrap_or(false) && buffer;
        tracing::debug!(inherited = came, "socket options of the first accepted connection");
        came
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection to `listener`, as accepted, and the client's side.
    async fn accept(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().expect("address")).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        (accepted, client)
    }

    /// The options an accepted socket reports: TCP_NODELAY and SO_SNDBUF.
    fn options(stream: &TcpStream) -> (bool, usize) {
        let socket = SockRef::from(stream);
        (socket.tcp_nodelay().expect("TCP_NODELAY"), socket.send_buffer_size().expect("SO_SNDBUF"))
    }

    /// What the kernel makes of a send buffer of `size` on a socket of its own.
    async fn sized(size: usize) -> usize {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (accepted, _client) = accept(&listener).await;
        SockRef::from(&accepted).set_send_buffer_size(size).expect("SO_SNDBUF");
        options(&accepted).1
    }

    #[tokio::test]
    async fn every_accepted_socket_has_the_options_inherited_or_set() {
        let wanted = sized(16 * 1024).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut set = SocketOptions::on_listener(&listener, 16 * 1024);
        for _ in 0..3 {
            let (accepted, _client) = accept(&listener).await;
            set.apply(&accepted);
            assert_eq!(options(&accepted), (true, wanted));
        }
        // Linux passes them on: the first socket came with them.
        #[cfg(target_os = "linux")]
        assert_eq!(set.inherited, Some(true));
    }

    #[tokio::test]
    async fn a_listener_that_does_not_pass_them_on_has_each_socket_set() {
        let wanted = sized(16 * 1024).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut set = SocketOptions::on_listener(&listener, 16 * 1024);
        // As on a kernel that does not pass options on.
        SockRef::from(&listener).set_tcp_nodelay(false).expect("TCP_NODELAY off");
        for _ in 0..2 {
            let (accepted, _client) = accept(&listener).await;
            set.apply(&accepted);
            assert_eq!(options(&accepted), (true, wanted));
        }
        assert_eq!(set.inherited, Some(false));
    }

    /// A connection that completes its handshake before the accept loop
    /// starts (a reconnect storm while the broker connects) still comes with
    /// the options of a listener bound by `server::bind`: they were set
    /// before `listen`.
    #[tokio::test]
    async fn a_connection_queued_before_the_accept_loop_comes_with_the_options() {
        let wanted = sized(16 * 1024).await;
        let listener = crate::server::bind("127.0.0.1:0".parse().expect("address"), 16, 16 * 1024).expect("bind");
        let early = TcpStream::connect(listener.local_addr().expect("address")).await.expect("connect");
        let mut set = SocketOptions::on_listener(&listener, 16 * 1024);
        let (accepted, _) = listener.accept().await.expect("accept");
        set.apply(&accepted);
        assert_eq!(options(&accepted), (true, wanted));
        #[cfg(target_os = "linux")]
        assert_eq!(set.inherited, Some(true), "the queued connection came without the options");
        drop(early);
    }

    #[tokio::test]
    async fn with_no_send_buffer_asked_for_only_nodelay_is_set() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let before = SockRef::from(&listener).send_buffer_size().expect("SO_SNDBUF");
        let mut set = SocketOptions::on_listener(&listener, 0);
        assert_eq!(SockRef::from(&listener).send_buffer_size().expect("SO_SNDBUF"), before);
        let (accepted, _client) = accept(&listener).await;
        set.apply(&accepted);
        assert!(options(&accepted).0);
    }
}
