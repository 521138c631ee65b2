//! TLS for both listeners, with rustls: `wss://` on the public
//! listener, gRPC/HTTPS on the internal one, and mutual TLS for producers when
//! a client CA is given — a producer without a certificate signed by that CA
//! is refused during the TLS handshake.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

/// Why TLS could not be set up. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("tls-client-ca: {0}")]
    ClientCa(String),
}

fn file_error(path: &Path, message: impl ToString) -> TlsError {
    TlsError::File { path: path.display().to_string(), message: message.to_string() }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no PEM certificate found"));
    }
    Ok(certs)
}

/// The process-wide crypto provider: ring, chosen explicitly so no other
/// backend is needed at build time.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS acceptor for `files`, offering the ALPN protocols `alpn` (the
/// internal listener offers `h2` and `http/1.1`, the public one `http/1.1`).
pub fn acceptor(files: &TlsFiles, alpn: &[&[u8]]) -> Result<TlsAcceptor, TlsError> {
    let chain = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_error(&files.key, e))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(ca)? {
                roots.add(cert).map_err(|e| file_error(ca, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// An accepted connection: plain TCP or TLS over TCP. Both listeners serve
/// this one type, so nothing downstream is generic over the transport. The
/// TLS state is boxed: a plain connection pays only for the enum's tag.
pub enum Socket {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// Plain TCP that another owner may also write to without waiting
    /// (a producer's thread writing to an idle WebSocket, see [`Socket::share`]).
    Shared(Arc<TcpStream>),
}

impl Socket {
    /// A plain socket becomes shared, with a second handle for non-blocking
    /// writes from elsewhere; a TLS one stays as it is (its bytes can only
    /// go through its own session) and gives no handle.
    pub fn share(self) -> (Socket, Option<Arc<TcpStream>>) {
        match self {
            Socket::Plain(stream) => {
                let stream = Arc::new(stream);
                (Socket::Shared(Arc::clone(&stream)), Some(stream))
            }
            other => (other, None),
        }
    }
}

/// Runs a non-blocking write on `stream` once it is writable, as tokio's
/// own `TcpStream` methods do for an owned stream (reads have their own,
/// [`poll_read_shared`]).
fn poll_write_shared<T>(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    mut io: impl FnMut(&TcpStream) -> io::Result<T>,
) -> Poll<io::Result<T>> {
    loop {
        ready!(stream.poll_write_ready(cx))?;
        match io(stream) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            result => return Poll::Ready(result),
        }
    }
}

/// Whether a read that fills less than its buffer shows the socket drained:
/// so with the edge-triggered selectors (epoll, kqueue), as tokio's own
/// `TcpStream::poll_read` reckons it (and not with mio's forced `poll`).
const SHORT_READ_DRAINS: bool = cfg!(all(
    not(mio_unsupported_force_poll_poll),
    any(
        target_os = "android",
        target_os = "illumos",
        target_os = "linux",
        target_os = "dragonfly",
        target_os = "freebsd",
        target_os = "ios",
        target_os = "macos",
        target_os = "netbsd",
        target_os = "openbsd",
    )
));

/// Reads from a shared stream as tokio's `TcpStream::poll_read` does from
/// an owned one: after a short read, which drained the socket, its
/// readiness is cleared at once, so the next read waits for new data
/// instead of making a system call that finds none (one `recvfrom` →
/// `EAGAIN` per client frame of a live connection otherwise). `try_io`
/// clears the readiness only on `WouldBlock`, so a short read is reported to
/// it as one, and its bytes kept.
fn poll_read_shared(stream: &TcpStream, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
    use std::io::Read as _;
    loop {
        ready!(stream.poll_read_ready(cx))?;
        let unfilled = buf.initialize_unfilled();
        let len = unfilled.len();
        let mut short = None;
        let read = stream.try_io(tokio::io::Interest::READABLE, || {
            let n = (&*socket2::SockRef::from(stream)).read(unfilled)?;
            if SHORT_READ_DRAINS && 0 < n && n < len {
                short = Some(n);
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        let n = match (read, short) {
            (_, Some(n)) | (Ok(n), None) => n,
            (Err(e), None) if e.kind() == io::ErrorKind::WouldBlock => continue,
            (Err(e), None) => return Poll::Ready(Err(e)),
        };
        buf.advance(n);
        return Poll::Ready(Ok(()));
    }
}

/// Completes the TLS handshake when `acceptor` is set, within `timeout`.
/// A client that fails the handshake (no certificate signed by the client CA,
/// wrong protocol, too slow) gets an error, logged by the caller.
///
/// The handshake's state (over 1 KiB, rustls's connection inline) is boxed,
/// so the task of a connection, TLS or not, does not carry its size for
/// its whole life.
pub async fn accept(acceptor: Option<&TlsAcceptor>, stream: TcpStream, timeout: Duration) -> io::Result<Socket> {
    let Some(acceptor) = acceptor else { return Ok(Socket::Plain(stream)) };
    match Box::pin(tokio::time::timeout(timeout, acceptor.accept(stream))).await {
        Ok(Ok(tls)) => Ok(Socket::Tls(Box::new(tls))),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")),
    }
}

impl AsyncRead for Socket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Socket::Shared(s) => poll_read_shared(s, cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Socket::Shared(s) => poll_write_shared(s, cx, |s| s.try_write(buf)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Socket::Shared(s) => poll_write_shared(s, cx, |s| s.try_write_vectored(bufs)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Socket::Plain(s) => s.is_write_vectored(),
            Socket::Tls(s) => s.is_write_vectored(),
            Socket::Shared(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_flush(cx),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Socket::Shared(_) => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Socket::Shared(s) => Poll::Ready(socket2::SockRef::from(&**s).shutdown(std::net::Shutdown::Write)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// Reads once from `socket` into `buf`, failing after a few seconds.
    async fn read(socket: &mut Socket, buf: &mut [u8]) -> usize {
        let read = tokio::time::timeout(Duration::from_secs(5), socket.read(buf)).await;
        read.expect("data that was sent is read").expect("read")
    }

    #[tokio::test]
    async fn a_shared_socket_drained_by_a_short_read_waits_for_new_data() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("address")).await.expect("connect");
        let shared = Arc::new(listener.accept().await.expect("accept").0);
        let mut socket = Socket::Shared(Arc::clone(&shared));
        let mut buf = [0u8; 64];
        client.write_all(b"hello").await.expect("write");
        assert_eq!(read(&mut socket, &mut buf).await, 5);
        if SHORT_READ_DRAINS {
            // Cleared: the next read waits for data without asking the kernel first.
            let ready = std::future::poll_fn(|cx| Poll::Ready(shared.poll_read_ready(cx).is_ready())).await;
            assert!(!ready, "the readiness was left set after a short read");
        }
        client.write_all(b" again").await.expect("write");
        assert_eq!(read(&mut socket, &mut buf).await, 6);
        assert_eq!(&buf[..6], b" again");
        // A read that fills its buffer leaves the readiness set: the rest is
        // read without new data coming.
        client.write_all(&[7; 100]).await.expect("write");
        assert_eq!(read(&mut socket, &mut buf).await, 64);
        assert_eq!(read(&mut socket, &mut buf).await, 36);
    }
}
