//! The codec's tests: frames, Hellos and their checks, hostile input.

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

/// A Hello carries its sender's incarnation; one without it (a peer of protocol version 7)
/// still decodes, as incarnation 0, and is refused by its version, not as garbage.
#[test]
fn a_hello_without_an_incarnation_is_refused_by_its_version() {
    let c = p2p();
    let h = Hello { incarnation: 42, ..Hello::for_node(&c, &NodeId::new("a")).expect("listed") };
    let mut e = FrameEncoder::new(DEFAULT_MAX_FRAME);
    e.hello(&h).expect("fits");
    assert_eq!(decode_all(e.finish(), DEFAULT_MAX_FRAME).expect("decodes"), vec![Frame::Hello(h.clone())]);

    #[derive(Serialize)]
    struct Version7 {
        protocol_version: u32,
        domain: String,
        node: NodeId,
        mode: Mode,
    }
    let old = Version7 { protocol_version: 7, domain: h.domain.clone(), node: h.node.clone(), mode: h.mode };
    let body = rmp_serde::to_vec_named(&old).expect("encodes");
    let mut bytes = u32::try_from(body.len() + 1).expect("small").to_be_bytes().to_vec();
    bytes.push(KIND_HELLO);
    bytes.extend_from_slice(&body);
    let frames = decode_all(&bytes, DEFAULT_MAX_FRAME).expect("decodes");
    let [Frame::Hello(got)] = frames.as_slice() else { panic!("{frames:?}") };
    assert_eq!(got.incarnation, 0);
    let r = got.check(&c, &NodeId::new("b"), None).expect_err("refused");
    assert_eq!(r.rule, refusal::PROTOCOL_VERSION);
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
