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
//! enc.push(&Message::Heartbeat { incarnation: 1, sent: 0, echo: None }).expect("small");
//! enc.push(&Message::Heartbeat { incarnation: 2, sent: 0, echo: None }).expect("small");
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
    /// The sender's process run: a number drawn when its transport starts, so two links
    /// reach the same run of a node exactly when their Hellos carry the same incarnation
    /// (the carrier's wake-up rule, `carrier::peer`). 0 in [`Hello::for_node`]'s Hello; a
    /// Hello without it (an older protocol version, refused by [`Hello::check`]) reads as 0.
    #[serde(default)]
    pub incarnation: u64,
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
    /// The Hello `node` sends in `cfg`, with incarnation 0 (a transport sets its own); `None`
    /// when the domain file does not list `node`.
    pub fn for_node(cfg: &DomainConfig, node: &NodeId) -> Option<Hello> {
        let n = cfg.node(node)?;
        Some(Hello {
            protocol_version: crate::PROTOCOL_VERSION,
            domain: cfg.domain.name.clone(),
            node: node.clone(),
            mode: n.mode(),
            incarnation: 0,
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
mod tests;
