//! The conformance suite (`replication_core::carrier::conformance`) against
//! [`transport_quic::QuicTransport`].

mod quic_harness;

use quic_harness::Quic;

replication_core::conformance_tests!(Quic);
