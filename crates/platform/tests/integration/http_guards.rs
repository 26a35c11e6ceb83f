//! The HTTP server's guards against abusive clients, over real sockets: stalled clients are
//! disconnected after the header read timeout while `/healthz` stays reachable, and the rate
//! limit answers 429 per API key or per address.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use futures::future::join_all;
use platform::http;
use platform::problem::Problem;
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
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                "done"
            }),
        )
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
        ..ServerSettings::default()
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

/// Reads one HTTP/1.1 response from `stream` (headers and a `Content-Length` body); `None` when
/// the server closed the connection instead.
async fn read_response(stream: &mut TcpStream) -> Option<String> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buffer).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buffer.len() >= end + 4 + length {
                return Some(text);
            }
        }
        match tokio::time::timeout(DEADLINE, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(n)) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_outlives_the_header_timeout_and_serves_a_post() {
    // A proxy in front (Code Engine's queue-proxy, an ingress) keeps idle HTTP/1.1 connections
    // and reuses them: closing one under it turns its next request into a 502.
    let server = start(ServerSettings {
        header_read_timeout: Duration::from_secs(1),
        ..ServerSettings::default()
    })
    .await;
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut stream).await.expect("the first answer");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");

    tokio::time::sleep(Duration::from_secs(3)).await;
    stream
        .write_all(b"POST /things HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let second = read_response(&mut stream)
        .await
        .expect("the idle connection was closed under its client");
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert!(second.ends_with("stored"), "{second}");

    // A client that starts a request and stalls is still cut off.
    stream.write_all(b"POST /things HT").await.unwrap();
    assert!(closed_by_server(stream).await);
}

#[tokio::test]
async fn a_request_served_longer_than_the_header_timeout_is_answered_and_idle_ends_at_keep_alive() {
    let server = start(ServerSettings {
        header_read_timeout: Duration::from_secs(1),
        keep_alive: Duration::from_secs(2),
        ..ServerSettings::default()
    })
    .await;
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let answer = read_response(&mut stream)
        .await
        .expect("a request still being served is not cut off by the header timeout");
    assert!(answer.ends_with("done"), "{answer}");
    // Idle past the keep-alive time: the server closes the connection.
    let started = tokio::time::Instant::now();
    assert!(closed_by_server(stream).await);
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "closed after {:?}, before the keep-alive time",
        started.elapsed()
    );
}

/// An idle connection from `source` (a loopback address) to `address`.
async fn idle_from(source: &str, address: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse().unwrap(), 0))
        .unwrap();
    socket.connect(address).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_take_every_slot_and_probes_answer_when_the_slots_are_gone() {
    let server = start(ServerSettings {
        header_read_timeout: Duration::from_secs(30),
        max_connections: 12,
        max_connections_per_client: 8,
        ..ServerSettings::default()
    })
    .await;
    // One client holds its whole share; its next connection is closed at once.
    let mut greedy = join_all((0..8).map(|_| idle_from("127.0.0.2", server.address))).await;
    let refused = idle_from("127.0.0.2", server.address).await;
    assert!(
        closed_by_server(refused).await,
        "a ninth connection of one client"
    );
    // Another client is still served.
    let other = client_from("127.0.0.3");
    assert_eq!(
        post_things(&other, server.address, None).await.status(),
        200
    );

    // The API's slots are all taken (8 + 4 from a third client): probes still answer, from a
    // probe slot, and the API answers 503 there.
    let mut third = join_all((0..4).map(|_| idle_from("127.0.0.4", server.address))).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let prober = client_from("127.0.0.5");
    let probe = prober
        .get(format!("http://{}/healthz", server.address))
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 200);
    let busy = post_things(&client_from("127.0.0.6"), server.address, None).await;
    assert_eq!(busy.status(), 503);
    assert_eq!(busy.headers()["retry-after"], "1");
    let body: serde_json::Value = busy.json().await.unwrap();
    assert_eq!(body["status"], 503, "{body}");

    // Once connections close, the API takes requests again.
    greedy.clear();
    third.clear();
    let served = tokio::time::timeout(DEADLINE, async {
        loop {
            let answer = post_things(&client_from("127.0.0.7"), server.address, None).await;
            if answer.status() == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(served.is_ok(), "the API never took requests again");
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

/// POST /things from `client` as forwarded for `forwarded_for` (an `X-Forwarded-For` header).
async fn post_forwarded(
    client: &reqwest::Client,
    address: SocketAddr,
    forwarded_for: &str,
) -> reqwest::Response {
    client
        .post(format!("http://{address}/things"))
        .header("x-forwarded-for", forwarded_for)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    // Configured as a deployment is: through the environment.
    let env = [
        ("RATE_LIMIT_PER_SECOND", "1"),
        ("RATE_LIMIT_BURST", "2"),
        ("TRUSTED_PROXIES", "127.0.0.2"),
    ];
    let settings = ServerSettings::from_env(&env, &platform::auth::ApiKeys::default()).unwrap();
    let server = start(settings).await;
    let proxy = client_from("127.0.0.2");
    // Two clients behind the proxy: each gets its own burst of two.
    for client in ["203.0.113.7", "203.0.113.8"] {
        for _ in 0..2 {
            let response = post_forwarded(&proxy, server.address, client).await;
            assert_eq!(response.status(), reqwest::StatusCode::OK, "{client}");
        }
    }
    assert_limited(post_forwarded(&proxy, server.address, "203.0.113.7").await).await;
    // A client cannot buy a new limit by writing the header itself, through the proxy (the
    // proxy appends the address it saw) or straight to the service (it is no trusted proxy).
    assert_limited(post_forwarded(&proxy, server.address, "198.51.100.1, 203.0.113.8").await).await;
    let direct = client_from("127.0.0.3");
    for made_up in ["192.0.2.1", "192.0.2.2"] {
        let response = post_forwarded(&direct, server.address, made_up).await;
        assert_eq!(response.status(), reqwest::StatusCode::OK, "{made_up}");
    }
    assert_limited(post_forwarded(&direct, server.address, "192.0.2.3").await).await;
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
