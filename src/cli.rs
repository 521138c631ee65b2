//! `pushgate push`: an operator's client for one push over gRPC.

use anyhow::Context as _;
use tonic::metadata::MetadataValue;

use pushgate::proto::push_service_client::PushServiceClient;
use pushgate::proto::{PushRequest, push_request};

/// Arguments of `pushgate push`.
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The user to push to.
    #[arg(long)]
    pub user: String,
    /// The event the user's connections subscribed to.
    #[arg(long)]
    pub event: String,
    /// The text message.
    pub message: String,
    /// The gateway's internal (producer) address.
    #[arg(long, env = "PUSHGATE_PUSH_ADDR", default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// Producer API key, sent as `authorization: Bearer <key>`.
    #[arg(long, env = "PUSHGATE_API_KEY")]
    pub api_key: Option<String>,
}

/// Sends the push and prints the reply.
pub async fn push(args: PushArgs) -> anyhow::Result<()> {
    let mut client =
        PushServiceClient::connect(args.addr.clone()).await.with_context(|| format!("connecting to {}", args.addr))?;
    let mut request = tonic::Request::new(PushRequest {
        user_id: args.user,
        event: args.event,
        payload: Some(push_request::Payload::Message(args.message)),
        ..Default::default()
    });
    if let Some(key) = args.api_key {
        let value: MetadataValue<_> = format!("Bearer {key}").parse().context("api key is not a valid header value")?;
        request.metadata_mut().insert("authorization", value);
    }
    let reply = client.push(request).await.map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?;
    let reply = reply.into_inner();
    println!("delivered={} seq={}", reply.delivered, reply.seq);
    Ok(())
}
