//! `vigil-gateway`: the quantum job gateway, its own unprivileged process.
//!
//! A loopback HTTP relay between quantum SDKs and their providers. It holds
//! the provider credentials (nothing else on the host needs them), relays
//! only the operations each provider's allowlist names, applies per-agent
//! policy, and records every call as a `quantum_job` event, which it hands
//! to the collector over the link socket ([`link`]); the collector also
//! tells it which process, and so which agent, each caller is.

pub mod body;
pub mod config;
pub mod iam;
pub mod jobs;
pub mod link;
pub mod metrics;
pub mod policy;
pub mod route;
pub mod server;
pub mod sigv4;
pub mod tee;
pub mod tokens;

pub use config::GatewayConfig;
pub use server::Gateway;
