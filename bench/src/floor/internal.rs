//! The floor's producer side, on one listener like pushgate's internal one:
//! a connection that opens with the HTTP/2 preface goes to tonic (the
//! `PushService` subset the bench uses: `Push`, `PushStream`, `Stats`);
//! any other is HTTP/1.1 with keep-alive, serving wserver's `POST /push`.
//!
//! `PushStream` answers with a stream that tonic polls on the HTTP/2
//! connection's task: it takes the requests that are ready (at most
//! [`BATCH`]), delivers them inline ([`Floor::deliver`]), then yields one
//! reply per request, in order. No task, no channel between the request
//! and the sockets.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use futures_util::{Stream, StreamExt as _, stream};
use pushgate::proto::push_service_server::{PushService, PushServiceServer};
use pushgate::proto::{
    BroadcastReply, BroadcastRequest, DisconnectReply, DisconnectRequest, OnlineReply, OnlineRequest, PushBatchReply,
    PushBatchRequest, PushReply, PushRequest, StatsReply, StatsRequest, push_request,
};
use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::Floor;
use crate::http1::{head_end, header};

/// Requests taken from a `PushStream` at once, when that many are ready.
const BATCH: usize = 64;
/// pushgate's HTTP/2 windows (src/http/listener.rs), for the same flow control.
const STREAM_WINDOW: u32 = 64 << 10;
const CONNECTION_WINDOW: u32 = 4 << 20;

/// Accepts producer connections and sorts them by their first bytes.
pub async fn serve(listener: TcpListener, floor: Arc<Floor>) -> anyhow::Result<()> {
    let (h2_tx, h2_rx) = mpsc::channel::<TcpStream>(64);
    let incoming = stream::unfold(h2_rx, |mut rx| async move { rx.recv().await.map(|s| (Ok::<_, io::Error>(s), rx)) });
    let grpc = tonic::transport::Server::builder()
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .tcp_nodelay(true)
        .add_service(PushServiceServer::new(Service { floor: Arc::clone(&floor) }).max_decoding_message_size(1 << 20))
        .serve_with_incoming(incoming);
    let accept = async move {
        loop {
            let (stream, _peer) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let (h2_tx, floor) = (h2_tx.clone(), Arc::clone(&floor));
            tokio::spawn(async move {
                let mut first = [0u8; 3];
                match stream.peek(&mut first).await {
                    Ok(3) if &first == b"PRI" => drop(h2_tx.send(stream).await),
                    Ok(_) => drop(http1(stream, &floor).await),
                    Err(_) => {}
                }
            });
        }
    };
    tokio::select! {
        served = grpc => served.map_err(anyhow::Error::from),
        accepted = accept => accepted,
    }
}

struct Service {
    floor: Arc<Floor>,
}

/// The text of a push request (a binary payload is delivered as its bytes
/// read as UTF-8, lossily: the bench sends only text).
fn text(request: &PushRequest) -> std::borrow::Cow<'_, str> {
    match &request.payload {
        Some(push_request::Payload::Message(m)) => m.as_str().into(),
        Some(push_request::Payload::Data(d)) => String::from_utf8_lossy(d),
        None => "".into(),
    }
}

/// Delivers a batch of stream requests: runs of consecutive pushes to the
/// same user and event go to [`Floor::deliver`] together.
async fn deliver_batch(floor: &Floor, batch: Vec<Result<PushRequest, Status>>) -> Vec<Result<PushReply, Status>> {
    let mut replies = Vec::with_capacity(batch.len());
    let mut rest = batch.as_slice();
    while let Some(first) = rest.first() {
        let head = match first {
            Ok(head) => head,
            Err(status) => {
                replies.push(Err(status.clone()));
                rest = &rest[1..];
                continue;
            }
        };
        let run = rest
            .iter()
            .take_while(|r| r.as_ref().is_ok_and(|p| p.user_id == head.user_id && p.event == head.event))
            .count();
        let texts: Vec<_> = rest[..run].iter().filter_map(|r| r.as_ref().ok()).map(text).collect();
        let messages: Vec<&str> = texts.iter().map(|t| t.as_ref()).collect();
        let done = floor.deliver(&head.user_id, &head.event, &messages).await;
        for (i, request) in rest[..run].iter().filter_map(|r| r.as_ref().ok()).enumerate() {
            replies.push(Ok(PushReply {
                delivered: done.per_push,
                seq: done.first_seq + i as u64,
                request_id: request.request_id.clone(),
                ..Default::default()
            }));
        }
        rest = &rest[run..];
    }
    replies
}

type Replies = Pin<Box<dyn Stream<Item = Result<PushReply, Status>> + Send>>;

#[tonic::async_trait]
impl PushService for Service {
    async fn push(&self, request: Request<PushRequest>) -> Result<Response<PushReply>, Status> {
        let request = request.into_inner();
        let done = self.floor.deliver(&request.user_id, &request.event, &[&text(&request)]).await;
        Ok(Response::new(PushReply {
            delivered: done.per_push,
            seq: done.first_seq,
            request_id: request.request_id,
            ..Default::default()
        }))
    }

    type PushStreamStream = Replies;

    async fn push_stream(
        &self,
        request: Request<Streaming<PushRequest>>,
    ) -> Result<Response<Self::PushStreamStream>, Status> {
        let floor = Arc::clone(&self.floor);
        let replies = request.into_inner().ready_chunks(BATCH).then(move |batch| {
            let floor = Arc::clone(&floor);
            async move { stream::iter(deliver_batch(&floor, batch).await) }
        });
        Ok(Response::new(Box::pin(replies.flatten())))
    }

    async fn push_batch(&self, _: Request<PushBatchRequest>) -> Result<Response<PushBatchReply>, Status> {
        Err(Status::unimplemented("the floor serves Push, PushStream and Stats"))
    }

    async fn broadcast(&self, _: Request<BroadcastRequest>) -> Result<Response<BroadcastReply>, Status> {
        Err(Status::unimplemented("the floor serves Push, PushStream and Stats"))
    }

    async fn disconnect(&self, _: Request<DisconnectRequest>) -> Result<Response<DisconnectReply>, Status> {
        Err(Status::unimplemented("the floor serves Push, PushStream and Stats"))
    }

    async fn online(&self, _: Request<OnlineRequest>) -> Result<Response<OnlineReply>, Status> {
        Err(Status::unimplemented("the floor serves Push, PushStream and Stats"))
    }

    async fn stats(&self, _: Request<StatsRequest>) -> Result<Response<StatsReply>, Status> {
        let f = &self.floor;
        Ok(Response::new(StatsReply {
            connections: f.connections.load(Relaxed),
            pushes: f.pushes.load(Relaxed),
            deliveries: f.deliveries.load(Relaxed),
            node_id: "floor".into(),
            ..Default::default()
        }))
    }
}

/// wserver's body; exact keys (the bench's producer sends them so).
#[derive(Deserialize)]
struct WserverPush {
    #[serde(rename = "userId")]
    user_id: String,
    event: String,
    message: String,
}

/// HTTP/1.1 keep-alive (until `connection: close`): `POST /push` delivers
/// and answers wserver's `message sent to N clients`; anything else (the
/// bench's `GET /metrics`) gets 404.
async fn http1(mut stream: TcpStream, floor: &Floor) -> io::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    loop {
        let Some(head_end) = read_until_head(&mut stream, &mut buf).await? else { return Ok(()) };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let length: usize = header(&head, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        while buf.len() < head_end + length {
            if read_more(&mut stream, &mut buf).await? == 0 {
                return Ok(());
            }
        }
        let body = &buf[head_end..head_end + length];
        let answer = match (head.split_whitespace().nth(1), serde_json::from_slice::<WserverPush>(body)) {
            (Some("/push"), Ok(push)) => {
                let done = floor.deliver(&push.user_id, &push.event, &[&push.message]).await;
                response("200 OK", &format!("message sent to {} clients", done.per_push))
            }
            (Some("/push"), Err(_)) => response("400 Bad Request", "request data illegal"),
            _ => response("404 Not Found", ""),
        };
        stream.write_all(answer.as_bytes()).await?;
        if header(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            return Ok(());
        }
        buf.drain(..head_end + length);
    }
}

fn response(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads until `buf` holds a whole request head; returns where it ends, or
/// `None` when the client closed between requests.
async fn read_until_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
    loop {
        if let Some(end) = head_end(buf) {
            return Ok(Some(end));
        }
        if buf.len() > 64 << 10 {
            return Err(io::ErrorKind::InvalidData.into());
        }
        if read_more(stream, buf).await? == 0 {
            return Ok(None);
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}
