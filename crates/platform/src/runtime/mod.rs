//! Assembly: a service's whole configuration, the runtime that starts its parts and the one
//! `main` of every service; on every folder below.

pub mod config;
pub mod definition;
pub mod service;
