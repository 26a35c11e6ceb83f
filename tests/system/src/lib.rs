//! A harness that runs the three service binaries as real processes against the real local
//! broker (topics under a unique prefix), real databases and a real SMTP server, and can kill,
//! terminate, crash (crash points armed by `EMS_FAILPOINTS`) and restart them; and the judgement
//! of a run: outcomes per request, balances, e-mails. Used by the end-to-end and crash tests and
//! by the throughput benchmark.
//!
//! Layout:
//! - [`stack`]: [`Stack`], the three services (and replicas, the console) started together;
//! - [`process`]: [`ServiceProcess`], one service process and its signals; [`run_to_exit`];
//! - [`keys`]: `API_KEYS` entries;
//! - [`http`]: requests to the services ([`post`], [`get`], customers, accounts, balances);
//! - [`topics`]: outcome events read from Kafka, consumer groups' progress;
//! - [`verdict`]: the judgement of a run ([`Verdict`], [`MailReport`], database counts);
//! - [`seed`]: the seed's flow, asserted step by step;
//! - [`chaos`], [`browser`]: the chaos run and a WebDriver-driven browser.
//!
//! Everything public is re-exported at the crate root (`system_tests::Stack`, ...).

pub mod browser;
pub mod chaos;
pub mod chaos_brokers;
pub mod http;
pub mod keys;
pub mod process;
pub mod random;
pub mod seed;
pub mod stack;
pub mod topics;
pub mod verdict;

pub use http::*;
pub use keys::*;
pub use process::*;
pub use random::*;
pub use seed::*;
pub use stack::*;
pub use topics::*;
pub use verdict::*;
