//! The Hello exchange both sides of a new link run once the carrier's own handshake (TLS) is
//! done, over any stream ([`HelloStream`]), with its checks and refusals, under the handshake
//! timeout.
//!
//! The dialer sends its Hello first and checks the answer: it must come from the node it
//! dialed and pass [`Hello::check`](crate::wire::Hello::check). The acceptor reads the dialer's Hello, checks it (against
//! the identity its certificate proved, when TLS is on), and answers either with its own
//! Hello or with a Refuse frame naming the rule, after which it closes the stream.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::admission::FIRST_BYTES;
use super::{Common, Source, write_frames};
use crate::config::NodeId;
use crate::wire::{Frame, FrameDecoder, FrameEncoder, Hello, WireError, refusal};

/// A stream the Hello exchange runs on (the TLS stream of a TCP link, the first
/// bidirectional stream of a QUIC connection).
pub trait HelloStream: AsyncRead + AsyncWrite + Unpin + Send {
    /// What the dialer calls the stream when the peer closes it during the handshake
    /// ("connection", "stream").
    const NAME: &'static str;

    /// Ends the stream after the acceptor refused the dialer's Hello; `sent` tells whether
    /// the Refuse frame was written.
    fn close_refused(&mut self, sent: bool) -> impl Future<Output = ()> + Send;

    /// The dialer's refusal when reading the acceptor's answer failed.
    fn read_failed(e: std::io::Error) -> DialError {
        DialError::Refused(format!("handshake failed: {e}"))
    }
}

/// Why dialing a peer failed.
#[derive(Debug)]
pub enum DialError {
    /// Could not reach the peer (down, restarting): retry quietly.
    Unreachable(String),
    /// The peer was reached and the link refused, by either side.
    Refused(String),
}

impl DialError {
    /// The acceptor refused our certificate: in TLS 1.3 its verdict arrives after our side
    /// of the TLS handshake is done, on the first read.
    pub fn certificate_refused(why: impl std::fmt::Display) -> DialError {
        DialError::Refused(format!("[{}] the peer refused the TLS handshake: {why}", refusal::CERTIFICATE))
    }
}

/// Who a connection is, for refusals: the node its certificate names, else its address.
pub fn who(authenticated: Option<&NodeId>, addr: SocketAddr) -> String {
    authenticated.map_or_else(|| addr.to_string(), |n| n.to_string())
}

/// The acceptor's Hello exchange on `stream`: reads the dialer's Hello, checks it against
/// `authenticated` (the node its certificate names, `None` without TLS), refuses it or
/// answers with this node's Hello. The dialer's Hello, or (who, why) for the refusal.
pub async fn accept_hello<S: HelloStream>(
    common: &Common,
    stream: &mut S,
    authenticated: Option<&NodeId>,
    who: String,
) -> Result<Hello, (String, String)> {
    let mut dec = FrameDecoder::handshake(common.max_frame);
    let hello = match dec.read_frame::<(), _>(&mut Source(&mut *stream)).await {
        Ok(Ok(Some(Frame::Hello(h)))) => h,
        Ok(Ok(Some(other))) => {
            return Err((who, WireError::Unexpected { expected: "hello", got: other.kind() }.reason()));
        }
        Ok(Ok(None)) => return Err((who, "closed before its hello".into())),
        Ok(Err(e)) => return Err((who, e.reason())),
        Err(e) => return Err((who, e.to_string())),
    };
    let mut enc = FrameEncoder::new(common.max_frame);
    if let Err(r) = hello.check(&common.cfg.load(), &common.local, authenticated) {
        let reason = r.to_string();
        let sent = enc.refuse(&reason).is_ok();
        if sent {
            let _ = write_frames(stream, enc.finish()).await;
        }
        stream.close_refused(sent).await;
        return Err((hello.node.to_string(), reason));
    }
    enc.hello(&common.hello).map_err(|e| (who.clone(), e.to_string()))?;
    write_frames(stream, enc.finish()).await.map_err(|e| (who, e.to_string()))?;
    Ok(hello)
}

/// The dialer's Hello exchange on `stream`, to `peer` dialed at `address`: sends this node's
/// Hello, then checks the answer: the peer's Hello.
pub async fn dial_hello<S: HelloStream>(
    common: &Common,
    stream: &mut S,
    peer: &NodeId,
    address: &str,
) -> Result<Hello, DialError> {
    let mut enc = FrameEncoder::new(common.max_frame);
    enc.hello(&common.hello).map_err(|e| DialError::Refused(e.to_string()))?;
    write_frames(stream, enc.finish())
        .await
        .map_err(|e| DialError::Refused(format!("handshake failed: {e}")))?;
    let mut dec = FrameDecoder::handshake(common.max_frame);
    match dec.read_frame::<(), _>(&mut Source(&mut *stream)).await {
        Ok(Ok(Some(Frame::Hello(h)))) => {
            if &h.node != peer {
                return Err(DialError::Refused(format!(
                    "[{}] dialed `{peer}` at {address}, but `{}` answered",
                    refusal::UNEXPECTED_PEER,
                    h.node
                )));
            }
            let auth = common.secure.then_some(peer);
            h.check(&common.cfg.load(), &common.local, auth)
                .map_err(|r| DialError::Refused(r.to_string()))?;
            Ok(h)
        }
        Ok(Ok(Some(Frame::Refuse(reason)))) => {
            Err(DialError::Refused(format!("refused by the peer: {reason}")))
        }
        Ok(Ok(Some(other))) => {
            Err(DialError::Refused(WireError::Unexpected { expected: "hello", got: other.kind() }.reason()))
        }
        Ok(Ok(None)) => {
            Err(DialError::Refused(format!("the peer closed the {} during the handshake", S::NAME)))
        }
        Ok(Err(e)) => Err(DialError::Refused(format!("handshake failed: {}", e.reason()))),
        Err(e) => Err(S::read_failed(e)),
    }
}

/// When an accepted connection's handshake must have started (its first bytes) and ended.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// The first bytes (a TLS ClientHello) or the QUIC handshake: [`FIRST_BYTES`] from now in
    /// a shared slot, the end in a configured peer's reserved slot.
    pub start: tokio::time::Instant,
    /// The whole handshake: the handshake timeout from now.
    pub end: tokio::time::Instant,
    /// How long from now `start` is.
    within: Duration,
}

impl Deadlines {
    /// The deadlines of a handshake starting now, in a reserved slot or not.
    pub fn new(common: &Common, reserved: bool) -> Self {
        let now = tokio::time::Instant::now();
        let end = now + common.handshake_timeout;
        let within =
            if reserved { common.handshake_timeout } else { FIRST_BYTES.min(common.handshake_timeout) };
        Deadlines { start: now + within, end, within }
    }

    /// `work` (the start of a handshake), cut at the start deadline: then a refusal of `addr`
    /// naming the handshake timeout.
    pub async fn started<T>(
        &self,
        addr: SocketAddr,
        work: impl Future<Output = Result<T, (String, String)>>,
    ) -> Result<T, (String, String)> {
        match tokio::time::timeout_at(self.start, work).await {
            Ok(r) => r,
            Err(_) => Err((
                addr.to_string(),
                format!(
                    "[{}] the handshake did not start within {:?}",
                    refusal::HANDSHAKE_TIMEOUT,
                    self.within
                ),
            )),
        }
    }
}

/// The acceptor's side of a handshake (`work`), cut at `deadline`: then a refusal of `addr`
/// naming the handshake timeout.
pub async fn accept_within<T>(
    common: &Common,
    deadline: tokio::time::Instant,
    addr: SocketAddr,
    work: impl Future<Output = Result<T, (String, String)>>,
) -> Result<T, (String, String)> {
    match tokio::time::timeout_at(deadline, work).await {
        Ok(r) => r,
        Err(_) => Err((
            addr.to_string(),
            format!("[{}] no handshake within {:?}", refusal::HANDSHAKE_TIMEOUT, common.handshake_timeout),
        )),
    }
}

/// The dialer's side of a handshake (`work`), cut at the handshake timeout: then the peer
/// counts as unreachable.
pub async fn dial_within<T>(
    timeout: Duration,
    work: impl Future<Output = Result<T, DialError>>,
) -> Result<T, DialError> {
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(DialError::Unreachable(format!("no handshake within {timeout:?}"))),
    }
}
