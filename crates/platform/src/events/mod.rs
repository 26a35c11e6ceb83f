//! Event processing on the database and the broker: what a consumer applies, the inbox, the
//! parking lot, retention, rebuilds and `/readyz`'s checks; on `foundation`, `store` and `kafka`.

pub mod apply;
pub mod inbox;
pub mod parking;
pub mod readiness;
pub mod rebuild;
pub mod retention;
