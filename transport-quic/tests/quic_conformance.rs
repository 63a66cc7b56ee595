//! The conformance suite (shared with transport-tcp) against [`transport_quic::QuicTransport`].

#[path = "../../transport-tcp/tests/conformance/mod.rs"]
mod conformance;
mod quic_harness;

use quic_harness::Quic;

conformance_tests!(Quic);
