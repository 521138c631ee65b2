//! wserver's producers: HTTP/1.1 `POST /push` with the body
//! `{"userId":"u<k>","event":"bench","message":"<stamp><padding>"}`, one
//! request at a time per keep-alive connection (as Go's `http.Client` does),
//! several connections at once. The reply `message sent to N clients`
//! counts the frames queued.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::fleet::{EVENT, STAMP_DIGITS, Shared};
use crate::http1::{head_end, header};
use crate::producer::Tally;

/// Pushes to make over HTTP.
#[derive(Debug, Clone, Copy)]
pub struct HttpLoad {
    pub pushes: u64,
    /// Concurrent producer connections.
    pub producers: usize,
    /// Push `k` goes to user `u{k mod users}`.
    pub users: usize,
    /// Total pushes per second; `None`: each producer sends its next push
    /// as soon as the previous one is answered.
    pub rate: Option<f64>,
    /// No push is started after this.
    pub deadline: Instant,
    pub message_bytes: usize,
}

/// Runs `load` against `POST /push` on `addr` and sums the replies.
pub async fn run(addr: SocketAddr, load: HttpLoad, shared: &Arc<Shared>) -> anyhow::Result<Tally> {
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(load.producers);
    for p in 0..load.producers.max(1) {
        let shared = Arc::clone(shared);
        tasks.push(tokio::spawn(async move { producer(addr, p, load, started, &shared).await }));
    }
    let mut total = Tally::default();
    for task in tasks {
        total.add(task.await.context("HTTP producer task")??);
    }
    Ok(total)
}

/// Producer `p` sends pushes `p, p + producers, ...`.
async fn producer(
    addr: SocketAddr,
    p: usize,
    load: HttpLoad,
    started: tokio::time::Instant,
    shared: &Shared,
) -> anyhow::Result<Tally> {
    let mut stream = TcpStream::connect(addr).await.with_context(|| format!("HTTP connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let padding = "x".repeat(load.message_bytes.saturating_sub(STAMP_DIGITS));
    let mut tally = Tally::default();
    let mut buf = Vec::with_capacity(1024);
    let step = load.producers.max(1) as u64;
    for k in (p as u64..load.pushes).step_by(step as usize) {
        if Instant::now() >= load.deadline {
            break;
        }
        if let Some(rate) = load.rate {
            tokio::time::sleep_until(started + Duration::from_secs_f64(k as f64 / rate)).await;
        }
        let user = k % load.users.max(1) as u64;
        let stamp = shared.now_nanos();
        let body = format!(
            r#"{{"userId":"u{user}","event":"{EVENT}","message":"{stamp:0width$}{padding}"}}"#,
            width = STAMP_DIGITS
        );
        let request = format!(
            "POST /push HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.context("sending POST /push")?;
        tally.sent += 1;
        let (status, text) = read_response(&mut stream, &mut buf).await?;
        tally.replies += 1;
        match (status, sent_to(&text)) {
            (200, Some(n)) => tally.delivered += n,
            _ => tally.fail(|| format!("HTTP {status}: {text}")),
        }
    }
    Ok(tally)
}

/// `message sent to 10 clients` → 10.
fn sent_to(text: &str) -> Option<u64> {
    text.strip_prefix("message sent to ")?.strip_suffix(" clients")?.parse().ok()
}

/// Reads one response with a `content-length` body; returns its status and body.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<(u16, String)> {
    let head_end = loop {
        if let Some(end) = head_end(buf) {
            break end;
        }
        read_more(stream, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| anyhow!("odd answer"))?;
    let length: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("an answer without content-length: {head:?}"))?;
    while buf.len() < head_end + length {
        read_more(stream, buf).await?;
    }
    let text = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
    buf.drain(..head_end + length);
    Ok((status, text))
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    let mut chunk = [0u8; 2048];
    let n = stream.read(&mut chunk).await.context("reading the /push answer")?;
    if n == 0 {
        bail!("the server closed the HTTP connection");
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::sent_to;

    #[test]
    fn reads_wserver_replies() {
        assert_eq!(sent_to("message sent to 10 clients"), Some(10));
        assert_eq!(sent_to("request data illegal"), None);
    }
}
