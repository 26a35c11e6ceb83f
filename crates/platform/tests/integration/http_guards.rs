//! The HTTP server's guards against abusive clients, over real sockets: stalled clients are
//! disconnected after the header read timeout while `/healthz` stays reachable, and the rate
//! limit answers 429 per API key or per address.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use futures::future::join_all;
use platform::http::{self, Problem};
use platform::rate_limit::RateLimit;
use platform::server::ServerSettings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Two API keys (the rate limit counts each on its own).
const KEY_A: &str = "key-a-0123456789abcdefghijkl";
const KEY_B: &str = "key-b-0123456789abcdefghijkl";

/// Long enough that no test waits for it, short enough that a hang fails the test.
const DEADLINE: Duration = Duration::from_secs(60);

/// A server with a write route and the ops routes, stopped when dropped.
struct Server {
    address: SocketAddr,
    shutdown: CancellationToken,
    stopped: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(settings: ServerSettings) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/things", post(|| async { "stored" }))
        .fallback(|| async { Problem::not_found("no such route") });
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let stopped = tokio::spawn(async move { http::serve(listener, router, &settings, stop).await });
    Server {
        address,
        shutdown,
        stopped,
    }
}

/// A connection that sends half a request line and then nothing.
async fn stall(address: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(b"GET /healthz HT").await.unwrap();
    stream
}

/// Reads until the server closes the connection: true on EOF or reset.
async fn closed_by_server(mut stream: TcpStream) -> bool {
    let mut sink = Vec::new();
    match tokio::time::timeout(DEADLINE, stream.read_to_end(&mut sink)).await {
        Ok(Ok(_)) => true,
        Ok(Err(error)) => error.kind() == std::io::ErrorKind::ConnectionReset,
        Err(_elapsed) => false,
    }
}

async fn healthz(address: SocketAddr) -> reqwest::StatusCode {
    let client = reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .unwrap();
    client
        .get(format!("http://{address}/healthz"))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_are_disconnected_and_healthz_answers() {
    let server = start(ServerSettings {
        header_read_timeout: Duration::from_secs(1),
        max_connections: 100,
        rate_limit: None,
    })
    .await;
    // Three times the connection cap: the rest wait in the backlog and are timed out in turn.
    let stalled = join_all((0..300).map(|_| stall(server.address))).await;
    assert_eq!(healthz(server.address).await, reqwest::StatusCode::OK);
    let closed = join_all(stalled.into_iter().map(closed_by_server)).await;
    assert!(
        closed.iter().all(|c| *c),
        "{} of 300 stalled connections were left open",
        closed.iter().filter(|c| !**c).count()
    );
    assert_eq!(healthz(server.address).await, reqwest::StatusCode::OK);
}

#[tokio::test]
async fn idle_connections_that_send_nothing_are_closed_too() {
    let server = start(ServerSettings {
        header_read_timeout: Duration::from_secs(1),
        ..ServerSettings::default()
    })
    .await;
    let idle = TcpStream::connect(server.address).await.unwrap();
    assert!(closed_by_server(idle).await);
}

/// A client whose connections come from `source` (a loopback address).
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .timeout(DEADLINE)
        .build()
        .unwrap()
}

async fn post_things(
    client: &reqwest::Client,
    address: SocketAddr,
    key: Option<&str>,
) -> reqwest::Response {
    let mut request = client.post(format!("http://{address}/things"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

/// Two requests at once, then one a minute: a third request in a row is over the limit.
fn tight_limit() -> ServerSettings {
    let limit = RateLimit::every(Duration::from_secs(60), NonZeroU32::new(2).unwrap())
        .with_api_keys(
            &platform::auth::ApiKeys::parse([
                format!("a:customers:write:{KEY_A}").as_str(),
                format!("b:customers:write:{KEY_B}").as_str(),
            ])
            .unwrap(),
        );
    ServerSettings {
        rate_limit: Some(limit),
        ..ServerSettings::default()
    }
}

async fn assert_limited(response: reqwest::Response) {
    assert_eq!(response.status(), reqwest::StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], 429);
}

#[tokio::test]
async fn the_rate_limit_is_per_api_key_and_spares_other_keys() {
    let server = start(tight_limit()).await;
    let client = client_from("127.0.0.1");
    for _ in 0..2 {
        let response = post_things(&client, server.address, Some(KEY_A)).await;
        assert_eq!(response.status(), reqwest::StatusCode::OK);
    }
    assert_limited(post_things(&client, server.address, Some(KEY_A)).await).await;
    // Another key, and the same address without a key, have limits of their own.
    let other_key = post_things(&client, server.address, Some(KEY_B)).await;
    assert_eq!(other_key.status(), reqwest::StatusCode::OK);
    let anonymous = post_things(&client, server.address, None).await;
    assert_eq!(anonymous.status(), reqwest::StatusCode::OK);
    // Probes are never limited.
    for _ in 0..5 {
        assert_eq!(healthz(server.address).await, reqwest::StatusCode::OK);
    }
}

#[tokio::test]
async fn without_a_known_key_the_rate_limit_is_per_address() {
    let server = start(tight_limit()).await;
    let first = client_from("127.0.0.1");
    // Made-up bearer tokens count as their sender's address, not as new clients.
    for token in [None, Some("made-up-1")] {
        let response = post_things(&first, server.address, token).await;
        assert_eq!(response.status(), reqwest::StatusCode::OK);
    }
    assert_limited(post_things(&first, server.address, Some("made-up-2")).await).await;
    assert_limited(post_things(&first, server.address, None).await).await;
    let second = client_from("127.0.0.2");
    let response = post_things(&second, server.address, None).await;
    assert_eq!(response.status(), reqwest::StatusCode::OK);
}

#[tokio::test]
async fn unknown_routes_are_limited_too_and_the_limit_is_off_by_default() {
    let limited = start(tight_limit()).await;
    let client = client_from("127.0.0.1");
    for _ in 0..2 {
        let response = client
            .get(format!("http://{}/nowhere", limited.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::NOT_FOUND);
    }
    assert_limited(post_things(&client, limited.address, None).await).await;
    let open = start(ServerSettings::default()).await;
    for _ in 0..10 {
        let response = post_things(&client, open.address, None).await;
        assert_eq!(response.status(), reqwest::StatusCode::OK);
    }
}

#[tokio::test]
async fn shutdown_completes_with_a_stalled_client_connected() {
    let mut server = start(ServerSettings {
        header_read_timeout: Duration::from_secs(1),
        ..ServerSettings::default()
    })
    .await;
    let stalled = stall(server.address).await;
    server.shutdown.cancel();
    let stopped = tokio::time::timeout(DEADLINE, &mut server.stopped).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
    assert!(closed_by_server(stalled).await);
}
