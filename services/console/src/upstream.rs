//! The services' public APIs, read (never written): customers from customer-service, balances
//! from transaction-service, deliveries (the latest, then live) from notification-service.

use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::settings::Settings;
use crate::state::Console;

/// Customers read from customer-service at start.
const CUSTOMERS_AT_START: usize = 500;
/// Deliveries read from notification-service when its stream (re)connects.
const RECENT_DELIVERIES: usize = 500;
/// How often an account that does not exist yet (its customer event not consumed) is asked for.
const ACCOUNT_RETRY: Duration = Duration::from_millis(300);
/// How many times it is asked for before the console waits for the next event about it.
const ACCOUNT_ATTEMPTS: u32 = 100;
/// Pause before a lost connection is tried again.
const RECONNECT: Duration = Duration::from_secs(1);

/// Errors of a service API.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The request failed (connection, timeout, body).
    #[error("{url}: {source}")]
    Request {
        /// What was asked.
        url: String,
        /// Why it failed.
        source: reqwest::Error,
    },
    /// The service answered with an error status.
    #[error("{url}: HTTP {status}")]
    Status {
        /// What was asked.
        url: String,
        /// The status.
        status: u16,
    },
    /// `CONSOLE_API_KEY` cannot be sent in a header.
    #[error("CONSOLE_API_KEY has characters an HTTP header cannot carry")]
    InvalidKey,
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client: {0}")]
    Client(reqwest::Error),
}

/// A client of the three services.
#[derive(Clone)]
pub struct Upstream {
    http: reqwest::Client,
    streams: reqwest::Client,
    settings: Settings,
}

impl Upstream {
    /// A client of the services `settings` names.
    pub fn new(settings: Settings) -> Result<Self, UpstreamError> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = &settings.api_key {
            let mut value =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                    .map_err(|_| UpstreamError::InvalidKey)?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let client = |builder: reqwest::ClientBuilder| {
            builder
                .default_headers(headers.clone())
                .build()
                .map_err(UpstreamError::Client)
        };
        Ok(Self {
            http: client(reqwest::Client::builder().timeout(Duration::from_secs(5)))?,
            // A live stream has no overall timeout; only connecting has.
            streams: client(reqwest::Client::builder().connect_timeout(Duration::from_secs(5)))?,
            settings,
        })
    }

    /// `GET url`, its transport error named by the URL.
    async fn send(&self, url: &str) -> Result<reqwest::Response, UpstreamError> {
        self.http
            .get(url)
            .send()
            .await
            .map_err(|source| UpstreamError::Request {
                url: url.to_string(),
                source,
            })
    }

    async fn get(&self, url: String) -> Result<Option<Value>, UpstreamError> {
        let response = self.send(&url).await?;
        match response.status().as_u16() {
            404 => Ok(None),
            status if !(200..300).contains(&status) => Err(UpstreamError::Status { url, status }),
            _ => response
                .json()
                .await
                .map(Some)
                .map_err(|source| UpstreamError::Request { url, source }),
        }
    }

    /// The services read, by name, with their base URLs.
    pub fn services(&self) -> [(&'static str, &str); 3] {
        [
            ("customer-service", &self.settings.customer_service),
            ("transaction-service", &self.settings.transaction_service),
            ("notification-service", &self.settings.notification_service),
        ]
    }

    /// The Prometheus text of the service at `base` (`GET <base>/metrics`).
    pub async fn metrics(&self, base: &str) -> Result<String, UpstreamError> {
        let url = format!("{base}/metrics");
        let response = self.send(&url).await?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(UpstreamError::Status { url, status });
        }
        response
            .text()
            .await
            .map_err(|source| UpstreamError::Request { url, source })
    }

    /// Reads the customers customer-service lists, until it answers or `shutdown`.
    pub async fn load_customers(&self, console: Console, shutdown: CancellationToken) {
        let url = format!(
            "{}/app/customers?limit={CUSTOMERS_AT_START}",
            self.settings.customer_service
        );
        loop {
            match self.get(url.clone()).await {
                Ok(list) => {
                    let items = list
                        .as_ref()
                        .and_then(|l| l.get("items"))
                        .and_then(Value::as_array);
                    for customer in items.into_iter().flatten() {
                        let id = customer.get("id").and_then(Value::as_str);
                        let name = customer.get("name").and_then(Value::as_str);
                        if let (Some(id), Some(name)) = (id, name) {
                            console.customer_listed(id, name);
                        }
                    }
                    return;
                }
                Err(error) => tracing::warn!(%error, "customer-service not reachable; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RECONNECT) => {}
            }
        }
    }

    /// Reads again, from transaction-service, each account the console is asked to refresh.
    pub async fn refresh_accounts(&self, console: Console, shutdown: CancellationToken) {
        let mut attempts: std::collections::BTreeMap<String, u32> = Default::default();
        loop {
            let stale = tokio::select! {
                _ = shutdown.cancelled() => return,
                stale = console.stale_accounts() => stale,
            };
            let mut missing = Vec::new();
            for id in stale {
                let url = format!("{}/accounts/{id}", self.settings.transaction_service);
                match self.get(url).await {
                    Ok(Some(account)) => {
                        attempts.remove(&id);
                        let text = |field: &str| account.get(field).and_then(Value::as_str);
                        if let (Some(balance), Some(currency)) = (text("balance"), text("currency"))
                        {
                            console.account_read(&id, None, balance, currency);
                        }
                    }
                    Ok(None) => {
                        // Not opened yet: transaction-service has not consumed the customer.
                        let tried = attempts.entry(id.clone()).or_default();
                        *tried += 1;
                        if *tried < ACCOUNT_ATTEMPTS {
                            missing.push(id);
                        } else {
                            attempts.remove(&id);
                        }
                    }
                    Err(error) => {
                        tracing::debug!(%error, "account not read; retrying");
                        missing.push(id);
                    }
                }
            }
            if !missing.is_empty() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(ACCOUNT_RETRY) => {}
                }
                console.refresh_accounts(missing);
            }
        }
    }

    /// Follows notification-service's live feed of deliveries; at each (re)connection, reads the
    /// latest deliveries too (after subscribing, so none falls in between).
    pub async fn follow_deliveries(&self, console: Console, shutdown: CancellationToken) {
        loop {
            if let Err(error) = self.follow_once(&console, &shutdown).await {
                tracing::debug!(%error, "notification-service feed lost; reconnecting");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RECONNECT) => {}
            }
        }
    }

    async fn follow_once(
        &self,
        console: &Console,
        shutdown: &CancellationToken,
    ) -> Result<(), UpstreamError> {
        let url = format!(
            "{}/notifications/stream",
            self.settings.notification_service
        );
        let mut response =
            self.streams
                .get(&url)
                .send()
                .await
                .map_err(|source| UpstreamError::Request {
                    url: url.clone(),
                    source,
                })?;
        if !response.status().is_success() {
            return Err(UpstreamError::Status {
                url,
                status: response.status().as_u16(),
            });
        }
        let recent = format!(
            "{}/notifications/recent?limit={RECENT_DELIVERIES}",
            self.settings.notification_service
        );
        if let Some(list) = self.get(recent).await? {
            let items = list.get("items").and_then(Value::as_array);
            // Oldest first, so that the newest state of each wins.
            for delivery in items.into_iter().flatten().rev() {
                console.delivery(delivery.clone());
            }
        }
        let mut events = SseParser::default();
        loop {
            let chunk = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                chunk = response.chunk() => chunk,
            };
            let chunk = chunk.map_err(|source| UpstreamError::Request {
                url: url.clone(),
                source,
            })?;
            let Some(chunk) = chunk else {
                return Ok(());
            };
            for (name, data) in events.feed(&chunk) {
                if name == "delivery" {
                    if let Ok(delivery) = serde_json::from_str::<Value>(&data) {
                        console.delivery(delivery);
                    }
                }
            }
        }
    }
}

/// Splits a server-sent-event byte stream into `(event name, data)` pairs.
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: String,
}

impl SseParser {
    /// Takes the next bytes; returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<(String, String)> {
        self.buffer
            .push_str(&String::from_utf8_lossy(bytes).replace("\r\n", "\n"));
        let mut events = Vec::new();
        while let Some(end) = self.buffer.find("\n\n") {
            let block: String = self.buffer.drain(..end + 2).collect();
            let mut name = "message".to_string();
            let mut data: Vec<&str> = Vec::new();
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    name = value.trim().to_string();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push(value.strip_prefix(' ').unwrap_or(value));
                }
            }
            if !data.is_empty() {
                events.push((name, data.join("\n")));
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_sent_events_are_split_across_chunks() {
        let mut parser = SseParser::default();
        assert!(
            parser
                .feed(b"event: ready\ndata: {}\n\n: keep-alive\n\nevent: deli")
                .len()
                == 1
        );
        let events = parser.feed(b"very\nid: 7\ndata: {\"id\":\"d1\"}\n\n");
        assert_eq!(
            events,
            [("delivery".to_string(), "{\"id\":\"d1\"}".to_string())]
        );
        assert!(parser.feed(b"data: a\ndata: b\n\n")[0].1 == "a\nb");
    }
}
