//! What stands in front of the router: API keys and scopes, request limits, where to listen, the
//! rate limit and the server's admission; on `foundation` only.

pub mod auth;
pub mod bind;
pub mod limits;
pub mod rate_limit;
pub mod server;
