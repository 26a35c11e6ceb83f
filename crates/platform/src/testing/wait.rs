//! Waiting for asynchronous outcomes: a condition polled every 100 ms until it holds.

use std::future::Future;
use std::time::Duration;

/// How long the service tests wait for an asynchronous outcome (an event, a row, a mail).
pub const DEADLINE: Duration = Duration::from_secs(30);

/// How often a condition is polled.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// Polls `check` until it returns `Some` and returns that value; panics after `timeout` with
/// "timed out after … waiting for `what`".
///
/// ```text
/// let account = eventually("account c-1 to open", DEADLINE, || async {
///     let (status, body) = app.get("/accounts/c-1").await;
///     (status == 200).then_some(body)
/// })
/// .await;
/// ```
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match poll_until(timeout, check).await {
        Some(value) => value,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// Polls `check` until it returns `Some` or `timeout` passes (then `None`): for callers that
/// handle a timeout themselves rather than panic (see [`eventually`]).
pub async fn poll_until<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}
