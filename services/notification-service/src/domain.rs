//! Types and rules of notifications, free of HTTP and SQL: what a notification is about
//! ([`Kind`]), where its delivery stands ([`Status`], [`Delivery`]), whom the service knows
//! ([`Contact`]), what is recorded ([`Draft`]), and who is told about a transaction outcome
//! ([`Notice::recipients`]). The text of the messages is [`crate::messages`]'s.

use chrono::{DateTime, Utc};
use contracts::{
    CustomerCreated, FailureReason, TransactionFailed, TransactionKind, TransactionProcessed,
    TransactionRequested,
};
use serde::Serialize;
use utoipa::ToSchema;

/// What a notification is about.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    ToSchema,
    strum::IntoStaticStr,
    strum::EnumString,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Kind {
    /// A new customer's welcome message.
    Welcome,
    /// Money left the customer's account (transfer sent, withdrawal).
    DebitAlert,
    /// Money arrived in the customer's account (transfer received, deposit).
    CreditAlert,
    /// A transaction the customer requested was declined.
    FailureAlert,
}

impl Kind {
    /// The stored name.
    pub fn as_str(&self) -> &'static str {
        self.into()
    }

    /// The kind of a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

/// A customer as this service knows them (the projection of `Customer.created`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// Customer id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Email address.
    pub email: String,
}

impl From<&CustomerCreated> for Contact {
    fn from(customer: &CustomerCreated) -> Self {
        Self {
            id: customer.id.clone(),
            name: customer.name.clone(),
            email: customer.email.clone(),
        }
    }
}

/// A message to record for one customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// The customer it is for.
    pub customer_id: String,
    /// What it is about.
    pub kind: Kind,
    /// The transaction it is about, if any.
    pub transaction_id: Option<String>,
    /// Email address (empty when the customer is unknown).
    pub recipient: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
}

/// A transaction outcome worth telling customers about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// `transaction.processed`.
    Processed(TransactionProcessed),
    /// `transaction.failed`.
    Failed(TransactionFailed),
}

impl Notice {
    /// The request the outcome is about.
    pub fn request(&self) -> &TransactionRequested {
        match self {
            Notice::Processed(p) => &p.request,
            Notice::Failed(f) => &f.request,
        }
    }

    /// Who gets a message, and which: for a transfer a debit alert to `from` and a credit alert
    /// to `to`; for a failure, a failure alert to the requester (`from`, or `to` for a credit).
    /// A failure reporting a malformed request (reason `invalid`) goes to nobody: no API ever
    /// accepted it, so the accounts it names did not ask for anything.
    pub fn recipients(&self) -> Vec<(String, Kind)> {
        let request = self.request();
        match self {
            Notice::Processed(_) => {
                let mut out = Vec::new();
                if let (Some(from), TransactionKind::Transfer | TransactionKind::Debit) =
                    (&request.from, request.kind)
                {
                    out.push((from.clone(), Kind::DebitAlert));
                }
                if let (Some(to), TransactionKind::Transfer | TransactionKind::Credit) =
                    (&request.to, request.kind)
                {
                    out.push((to.clone(), Kind::CreditAlert));
                }
                out
            }
            Notice::Failed(failed) if !failed.describes_a_valid_request() => Vec::new(),
            Notice::Failed(_) => requester(request)
                .map(|id| vec![(id.to_string(), Kind::FailureAlert)])
                .unwrap_or_default(),
        }
    }

    /// Every account the request names (recipients and other parties).
    pub fn parties(&self) -> Vec<String> {
        let request = self.request();
        let mut out: Vec<String> = [&request.from, &request.to]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        out.dedup();
        out
    }

    /// True when the event itself says an account does not exist: then a recipient missing from
    /// the projection will not appear later, and waiting for it is pointless.
    pub fn reports_unknown_account(&self) -> bool {
        matches!(self, Notice::Failed(f) if f.reason == FailureReason::UnknownAccount)
    }
}

/// The customer a failure alert goes to: whoever asked (the debited account, or the credited
/// one for a deposit).
fn requester(request: &TransactionRequested) -> Option<&str> {
    match request.kind {
        TransactionKind::Credit => request.to.as_deref().or(request.from.as_deref()),
        _ => request.from.as_deref().or(request.to.as_deref()),
    }
}

/// Where a delivery stands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema, strum::IntoStaticStr, strum::EnumString,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Status {
    /// Recorded, not tried yet.
    Pending,
    /// A transient failure; tried again at `nextAttemptAt`.
    Retrying,
    /// An attempt is under way (until `nextAttemptAt`, the lease). A row still `sending` after
    /// its lease was interrupted by a crash mid-send: it is not sent again (the server may have
    /// accepted it) but recorded as `failed`.
    Sending,
    /// Accepted by the mail server (or written to the mail folder).
    Sent,
    /// Given up: a permanent error, too many attempts, or no such customer.
    Failed,
}

impl Status {
    /// The stored name.
    pub fn as_str(&self) -> &'static str {
        self.into()
    }

    /// The status of a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

/// One notification and its delivery state (a row of the log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// Delivery id (also in the email's Message-ID).
    pub id: String,
    /// The event (`ce_id`) it was sent for.
    pub event_id: String,
    /// The customer it is for.
    pub customer_id: String,
    /// What it is about.
    pub kind: Kind,
    /// The transaction it is about, if any.
    pub transaction_id: Option<String>,
    /// Email address.
    pub recipient: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
    /// Where it stands.
    pub status: Status,
    /// Send attempts so far.
    pub attempts: i64,
    /// The last send error.
    pub last_error: Option<String>,
    /// When it is (or was) due to be tried.
    pub next_attempt_at: DateTime<Utc>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
    /// When its status last changed.
    pub updated_at: DateTime<Utc>,
    /// When the mail server accepted it.
    pub sent_at: Option<DateTime<Utc>>,
}
