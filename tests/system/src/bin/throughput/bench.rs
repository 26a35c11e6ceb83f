//! What every phase shares: [`Bench`] (the settings, an HTTP client, the transaction-service
//! URLs, the outcome clock, notification-service's alerts), the set-up (funded accounts, a warm-up
//! transfer), the open loop with its outcomes ([`Bench::pace`]), and the random transfers sent.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use futures::StreamExt;
use platform::testing::poll_until;
use serde_json::json;
use system_tests::{get, post, Arrival, Lcg, OutcomeClock, Stack};

use crate::alerts;
use crate::load::{self, Sent, Transfer};
use crate::settings::Settings;

/// Outcomes read, by transaction id.
pub(crate) type Outcomes = HashMap<String, Arrival>;

/// Transfers of 1.00 between distinct random funded accounts, ids `<prefix><n>`.
pub(crate) fn transfers(
    prefix: &str,
    count: usize,
    accounts: usize,
    random: &mut Lcg,
) -> Vec<Transfer> {
    (0..count)
        .map(|n| {
            let from = random.below(accounts as u64);
            let to = (from + 1 + random.below(accounts as u64 - 1)) % accounts as u64;
            let id = format!("{prefix}{n}");
            Transfer {
                body: json!({"from": format!("bench-{from}"), "to": format!("bench-{to}"),
                    "amount": "1.00", "transactionId": id}),
                id,
            }
        })
        .collect()
}

pub(crate) fn ids(transfers: &[Transfer]) -> Vec<String> {
    transfers.iter().map(|t| t.id.clone()).collect()
}

/// What every phase uses: the settings, an HTTP client, the `/transactions` of every
/// transaction-service process, the outcome clock and notification-service's alerts.
pub(crate) struct Bench<'a> {
    pub(crate) settings: &'a Settings,
    pub(crate) client: reqwest::Client,
    pub(crate) tx_urls: Vec<String>,
    pub(crate) clock: OutcomeClock,
    pub(crate) alerts: alerts::Alerts,
}

impl<'a> Bench<'a> {
    /// Starts the outcome clock and opens notification-service's database.
    pub(crate) async fn open(settings: &'a Settings, stack: &Stack) -> Result<Self> {
        let clock = OutcomeClock::start(&stack.kafka);
        let alerts = alerts::Alerts::open(
            stack.services["notification-service"]
                .env_var("DATABASE_URL")
                .context("notification-service has no DATABASE_URL")?,
        )
        .await?;
        Ok(Self {
            settings,
            client: reqwest::Client::new(),
            tx_urls: stack
                .processes("transaction-service")
                .map(|p| format!("{}/transactions", p.url()))
                .collect(),
            clock,
            alerts,
        })
    }

    /// Set-up: customers, their accounts, a deposit each, one warm-up transfer; waits until all
    /// are processed.
    pub(crate) async fn set_up(&mut self, stack: &Stack) -> Result<()> {
        let (settings, client) = (self.settings, &self.client);
        println!("creating and funding {} accounts", settings.accounts);
        let customers_url = format!("{}/app/customers", stack.url("customer-service"));
        let created: Vec<u16> = futures::stream::iter(0..settings.accounts)
            .map(|n| {
                let body = json!({"id": format!("bench-{n}"), "name": format!("Bench {n}"),
                    "email": format!("bench{n}@example.com")});
                let url = &customers_url;
                async move { post(client, url, body).await.0 }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        ensure!(
            created.iter().all(|s| *s == 201),
            "creating customers: {created:?}"
        );
        for n in 0..settings.accounts {
            let url = format!("{}/accounts/bench-{n}", stack.url("transaction-service"));
            poll_until(Duration::from_secs(60), || {
                let request = get(client, &url);
                async move { (request.await.0 == 200).then_some(()) }
            })
            .await
            .with_context(|| format!("account bench-{n} not opened"))?;
        }
        let mut funding = Vec::new();
        for n in 0..settings.accounts {
            let id = format!("fund-{n}");
            let body =
                json!({"to": format!("bench-{n}"), "amount": "1000000.00", "transactionId": id});
            let (status, answer) = post(client, &self.tx_urls[0], body).await;
            ensure!(status == 202, "deposit: {status} {answer}");
            funding.push(id);
        }
        let warm = json!({"from": "bench-0", "to": "bench-1", "amount": "1.00",
            "transactionId": "warm-0"});
        ensure!(
            post(client, &self.tx_urls[0], warm).await.0 == 202,
            "warm-up transfer"
        );
        funding.push("warm-0".to_string());
        let funded = self.clock.wait_for(&funding, settings.timeout).await;
        ensure!(
            funded.len() == funding.len()
                && funded.values().all(|a| a.topic == "transaction.processed"),
            "set-up: {} of {} deposits processed",
            funded.len(),
            funding.len()
        );
        Ok(())
    }

    /// Waits until notification-service has recorded the set-up deposits' alerts.
    pub(crate) async fn wait_set_up_alerts(&self) -> Result<()> {
        let accounts = self.settings.accounts as i64;
        let setup_alerts = self
            .alerts
            .wait("fund-", accounts, self.settings.timeout)
            .await?;
        ensure!(
            setup_alerts.count == accounts,
            "set-up alerts: {setup_alerts:?}"
        );
        Ok(())
    }

    /// Sends `batch` in an open loop at `rate` per second over the transaction-service
    /// processes, then waits up to `timeout` for the outcomes of `wanted`.
    pub(crate) async fn pace(
        &mut self,
        batch: Vec<Transfer>,
        rate: f64,
        wanted: &[String],
        timeout: Duration,
    ) -> (Vec<Sent>, Outcomes) {
        let sent = load::paced(&self.client, &self.tx_urls, batch, rate).await;
        let outcomes = self.clock.wait_for(wanted, timeout).await;
        (sent, outcomes)
    }
}
