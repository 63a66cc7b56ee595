//! The shared codec: frames, batches and the handshake, without any I/O.
//!
//! Both transports (`transport-tcp`, `transport-quic`) speak the same byte format on each
//! stream:
//!
//! ```text
//! frame   = length:u32 (big endian) payload          ; length = payload bytes, <= max frame
//! payload = kind:u8 body
//! kind 1  = Hello   body = one MessagePack map (rmp-serde, named fields)
//! kind 2  = Refuse  body = one MessagePack string: why the peer was refused, naming the rule
//! kind 3  = Batch   body = zero or more MessagePack values (rmp-serde, compact), one per message
//! ```
//!
//! The first exchange on every connection is a [`Hello`] each way: the dialer sends its
//! Hello, the acceptor checks it with [`Hello::check`] and answers with its own Hello, or
//! with a Refuse frame and closes. After that only Batch frames flow. Several queued messages
//! are written as one Batch frame (see [`FrameEncoder`]), so one write carries them all.
//!
//! Everything here is total: arbitrary input yields a [`WireError`], never a panic. A frame
//! over the limit, garbage, a truncated frame or a refused Hello is an error for that
//! connection only.
//!
//! Both transports read their streams through [`FrameDecoder`]: it hands out room to read
//! into, enforces the frame limit (and the smaller [`MAX_HANDSHAKE_FRAME`] during the
//! handshake) as soon as a header arrives, and [`FrameDecoder::read_frame`] is the one read
//! loop, over any stream implementing [`ByteSource`]. No I/O and no runtime here.
//!
//! ```
//! use replication_core::wire::{Frame, FrameDecoder, FrameEncoder, DEFAULT_MAX_FRAME};
//! use replication_core::Message;
//!
//! let mut enc = FrameEncoder::new(DEFAULT_MAX_FRAME);
//! enc.push(&Message::Heartbeat { incarnation: 1 }).expect("small");
//! enc.push(&Message::Heartbeat { incarnation: 2 }).expect("small");
//! let bytes = enc.finish().to_vec(); // one frame holding both messages
//!
//! let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
//! dec.extend(&bytes);
//! match dec.next_frame::<Message>() {
//!     Ok(Some(Frame::Batch(msgs))) => assert_eq!(msgs.len(), 2),
//!     other => panic!("{other:?}"),
//! }
//! ```

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::{DomainConfig, Mode, NodeId, Topology};
use crate::validate::rule;

/// The default largest frame payload: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// The smallest frame limit a transport accepts (a Hello must fit).
pub const MIN_MAX_FRAME: usize = 1024;

/// The largest Hello or Refuse frame read during the handshake, whatever the frame limit: an
/// unauthenticated peer cannot make a node buffer more than this.
pub const MAX_HANDSHAKE_FRAME: usize = 64 * 1024;

/// The longest domain or node name a Hello may carry (names are DNS labels).
pub const MAX_NAME: usize = 63;

/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;

const KIND_HELLO: u8 = 1;
const KIND_REFUSE: u8 = 2;
const KIND_BATCH: u8 = 3;

/// The first frame on every connection, each way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The sender's protocol version ([`crate::PROTOCOL_VERSION`]).
    pub protocol_version: u32,
    /// The sender's domain name.
    pub domain: String,
    /// The sender; must equal the identity its certificate names.
    pub node: NodeId,
    /// The sender's mode; must be the mode the domain file gives it.
    pub mode: Mode,
}

/// Stable codes of the handshake rules, used in [`Refusal::rule`] (besides the topology rules
/// [`rule::P2P_REQUIRES_BOTH`] and [`rule::CS_FORBIDS_BOTH`] of [`crate::validate`]).
pub mod refusal {
    /// The peer speaks another protocol version.
    pub const PROTOCOL_VERSION: &str = "protocol-version";
    /// The peer belongs to another domain.
    pub const OTHER_DOMAIN: &str = "other-domain";
    /// The peer names a node the domain file does not list.
    pub const UNKNOWN_NODE: &str = "unknown-node";
    /// The node named in the Hello is not the node the certificate names.
    pub const IDENTITY_MISMATCH: &str = "identity-mismatch";
    /// The peer claims to be this very node.
    pub const SELF_CONNECTION: &str = "self-connection";
    /// The peer's mode differs from the mode the domain file gives it.
    pub const MODE_DIFFERS: &str = "mode-differs-from-config";
    /// The dialed address answered as another node than the one dialed.
    pub const UNEXPECTED_PEER: &str = "unexpected-peer";
    /// The certificate does not chain to the domain CA or names no node of the domain.
    pub const CERTIFICATE: &str = "certificate";
    /// The peer broke the framing rules (oversize frame, garbage, truncated frame).
    pub const FRAMING: &str = "framing";
    /// The peer did not complete the handshake in time.
    pub const HANDSHAKE_TIMEOUT: &str = "handshake-timeout";
    /// Too many connections are waiting for their handshake.
    pub const TOO_MANY_UNAUTHENTICATED: &str = "too-many-unauthenticated";
}

/// Why a Hello was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("[{rule}] {reason}")]
pub struct Refusal {
    /// The rule broken: one of [`refusal`], or a topology rule code of [`rule`].
    pub rule: &'static str,
    /// A sentence a person understands.
    pub reason: String,
}

impl Refusal {
    fn new(rule: &'static str, reason: String) -> Self {
        Refusal { rule, reason }
    }
}

impl Hello {
    /// The Hello `node` sends in `cfg`; `None` when the domain file does not list `node`.
    pub fn for_node(cfg: &DomainConfig, node: &NodeId) -> Option<Hello> {
        let n = cfg.node(node)?;
        Some(Hello {
            protocol_version: crate::PROTOCOL_VERSION,
            domain: cfg.domain.name.clone(),
            node: node.clone(),
            mode: n.mode(),
        })
    }

    /// Checks a peer's Hello against the local domain file. `local` is this node;
    /// `authenticated` is the node the peer's certificate names (`None` only for insecure
    /// links, where the Hello is taken at its word). Refusals name the peer by its
    /// certificate's identity where it has one: the Hello's names are the peer's claim.
    pub fn check(
        &self,
        cfg: &DomainConfig,
        local: &NodeId,
        authenticated: Option<&NodeId>,
    ) -> Result<(), Refusal> {
        let who = match authenticated {
            Some(id) => format!("`{id}` (by its certificate)"),
            None => format!("`{}`", self.node),
        };
        if let Some(id) = authenticated
            && id != &self.node
        {
            return Err(Refusal::new(
                refusal::IDENTITY_MISMATCH,
                format!("the certificate names node `{id}` but the hello names `{}`", self.node),
            ));
        }
        if self.protocol_version != crate::PROTOCOL_VERSION {
            return Err(Refusal::new(
                refusal::PROTOCOL_VERSION,
                format!(
                    "{who} speaks protocol version {}, this node speaks {}",
                    self.protocol_version,
                    crate::PROTOCOL_VERSION
                ),
            ));
        }
        if self.domain != cfg.domain.name {
            return Err(Refusal::new(
                refusal::OTHER_DOMAIN,
                format!(
                    "{who} belongs to domain `{}`, this node to domain `{}`",
                    self.domain, cfg.domain.name
                ),
            ));
        }
        let Some(node) = cfg.node(&self.node) else {
            return Err(Refusal::new(
                refusal::UNKNOWN_NODE,
                format!("{who} is not a node of domain `{}`", cfg.domain.name),
            ));
        };
        if &self.node == local {
            return Err(Refusal::new(
                refusal::SELF_CONNECTION,
                format!("the peer claims to be this node (`{local}`)"),
            ));
        }
        match cfg.topology() {
            Topology::PeerToPeer if self.mode != Mode::Both => {
                return Err(Refusal::new(
                    rule::P2P_REQUIRES_BOTH,
                    format!(
                        "{} announces mode `{}`, but domain `{}` is peer-to-peer: every node must be `both`",
                        self.node, self.mode, cfg.domain.name
                    ),
                ));
            }
            Topology::ClientServer if self.mode == Mode::Both => {
                return Err(Refusal::new(
                    rule::CS_FORBIDS_BOTH,
                    format!(
                        "{} announces mode `both`, but domain `{}` is client-server: nodes must be `client` or `server`",
                        self.node, cfg.domain.name
                    ),
                ));
            }
            _ => {}
        }
        if self.mode != node.mode() {
            return Err(Refusal::new(
                refusal::MODE_DIFFERS,
                format!(
                    "{} announces mode `{}`, the domain file gives it `{}`",
                    self.node,
                    self.mode,
                    node.mode()
                ),
            ));
        }
        Ok(())
    }
}

/// One decoded frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame<M> {
    /// The handshake frame.
    Hello(Hello),
    /// The peer refused this connection; the text names the rule.
    Refuse(String),
    /// Messages, in the order sent.
    Batch(Vec<M>),
}

impl<M> Frame<M> {
    /// The frame's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "hello",
            Frame::Refuse(_) => "refuse",
            Frame::Batch(_) => "batch",
        }
    }
}

/// A framing or encoding error. Fatal for the connection it happened on, for nothing else.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A frame (or a single message) is larger than the limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The frame's payload length (or the message's encoded size).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A frame of length zero (it has no kind byte).
    #[error("empty frame")]
    Empty,
    /// The kind byte is none of Hello, Refuse, Batch.
    #[error("unknown frame kind {0:#04x} (garbage, or a peer speaking another protocol)")]
    UnknownKind(u8),
    /// The frame's body does not decode.
    #[error("malformed {kind} frame: {message}")]
    Malformed {
        /// The frame kind.
        kind: &'static str,
        /// The decoder's complaint.
        message: String,
    },
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({buffered} bytes of it received)")]
    Truncated {
        /// Bytes of the incomplete frame received.
        buffered: usize,
    },
    /// A valid frame arrived where another kind was required (e.g. data before the Hello).
    #[error("expected a {expected} frame, got a {got} frame")]
    Unexpected {
        /// The kind required.
        expected: &'static str,
        /// The kind received.
        got: &'static str,
    },
    /// A message or Hello could not be encoded.
    #[error("cannot encode: {0}")]
    Encode(String),
}

impl WireError {
    /// The error as a refusal reason, naming the rule ([`refusal::FRAMING`]).
    pub fn reason(&self) -> String {
        format!("[{}] {self}", refusal::FRAMING)
    }
}

/// Checks a frame header: the payload length it announces, or [`WireError::TooLarge`] /
/// [`WireError::Empty`]. For readers that read the 4-byte prefix and then the payload.
pub fn frame_len(header: [u8; LEN_PREFIX], max_frame: usize) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 {
        Err(WireError::Empty)
    } else if len > max_frame {
        Err(WireError::TooLarge { len, max: max_frame })
    } else {
        Ok(len)
    }
}

/// Decodes one frame payload (the bytes after the length prefix).
pub fn decode_payload<M: DeserializeOwned>(payload: &[u8]) -> Result<Frame<M>, WireError> {
    let (&kind, body) = payload.split_first().ok_or(WireError::Empty)?;
    match kind {
        KIND_HELLO => {
            let hello: Hello = rmp_serde::from_slice(body)
                .map_err(|e| WireError::Malformed { kind: "hello", message: e.to_string() })?;
            // Names are DNS labels (`validate::is_label`): a longer one is refused here, before
            // anything logs or keeps it.
            for (what, name) in [("domain", hello.domain.as_str()), ("node", hello.node.as_str())] {
                if name.len() > MAX_NAME {
                    return Err(WireError::Malformed {
                        kind: "hello",
                        message: format!(
                            "its {what} name has {} bytes; names have at most {MAX_NAME}",
                            name.len()
                        ),
                    });
                }
            }
            Ok(Frame::Hello(hello))
        }
        KIND_REFUSE => {
            let reason: String = rmp_serde::from_slice(body)
                .map_err(|e| WireError::Malformed { kind: "refuse", message: e.to_string() })?;
            Ok(Frame::Refuse(reason))
        }
        KIND_BATCH => {
            let malformed =
                |e: rmp_serde::decode::Error| WireError::Malformed { kind: "batch", message: e.to_string() };
            let mut msgs = Vec::new();
            let mut rest = body;
            while !rest.is_empty() {
                // Each message from its own bytes, borrowed: byte strings and names are read
                // in place, where a reader-based deserializer first copies each into a scratch
                // buffer (grown anew for every frame: two allocations of a 1 KiB value's size).
                let Some((one, after)) = value_len(rest).and_then(|n| rest.split_at_checked(n)) else {
                    // Malformed: the reader-based deserializer says how.
                    let mut de = rmp_serde::Deserializer::new(rest);
                    return Err(M::deserialize(&mut de).err().map_or_else(
                        || WireError::Malformed { kind: "batch", message: "malformed message".into() },
                        malformed,
                    ));
                };
                msgs.push(rmp_serde::from_slice(one).map_err(malformed)?);
                rest = after;
            }
            Ok(Frame::Batch(msgs))
        }
        other => Err(WireError::UnknownKind(other)),
    }
}

/// The length in bytes of the MessagePack value at the start of `buf`, without decoding it;
/// `None` when `buf` does not hold a whole, well-formed value. Total: every length is checked
/// against what is left, so a hostile header cannot make it loop or overflow.
fn value_len(buf: &[u8]) -> Option<usize> {
    let be = |at: usize, n: usize| -> Option<usize> {
        let bytes = buf.get(at..at.checked_add(n)?)?;
        Some(bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b)))
    };
    let mut pos = 0usize;
    // Values still to walk over; each takes at least one byte, so more than are left is an error.
    let mut pending = 1usize;
    while pending > 0 {
        pending -= 1;
        let marker = *buf.get(pos)?;
        // (header bytes, payload bytes, values inside)
        let (head, body, inner) = match marker {
            0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => (1, 0, 0),
            0x80..=0x8f => (1, 0, 2 * usize::from(marker & 0x0f)),
            0x90..=0x9f => (1, 0, usize::from(marker & 0x0f)),
            0xa0..=0xbf => (1, usize::from(marker & 0x1f), 0),
            0xc4 | 0xd9 => (2, be(pos + 1, 1)?, 0),
            0xc5 | 0xda => (3, be(pos + 1, 2)?, 0),
            0xc6 | 0xdb => (5, be(pos + 1, 4)?, 0),
            0xc7 => (3, be(pos + 1, 1)?, 0),
            0xc8 => (4, be(pos + 1, 2)?, 0),
            0xc9 => (6, be(pos + 1, 4)?, 0),
            0xca => (5, 0, 0),
            0xcb => (9, 0, 0),
            0xcc | 0xd0 => (2, 0, 0),
            0xcd | 0xd1 => (3, 0, 0),
            0xce | 0xd2 => (5, 0, 0),
            0xcf | 0xd3 => (9, 0, 0),
            0xd4 => (3, 0, 0),
            0xd5 => (4, 0, 0),
            0xd6 => (6, 0, 0),
            0xd7 => (10, 0, 0),
            0xd8 => (18, 0, 0),
            0xdc => (3, 0, be(pos + 1, 2)?),
            0xdd => (5, 0, be(pos + 1, 4)?),
            0xde => (3, 0, 2 * be(pos + 1, 2)?),
            0xdf => (5, 0, be(pos + 1, 4)?.checked_mul(2)?),
            0xc1 => return None,
        };
        pos = pos.checked_add(head)?.checked_add(body)?;
        pending = pending.checked_add(inner)?;
        if pos > buf.len() || pending > buf.len() - pos {
            return None;
        }
    }
    Some(pos)
}

/// A byte stream a [`FrameDecoder`] reads from ([`FrameDecoder::read_frame`]). Each transport
/// implements it for its stream (TLS over TCP, a QUIC receive stream), so the read loop is
/// written once, here, without depending on any runtime.
pub trait ByteSource {
    /// The stream's error.
    type Error;
    /// Reads into `buf` like [`std::io::Read::read`]: how many bytes were read, 0 at the end
    /// of the stream.
    fn read_into(&mut self, buf: &mut [u8]) -> impl Future<Output = Result<usize, Self::Error>> + Send;
}

/// Room a stream reader offers the decoder per read ([`FrameDecoder::read_buf`]).
pub const READ_CHUNK: usize = 64 * 1024;

/// A decoder holding more than this many bytes of room while empty gives them back.
const SHRINK_ABOVE: usize = 1024 * 1024;

/// Incremental decoder for a byte stream, without I/O: feed bytes, take frames.
///
/// Feed it either by copying ([`FrameDecoder::extend`]) or by reading straight into it: a
/// reader asks for room with [`FrameDecoder::read_buf`], reads into it and reports how much it
/// got with [`FrameDecoder::filled`]; [`FrameDecoder::read_frame`] is that loop for any
/// [`ByteSource`]. Take frames with [`FrameDecoder::next_frame`].
///
/// Limits: a frame over the limit is reported as soon as its 4-byte header arrives, before
/// any room for its body is allocated; the buffer grows only with bytes actually received (a
/// header alone allocates nothing), by at most [`READ_CHUNK`] per read, and holds at most
/// about two frames. A decoder made with [`FrameDecoder::handshake`] caps frames at
/// [`MAX_HANDSHAKE_FRAME`] and never reads past the frame it is decoding, so the bytes after
/// the handshake frame stay in the stream for the link's own decoder.
#[derive(Debug)]
pub struct FrameDecoder {
    /// Received bytes are `buf[start..end]`; `buf[end..]` is room for the next read.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_frame: usize,
    /// Handshake mode: offer room only for the rest of the current frame.
    exact: bool,
}

impl FrameDecoder {
    /// A decoder refusing frames larger than `max_frame`.
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder { buf: Vec::new(), start: 0, end: 0, max_frame, exact: false }
    }

    /// A decoder for the handshake of a new connection: frames of at most `max_frame` and
    /// [`MAX_HANDSHAKE_FRAME`] bytes, read one at a time without reading past the frame.
    pub fn handshake(max_frame: usize) -> Self {
        FrameDecoder { exact: true, ..FrameDecoder::new(max_frame.min(MAX_HANDSHAKE_FRAME)) }
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        let end = self.end + bytes.len();
        self.buf[self.end..end].copy_from_slice(bytes);
        self.end = end;
    }

    /// Room to read into (at most [`READ_CHUNK`] bytes; in handshake mode exactly the bytes
    /// the current frame still lacks); report what was read with [`FrameDecoder::filled`].
    pub fn read_buf(&mut self) -> &mut [u8] {
        let want = if self.exact { self.missing() } else { READ_CHUNK };
        self.reserve(want);
        &mut self.buf[self.end..self.end + want]
    }

    /// Records that the last read put `n` bytes at the start of [`FrameDecoder::read_buf`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Bytes received but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame<M: DeserializeOwned>(&mut self) -> Result<Option<Frame<M>>, WireError> {
        let rest = self.buf.get(self.start..self.end).unwrap_or_default();
        let Some((header, after)) = rest.split_first_chunk::<LEN_PREFIX>() else {
            return Ok(None);
        };
        let len = frame_len(*header, self.max_frame)?;
        let Some(payload) = after.get(..len) else {
            return Ok(None);
        };
        let frame = decode_payload(payload)?;
        self.start += LEN_PREFIX + len;
        Ok(Some(frame))
    }

    /// Appends to `msgs` the messages of the complete Batch frames already buffered, one after
    /// another, until `msgs` holds at least `max` messages or the next buffered frame is
    /// incomplete, not a Batch frame, or invalid: that one stays buffered, for the next
    /// [`FrameDecoder::next_frame`] or [`FrameDecoder::read_frame`] to return or report. No
    /// I/O: a reader calls it after [`FrameDecoder::read_frame`] returned a batch, to hand
    /// everything one read brought as one event.
    pub fn take_buffered_batches<M: DeserializeOwned>(&mut self, msgs: &mut Vec<M>, max: usize) {
        while msgs.len() < max {
            let rest = self.buf.get(self.start..self.end).unwrap_or_default();
            let Some((header, after)) = rest.split_first_chunk::<LEN_PREFIX>() else { return };
            let Ok(len) = frame_len(*header, self.max_frame) else { return };
            let Some(payload) = after.get(..len) else { return };
            if payload.first() != Some(&KIND_BATCH) {
                return;
            }
            match decode_payload::<M>(payload) {
                Ok(Frame::Batch(more)) => {
                    msgs.extend(more);
                    self.start += LEN_PREFIX + len;
                }
                _ => return,
            }
        }
    }

    /// Call when the stream ends: an error if a partial frame is buffered.
    pub fn finish(&self) -> Result<(), WireError> {
        match self.buffered() {
            0 => Ok(()),
            buffered => Err(WireError::Truncated { buffered }),
        }
    }

    /// Reads from `src` until a whole frame is buffered, and decodes it.
    ///
    /// The outer error is the stream's; the inner result is the decoder's: the frame,
    /// `Ok(None)` when the stream ended cleanly between frames, or a [`WireError`] (including
    /// [`WireError::Truncated`] for a stream that ended inside a frame).
    pub async fn read_frame<M: DeserializeOwned, S: ByteSource>(
        &mut self,
        src: &mut S,
    ) -> Result<Result<Option<Frame<M>>, WireError>, S::Error> {
        loop {
            match self.next_frame() {
                Ok(None) => {}
                decoded => return Ok(decoded),
            }
            match src.read_into(self.read_buf()).await? {
                0 => return Ok(self.finish().map(|()| None)),
                n => self.filled(n),
            }
        }
    }

    /// Bytes the current frame still lacks (its header, then its payload); at least 1.
    fn missing(&self) -> usize {
        let rest = self.buf.get(self.start..self.end).unwrap_or_default();
        let need = match rest.split_first_chunk::<LEN_PREFIX>() {
            None => LEN_PREFIX,
            Some((header, _)) => LEN_PREFIX + (u32::from_be_bytes(*header) as usize).min(self.max_frame),
        };
        need.saturating_sub(rest.len()).max(1)
    }

    /// Makes room for `n` bytes after the received ones: moves those to the front when that
    /// copies no more than has been consumed, grows the buffer otherwise.
    fn reserve(&mut self, n: usize) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > SHRINK_ABOVE {
                self.buf = Vec::new();
            }
        }
        if self.buf.len() - self.end >= n {
            return;
        }
        if self.start > 0 && self.start >= self.end - self.start {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < n {
            self.buf.resize(self.end + n, 0);
        }
    }
}

/// Builds the bytes of one write: frames appended to one buffer. Consecutive messages pushed
/// with [`FrameEncoder::push`] share a Batch frame until the frame would exceed the limit,
/// then a new frame starts. Reuse it with [`FrameEncoder::clear`] to keep its allocation.
#[derive(Debug)]
pub struct FrameEncoder {
    buf: Vec<u8>,
    /// Where the open Batch frame starts (its length prefix), if one is open.
    open: Option<usize>,
    max_frame: usize,
}

impl FrameEncoder {
    /// An encoder producing frames of at most `max_frame` payload bytes.
    pub fn new(max_frame: usize) -> Self {
        FrameEncoder { buf: Vec::new(), open: None, max_frame }
    }

    /// The frame limit.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Appends a Hello frame.
    pub fn hello(&mut self, hello: &Hello) -> Result<(), WireError> {
        self.close();
        let start = self.begin(KIND_HELLO);
        if let Err(e) = rmp_serde::encode::write_named(&mut self.buf, hello) {
            self.buf.truncate(start);
            return Err(WireError::Encode(e.to_string()));
        }
        self.end(start)
    }

    /// Appends a Refuse frame (the reason is cut to fit the limit).
    pub fn refuse(&mut self, reason: &str) -> Result<(), WireError> {
        self.close();
        let mut reason = reason;
        let cap = self.max_frame.saturating_sub(16);
        if reason.len() > cap {
            let mut end = cap;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason = &reason[..end];
        }
        let start = self.begin(KIND_REFUSE);
        if let Err(e) = rmp_serde::encode::write(&mut self.buf, reason) {
            self.buf.truncate(start);
            return Err(WireError::Encode(e.to_string()));
        }
        self.end(start)
    }

    /// Appends a message to the open Batch frame (opening one if needed). A message that
    /// alone exceeds the limit is not added: [`WireError::TooLarge`] with its size.
    pub fn push<M: Serialize>(&mut self, msg: &M) -> Result<(), WireError> {
        let start = match self.open {
            Some(s) => s,
            None => {
                let s = self.begin(KIND_BATCH);
                self.open = Some(s);
                s
            }
        };
        let pos = self.buf.len();
        if let Err(e) = rmp_serde::encode::write(&mut self.buf, msg) {
            self.buf.truncate(pos);
            self.drop_empty_open();
            return Err(WireError::Encode(e.to_string()));
        }
        let msg_len = self.buf.len() - pos;
        let payload = self.buf.len() - start - LEN_PREFIX;
        if payload <= self.max_frame {
            return Ok(());
        }
        // Too big for this frame: alone, or together with what the frame already holds?
        if msg_len + 1 > self.max_frame {
            self.buf.truncate(pos);
            self.drop_empty_open();
            return Err(WireError::TooLarge { len: msg_len + 1, max: self.max_frame });
        }
        let bytes = self.buf.split_off(pos);
        self.close();
        let s = self.begin(KIND_BATCH);
        self.open = Some(s);
        self.buf.extend_from_slice(&bytes);
        Ok(())
    }

    /// Whether nothing has been encoded since the last clear.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Bytes encoded so far (including an open frame).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Closes the open frame and returns every byte encoded since the last clear.
    pub fn finish(&mut self) -> &[u8] {
        self.close();
        &self.buf
    }

    /// Forgets the encoded bytes, keeping the allocation.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.open = None;
    }

    fn begin(&mut self, kind: u8) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; LEN_PREFIX]);
        self.buf.push(kind);
        start
    }

    /// Writes the length of the frame starting at `start`; removes it if it is too large.
    fn end(&mut self, start: usize) -> Result<(), WireError> {
        let len = self.buf.len() - start - LEN_PREFIX;
        if len > self.max_frame {
            self.buf.truncate(start);
            return Err(WireError::TooLarge { len, max: self.max_frame });
        }
        let prefix = u32::try_from(len).map_err(|_| WireError::TooLarge { len, max: self.max_frame })?;
        self.buf[start..start + LEN_PREFIX].copy_from_slice(&prefix.to_be_bytes());
        Ok(())
    }

    fn close(&mut self) {
        if let Some(start) = self.open.take() {
            // The open frame never exceeds the limit (push keeps it so), so this cannot fail.
            let _ = self.end(start);
        }
    }

    fn drop_empty_open(&mut self) {
        if let Some(start) = self.open
            && self.buf.len() == start + LEN_PREFIX + 1
        {
            self.buf.truncate(start);
            self.open = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::WireMessage;
    use proptest::prelude::*;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct T {
        key: Option<u64>,
        body: String,
    }

    impl WireMessage for T {
        fn ordering_key(&self) -> Option<u64> {
            self.key
        }
    }

    fn cfg(text: &str) -> DomainConfig {
        DomainConfig::parse(text, "t").expect("valid")
    }

    fn p2p() -> DomainConfig {
        cfg("[domain]\nname='web'\n[[node]]\nname='a'\naddress='127.0.0.1:1'\n\
             [[node]]\nname='b'\naddress='127.0.0.1:2'\n")
    }

    fn cs() -> DomainConfig {
        cfg("[domain]\nname='web'\ntopology='client-server'\n\
             [[node]]\nname='c'\naddress='127.0.0.1:1'\nmode='client'\n\
             [[node]]\nname='s'\naddress='127.0.0.1:2'\nmode='server'\n")
    }

    fn decode_all(bytes: &[u8], max: usize) -> Result<Vec<Frame<T>>, WireError> {
        let mut d = FrameDecoder::new(max);
        d.extend(bytes);
        let mut out = Vec::new();
        while let Some(f) = d.next_frame()? {
            out.push(f);
        }
        d.finish()?;
        Ok(out)
    }

    #[test]
    fn hello_round_trip_and_accept() {
        let c = p2p();
        let h = Hello::for_node(&c, &NodeId::new("a")).expect("listed");
        let mut e = FrameEncoder::new(DEFAULT_MAX_FRAME);
        e.hello(&h).expect("fits");
        let frames = decode_all(e.finish(), DEFAULT_MAX_FRAME).expect("decodes");
        assert_eq!(frames, vec![Frame::Hello(h.clone())]);
        h.check(&c, &NodeId::new("b"), Some(&NodeId::new("a"))).expect("accepted");
        h.check(&c, &NodeId::new("b"), None).expect("accepted insecure");
        assert!(Hello::for_node(&c, &NodeId::new("zz")).is_none());
        // A name longer than a DNS label is refused by the decoder, and the error does not
        // carry it (nothing logs or keeps it).
        for long in [
            Hello { node: NodeId::new(&"n".repeat(60_000)), ..h.clone() },
            Hello { domain: "d".repeat(64), ..h.clone() },
        ] {
            let mut e = FrameEncoder::new(DEFAULT_MAX_FRAME);
            e.hello(&long).expect("fits");
            let err = decode_all(e.finish(), DEFAULT_MAX_FRAME).expect_err("too long");
            assert!(matches!(err, WireError::Malformed { kind: "hello", .. }), "{err}");
            assert!(err.to_string().len() < 100, "{err}");
        }
    }

    #[test]
    fn hello_refusals_name_their_rule() {
        let c = p2p();
        let b = NodeId::new("b");
        let good = Hello::for_node(&c, &NodeId::new("a")).expect("listed");
        let case = |h: Hello, auth: Option<&str>| {
            let auth = auth.map(NodeId::new);
            h.check(&c, &b, auth.as_ref()).expect_err("refused").rule
        };
        let v = Hello { protocol_version: crate::PROTOCOL_VERSION + 1, ..good.clone() };
        assert_eq!(case(v, None), refusal::PROTOCOL_VERSION);
        assert_eq!(case(Hello { domain: "shop".into(), ..good.clone() }, None), refusal::OTHER_DOMAIN);
        assert_eq!(case(Hello { node: NodeId::new("x"), ..good.clone() }, None), refusal::UNKNOWN_NODE);
        assert_eq!(case(good.clone(), Some("b")), refusal::IDENTITY_MISMATCH);
        assert_eq!(case(Hello { node: b.clone(), ..good.clone() }, None), refusal::SELF_CONNECTION);
        assert_eq!(case(Hello { mode: Mode::Client, ..good.clone() }, None), rule::P2P_REQUIRES_BOTH);

        let c2 = cs();
        let h = Hello::for_node(&c2, &NodeId::new("c")).expect("listed");
        let s = NodeId::new("s");
        h.check(&c2, &s, None).expect("accepted");
        let r = Hello { mode: Mode::Both, ..h.clone() }.check(&c2, &s, None).expect_err("both");
        assert_eq!(r.rule, rule::CS_FORBIDS_BOTH);
        let r = Hello { mode: Mode::Server, ..h }.check(&c2, &s, None).expect_err("differs");
        assert_eq!(r.rule, refusal::MODE_DIFFERS);
        assert!(r.to_string().contains("mode-differs-from-config"), "{r}");
    }

    #[test]
    fn batches_share_a_frame_and_split_at_the_limit() {
        let msgs: Vec<T> = (0..10).map(|i| T { key: Some(i), body: "x".repeat(100) }).collect();
        let mut e = FrameEncoder::new(DEFAULT_MAX_FRAME);
        for m in &msgs {
            e.push(m).expect("fits");
        }
        let frames = decode_all(e.finish(), DEFAULT_MAX_FRAME).expect("decodes");
        assert_eq!(frames, vec![Frame::Batch(msgs.clone())]);

        // A 350-byte limit holds 3 of these ~105-byte messages per frame.
        let mut e = FrameEncoder::new(350);
        for m in &msgs {
            e.push(m).expect("fits");
        }
        let frames = decode_all(e.finish(), 350).expect("decodes");
        assert!(frames.len() > 1);
        let flat: Vec<T> = frames
            .into_iter()
            .flat_map(|f| match f {
                Frame::Batch(v) => v,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(flat, msgs);
    }

    #[test]
    fn a_message_over_the_limit_is_refused_alone() {
        let mut e = FrameEncoder::new(1000);
        e.push(&T { key: None, body: "a".into() }).expect("fits");
        let err = e.push(&T { key: None, body: "x".repeat(2000) }).expect_err("too big");
        assert!(matches!(err, WireError::TooLarge { max: 1000, .. }), "{err}");
        e.push(&T { key: None, body: "b".into() }).expect("fits");
        let frames = decode_all(e.finish(), 1000).expect("decodes");
        assert_eq!(frames.len(), 1);

        let mut e = FrameEncoder::new(1000);
        assert!(e.push(&T { key: None, body: "x".repeat(2000) }).is_err());
        assert!(e.finish().is_empty());
    }

    #[test]
    fn exactly_at_the_limit_passes() {
        let m = T { key: None, body: "x".repeat(990) };
        let size = rmp_serde::to_vec(&m).expect("enc").len() + 1;
        let mut e = FrameEncoder::new(size);
        e.push(&m).expect("fits exactly");
        assert_eq!(decode_all(e.finish(), size).expect("ok"), vec![Frame::Batch(vec![m.clone()])]);
        let mut e = FrameEncoder::new(size - 1);
        assert!(e.push(&m).is_err());
    }

    #[test]
    fn oversize_header_is_refused_before_the_body() {
        let mut d = FrameDecoder::new(1024);
        d.extend(&(2048u32).to_be_bytes());
        assert_eq!(d.next_frame::<T>(), Err(WireError::TooLarge { len: 2048, max: 1024 }));
    }

    #[test]
    fn garbage_truncation_and_unknown_kinds_are_errors() {
        assert!(matches!(decode_all(&[0, 0, 0, 1, 9], 1024), Err(WireError::UnknownKind(9))));
        assert!(matches!(decode_all(&[0, 0, 0, 0], 1024), Err(WireError::Empty)));
        assert!(matches!(decode_all(&[0, 0, 0, 3, 3, 0xc1, 0xc1], 1024), Err(WireError::Malformed { .. })));
        assert!(matches!(decode_all(&[0, 0, 0, 9, 3, 1], 1024), Err(WireError::Truncated { buffered: 6 })));
        assert!(matches!(decode_all(b"GET / HTTP/1.1\r\n", 1024), Err(WireError::TooLarge { .. })));
    }

    #[test]
    fn refuse_frame_round_trip() {
        let mut e = FrameEncoder::new(64);
        e.refuse(&"é".repeat(100)).expect("cut to fit");
        let frames = decode_all(e.finish(), 64).expect("decodes");
        assert!(matches!(&frames[0], Frame::Refuse(r) if !r.is_empty()));
    }

    /// Runs `fut` to completion; the readers in these tests are always ready.
    fn block_on<F: std::future::Future>(fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        loop {
            if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    /// A stream that hands out `bytes` in pieces of the given sizes (cycled), at most as much as
    /// the reader has room for; counts what it handed out.
    struct Chunked<'a> {
        bytes: &'a [u8],
        pos: usize,
        sizes: Vec<usize>,
        turn: usize,
    }

    impl ByteSource for Chunked<'_> {
        type Error = std::convert::Infallible;
        async fn read_into(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
            let size = self.sizes[self.turn % self.sizes.len()];
            self.turn += 1;
            let n = size.min(buf.len()).min(self.bytes.len() - self.pos);
            buf[..n].copy_from_slice(&self.bytes[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    /// Every frame `read_frame` yields from `bytes` read in pieces of `sizes`, then how the
    /// stream ended.
    fn read_all(bytes: &[u8], max: usize, sizes: Vec<usize>) -> (Vec<Frame<T>>, Result<(), WireError>) {
        let mut src = Chunked { bytes, pos: 0, sizes, turn: 0 };
        let mut d = FrameDecoder::new(max);
        let mut out = Vec::new();
        loop {
            let Ok(r) = block_on(d.read_frame::<T, _>(&mut src));
            match r {
                Ok(Some(f)) => out.push(f),
                Ok(None) => return (out, Ok(())),
                Err(e) => return (out, Err(e)),
            }
        }
    }

    #[test]
    fn read_frame_reports_truncation_and_oversize_before_the_body() {
        let mut e = FrameEncoder::new(1024);
        e.push(&T { key: Some(1), body: "abc".into() }).expect("fits");
        let bytes = e.finish().to_vec();
        let (frames, end) = read_all(&bytes[..bytes.len() - 1], 1024, vec![3]);
        assert!(frames.is_empty());
        assert_eq!(end, Err(WireError::Truncated { buffered: bytes.len() - 1 }));
        // A header announcing 4 GiB: refused once its 4 bytes are in, nothing allocated for it.
        let mut d = FrameDecoder::new(1024);
        let mut src = Chunked { bytes: &[0xff, 0xff, 0xff, 0xff, 3, 0, 0], pos: 0, sizes: vec![1], turn: 0 };
        let Ok(r) = block_on(d.read_frame::<T, _>(&mut src));
        assert_eq!(r, Err(WireError::TooLarge { len: u32::MAX as usize, max: 1024 }));
        assert_eq!(src.pos, LEN_PREFIX, "read no further than the header");
        assert!(d.buf.len() <= LEN_PREFIX + READ_CHUNK, "room for one read, not for the announced frame");
    }

    #[test]
    fn buffered_batches_are_taken_together_up_to_the_first_other_frame() {
        let t = |k: u64| T { key: Some(k), body: format!("m{k}") };
        let mut bytes = Vec::new();
        for k in 0..3u64 {
            let mut e = FrameEncoder::new(1024);
            e.push(&t(2 * k)).expect("fits");
            e.push(&t(2 * k + 1)).expect("fits");
            bytes.extend_from_slice(e.finish());
        }
        let mut e = FrameEncoder::new(1024);
        e.refuse("bye").expect("fits");
        bytes.extend_from_slice(e.finish());
        let mut e = FrameEncoder::new(1024);
        e.push(&t(9)).expect("fits");
        let last = e.finish().to_vec();
        bytes.extend_from_slice(&last[..last.len() - 1]);

        let mut d = FrameDecoder::new(1024);
        d.extend(&bytes);
        let Ok(Some(Frame::Batch(mut msgs))) = d.next_frame::<T>() else { panic!("a batch first") };
        // Stops once `max` is reached, at a frame boundary.
        d.take_buffered_batches(&mut msgs, 3);
        assert_eq!(msgs, vec![t(0), t(1), t(2), t(3)]);
        // Then up to the Refuse frame, which stays for next_frame.
        d.take_buffered_batches(&mut msgs, 100);
        assert_eq!(msgs.len(), 6);
        assert!(matches!(d.next_frame::<T>(), Ok(Some(Frame::Refuse(r))) if r == "bye"));
        // An incomplete frame stays buffered.
        let mut more: Vec<T> = Vec::new();
        d.take_buffered_batches(&mut more, 100);
        assert!(more.is_empty());
        d.extend(&last[last.len() - 1..]);
        d.take_buffered_batches(&mut more, 100);
        assert_eq!(more, vec![t(9)]);
        // A malformed batch is left for next_frame to report.
        let mut d = FrameDecoder::new(1024);
        d.extend(&[0, 0, 0, 2, KIND_BATCH, 0xc1]);
        d.take_buffered_batches(&mut more, 100);
        assert_eq!(more.len(), 1);
        assert!(matches!(d.next_frame::<T>(), Err(WireError::Malformed { .. })));
    }

    #[test]
    fn handshake_decoder_caps_frames_at_the_handshake_limit() {
        let mut d = FrameDecoder::handshake(DEFAULT_MAX_FRAME);
        d.extend(&((MAX_HANDSHAKE_FRAME + 1) as u32).to_be_bytes());
        assert!(matches!(d.next_frame::<T>(), Err(WireError::TooLarge { max: MAX_HANDSHAKE_FRAME, .. })));
        let mut d = FrameDecoder::handshake(MIN_MAX_FRAME);
        d.extend(&((MIN_MAX_FRAME + 1) as u32).to_be_bytes());
        assert!(matches!(d.next_frame::<T>(), Err(WireError::TooLarge { max: MIN_MAX_FRAME, .. })));
    }

    /// Every kind of MessagePack value rmp-serde writes (and the extension types it does not).
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Wide {
        small: (u8, u16, u32, u64, i8, i16, i32, i64),
        floats: (f32, f64),
        flags: (bool, Option<u8>, ()),
        text: String,
        values: Vec<crate::Change>,
        list: Vec<u32>,
        map: std::collections::BTreeMap<String, i64>,
    }

    /// How a Batch body decoded before `value_len`: one reader-based deserializer.
    fn decode_with_a_reader(body: &[u8]) -> Result<Vec<crate::Message>, String> {
        let mut de = rmp_serde::Deserializer::new(body);
        let mut msgs = Vec::new();
        while !de.get_ref().is_empty() {
            msgs.push(crate::Message::deserialize(&mut de).map_err(|e| e.to_string())?);
        }
        Ok(msgs)
    }

    #[test]
    fn value_len_walks_over_every_kind_of_value() {
        for n in [0usize, 15, 16, 255, 256, 65_535, 65_536] {
            let w = Wide {
                small: (1, 300, 70_000, u64::MAX, -1, -300, -70_000, i64::MIN),
                floats: (1.5, -2.5),
                flags: (true, None, ()),
                text: "é".repeat(n / 2),
                values: vec![crate::Change::Set("k".repeat(n % 40), vec![7; n].into()), crate::Change::Clear],
                list: (0..n as u32 / 100).collect(),
                map: (0..n as i64 / 1000).map(|i| (i.to_string(), i)).collect(),
            };
            let bytes = rmp_serde::to_vec(&w).expect("encodes");
            assert_eq!(value_len(&bytes), Some(bytes.len()), "{n}");
            assert_eq!(value_len(&bytes[..bytes.len() - 1]), None, "{n}: one byte short");
            let named = rmp_serde::to_vec_named(&w).expect("encodes");
            assert_eq!(value_len(&named), Some(named.len()), "{n}");
        }
        // Extension types (rmp-serde does not write them; a peer might): fixext 1, 2, 4, 8, 16
        // and ext 8, 16, 32, each with its type byte.
        let exts: [&[u8]; 8] = [
            &[0xd4, 1, 0],
            &[0xd5, 1, 0, 0],
            &[0xd6, 1, 0, 0, 0, 0],
            &[0xd7, 1, 0, 0, 0, 0, 0, 0, 0, 0],
            &[0xd8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[0xc7, 2, 1, 0, 0],
            &[0xc8, 0, 2, 1, 0, 0],
            &[0xc9, 0, 0, 0, 2, 1, 0, 0],
        ];
        for e in exts {
            assert_eq!(value_len(e), Some(e.len()), "{e:?}");
            assert_eq!(value_len(&e[..e.len() - 1]), None, "{e:?}");
        }
        // Never used, and containers announcing more values than bytes are left.
        assert_eq!(value_len(&[0xc1]), None);
        assert_eq!(value_len(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0]), None);
        assert_eq!(value_len(&[0xdf, 0xff, 0xff, 0xff, 0xff, 0]), None);
        assert_eq!(value_len(&[]), None);
    }

    proptest! {
        #[test]
        fn read_frame_gives_the_same_frames_whatever_the_chunking(
            msgs in proptest::collection::vec((proptest::option::of(any::<u64>()), ".{0,300}"), 0..60),
            max in 300usize..4096,
            sizes in proptest::collection::vec(1usize..3 * READ_CHUNK / 2, 1..8),
            small in proptest::collection::vec(1usize..16, 1..8),
        ) {
            let msgs: Vec<T> = msgs.into_iter().map(|(key, body)| T { key, body }).collect();
            let mut e = FrameEncoder::new(max);
            for m in &msgs {
                let _ = e.push(m);
            }
            let bytes = e.finish().to_vec();
            let whole = decode_all(&bytes, max).expect("own frames decode");
            let (frames, end) = read_all(&bytes, max, sizes);
            prop_assert_eq!(end, Ok(()));
            prop_assert_eq!(&frames, &whole);
            let (frames, end) = read_all(&bytes, max, small);
            prop_assert_eq!(end, Ok(()));
            prop_assert_eq!(frames, whole);
        }

        #[test]
        fn handshake_decoder_reads_no_byte_past_its_frame(
            body in ".{0,200}", rest in proptest::collection::vec(any::<u8>(), 0..512),
            sizes in proptest::collection::vec(1usize..64, 1..8),
        ) {
            let mut e = FrameEncoder::new(DEFAULT_MAX_FRAME);
            e.refuse(&body).expect("fits");
            let frame_len = e.len();
            let mut bytes = e.finish().to_vec();
            bytes.extend(&rest);
            let mut src = Chunked { bytes: &bytes, pos: 0, sizes, turn: 0 };
            let mut d = FrameDecoder::handshake(DEFAULT_MAX_FRAME);
            let Ok(r) = block_on(d.read_frame::<T, _>(&mut src));
            prop_assert_eq!(r, Ok(Some(Frame::Refuse(body.chars().collect()))));
            prop_assert_eq!(src.pos, frame_len);
            prop_assert_eq!(d.buffered(), 0);
        }

        /// A Batch body decodes as the reader-based deserializer decoded it: the same
        /// messages, or an error, whatever bytes are cut or changed.
        #[test]
        fn batches_decode_as_with_a_reader(
            values in proptest::collection::vec((".{0,40}", proptest::collection::vec(any::<u8>(), 0..2000), 0u64..1 << 40), 1..6),
            cut in any::<proptest::sample::Index>(),
            flip in proptest::option::of((any::<proptest::sample::Index>(), any::<u8>())),
        ) {
            let epoch = crate::Epoch::new(3, crate::NodeId::new("a"), 9);
            let mut body = Vec::new();
            for (session, value, version) in &values {
                let payload = std::sync::Arc::new(crate::message::Payload::Delta {
                    base_version: *version,
                    version: version + 1,
                    changes: vec![crate::Change::Set(session.clone(), value.clone().into()), crate::Change::Remove("x".into())],
                });
                let m = crate::Message::Replicate { session: session.clone(), epoch: epoch.clone(), payload };
                rmp_serde::encode::write(&mut body, &m).expect("encodes");
                let ack = crate::Message::Ack { session: session.clone(), epoch: epoch.clone(), version: *version };
                rmp_serde::encode::write(&mut body, &ack).expect("encodes");
            }
            let whole = match decode_payload::<crate::Message>(&[&[KIND_BATCH][..], &body].concat()) {
                Ok(Frame::Batch(msgs)) => msgs,
                other => panic!("{other:?}"),
            };
            prop_assert_eq!(whole.len(), 2 * values.len());
            if let Some((at, b)) = flip {
                let i = at.index(body.len());
                body[i] ^= b;
            }
            let body = &body[..cut.index(body.len() + 1)];
            let new = match decode_payload::<crate::Message>(&[&[KIND_BATCH][..], body].concat()) {
                Ok(Frame::Batch(msgs)) => Ok(msgs),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e.to_string()),
            };
            prop_assert_eq!(new.is_ok(), decode_with_a_reader(body).is_ok());
            if let (Ok(a), Ok(b)) = (new, decode_with_a_reader(body)) {
                prop_assert_eq!(a, b);
            }
        }

        #[test]
        fn read_frame_on_arbitrary_bytes_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            max in 1usize..4096,
            sizes in proptest::collection::vec(1usize..300, 1..8),
        ) {
            let _ = read_all(&bytes, max, sizes);
        }

        #[test]
        fn round_trip(msgs in proptest::collection::vec((proptest::option::of(any::<u64>()), ".{0,200}"), 0..40),
                      max in 300usize..4096, chunk in 1usize..64) {
            let msgs: Vec<T> = msgs.into_iter().map(|(key, body)| T { key, body }).collect();
            let mut e = FrameEncoder::new(max);
            let mut sent = Vec::new();
            for m in &msgs {
                if e.push(m).is_ok() { sent.push(m.clone()); }
            }
            let bytes = e.finish().to_vec();
            let mut d = FrameDecoder::new(max);
            let mut got = Vec::new();
            for piece in bytes.chunks(chunk) {
                d.extend(piece);
                while let Some(f) = d.next_frame::<T>().expect("own frames decode") {
                    match f { Frame::Batch(v) => got.extend(v), other => panic!("{other:?}") }
                }
            }
            prop_assert!(d.finish().is_ok());
            prop_assert_eq!(got, sent);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                                       max in 1usize..4096) {
            let mut d = FrameDecoder::new(max);
            d.extend(&bytes);
            while let Ok(Some(_)) = d.next_frame::<T>() {}
            let _ = d.finish();
            let _ = decode_payload::<T>(&bytes);
            let _ = decode_payload::<Hello>(&bytes);
        }

        #[test]
        fn framed_garbage_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512), kind in 0u8..5) {
            let mut payload = vec![kind];
            payload.extend(&body);
            let _ = decode_payload::<T>(&payload);
            let _ = decode_payload::<crate::Message>(&payload);
        }
    }
}
