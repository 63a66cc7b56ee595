//! The engine's unit tests: scenarios run on a cluster of engines ([`crate::harness`]), one
//! file per concern of the engine (`model` runs random operation sequences against a model
//! of each session).

#[allow(clippy::unwrap_used)]
mod backup;
#[allow(clippy::unwrap_used)]
mod claims;
#[allow(clippy::unwrap_used)]
mod failover;
#[allow(clippy::unwrap_used)]
mod flow;
#[allow(clippy::unwrap_used)]
mod lapse;
#[allow(clippy::unwrap_used)]
mod lease;
#[allow(clippy::unwrap_used)]
mod leave;
#[allow(clippy::unwrap_used)]
mod managers;
#[allow(clippy::unwrap_used)]
mod membership;
#[allow(clippy::unwrap_used)]
mod model;
#[allow(clippy::unwrap_used)]
mod quarantine;
#[allow(clippy::unwrap_used)]
mod reads;
#[allow(clippy::unwrap_used)]
mod reconfigure;
#[allow(clippy::unwrap_used)]
mod rejoin;
#[allow(clippy::unwrap_used)]
mod scale;
#[allow(clippy::unwrap_used)]
mod topology;
#[allow(clippy::unwrap_used)]
mod writes;
