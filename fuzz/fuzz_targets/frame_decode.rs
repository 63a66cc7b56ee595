//! The stream decoder: arbitrary bytes, fed in fuzzer-chosen chunks to a decoder with a small
//! frame limit, never panic and never buffer a frame over the limit; every frame that decodes
//! re-encodes (Hello, Refuse, Batch) and decodes again to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use replication_core::Message;
use replication_core::wire::{Frame, FrameDecoder, FrameEncoder, LEN_PREFIX, MIN_MAX_FRAME};

const MAX: usize = MIN_MAX_FRAME;

fn roundtrip(frame: &Frame<Message>) {
    let mut enc = FrameEncoder::new(MAX);
    let ok = match frame {
        Frame::Hello(h) => enc.hello(h).is_ok(),
        // A reason longer than the encoder's cap is cut on purpose.
        Frame::Refuse(r) => r.len() <= MAX - 16 && enc.refuse(r).is_ok(),
        Frame::Batch(msgs) => msgs.iter().all(|m| enc.push(m).is_ok()),
    };
    if !ok {
        // A re-encoding may be larger than the (differently encoded) input: not a bug.
        return;
    }
    let bytes = enc.finish().to_vec();
    let mut dec = FrameDecoder::new(MAX);
    dec.extend(&bytes);
    let mut again: Vec<Message> = Vec::new();
    loop {
        match dec.next_frame::<Message>() {
            Ok(Some(Frame::Batch(m))) => again.extend(m),
            Ok(Some(f)) => {
                assert_eq!(&f, frame, "a re-encoded frame decodes to itself");
                assert!(dec.finish().is_ok());
                return;
            }
            Ok(None) => break,
            Err(e) => panic!("a re-encoded frame does not decode: {e}"),
        }
    }
    assert!(dec.finish().is_ok(), "the re-encoding holds whole frames");
    match frame {
        Frame::Batch(msgs) => assert_eq!(&again, msgs, "a re-encoded batch decodes to itself"),
        _ => unreachable!(),
    }
}

fuzz_target!(|data: &[u8]| {
    // First byte: chunk size 1..=64 for feeding the rest.
    let Some((&c, rest)) = data.split_first() else { return };
    let chunk = usize::from(c % 64) + 1;
    let mut dec = FrameDecoder::new(MAX);
    for piece in rest.chunks(chunk) {
        dec.extend(piece);
        loop {
            match dec.next_frame::<Message>() {
                Ok(Some(frame)) => roundtrip(&frame),
                Ok(None) => break,
                // A framing error is fatal for the connection: stop like a reader would.
                Err(_) => return,
            }
        }
        // Never more than one frame (plus a header) waiting when no complete frame is left.
        assert!(dec.buffered() < LEN_PREFIX + MAX + chunk, "buffered {} bytes", dec.buffered());
    }
    let _ = dec.finish();
});
