//! The conformance suite (`replication_core::carrier::conformance`) against
//! [`transport_tcp::TcpTransport`].

mod tcp_harness;

use tcp_harness::Tcp;

replication_core::conformance_tests!(Tcp);
