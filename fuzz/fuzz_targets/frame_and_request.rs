//! Arbitrary bytes through the frame splitter and every request decoder; whatever decodes
//! must re-encode to bytes that decode to the same value. Run with
//! `cargo +nightly fuzz run frame_and_request` (the same checks run on stable as proptests
//! in `src/proto/records.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkeeper::proto::frame::{four_letter_word, frames, DEFAULT_MAX_PACKET};
use ringkeeper::proto::records::{decode_request, ConnectRequest};

fn check(payload: &[u8]) {
    if let Ok(c) = ConnectRequest::decode(payload) {
        let mut out = Vec::new();
        c.encode(&mut out);
        assert_eq!(ConnectRequest::decode(&out[4..]), Ok(c));
    }
    if let Ok((h, Ok(req))) = decode_request(payload) {
        let mut out = Vec::new();
        req.encode(h.xid, &mut out);
        let (h2, back) = decode_request(&out[4..]).expect("re-encoded header");
        assert_eq!(h2.xid, h.xid);
        assert_eq!(back, Ok(req));
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some(first4) = data.first_chunk::<4>() {
        let _ = four_letter_word(first4);
    }
    let mut it = frames(data, DEFAULT_MAX_PACKET);
    for frame in it.by_ref() {
        match frame {
            Ok(payload) => check(payload),
            Err(_) => break,
        }
    }
    assert!(it.consumed() <= data.len());
    // Also the raw bytes as one payload, so the decoders see input the framing would cut.
    check(data);
});
