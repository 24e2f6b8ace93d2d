//! Strategies: the fuzzed connections.

use std::net::SocketAddr;

use proptest::prelude::*;

use super::frames::{upgrade_request, Finish, Violation, WireCase, WireConn, WireFrame};
use super::MAX_MESSAGE;
use crate::soak::fuzz::socket::text;

pub(super) fn finish() -> impl Strategy<Value = Finish> {
    prop_oneof![
        3 => Just(Finish::CloseFrame),
        3 => Just(Finish::Shutdown),
        2 => Just(Finish::Silent),
    ]
}

pub(super) fn violation() -> impl Strategy<Value = Violation> {
    prop_oneof![
        Just(Violation::Unmasked),
        (1u8..8).prop_map(Violation::ReservedBits),
        prop::sample::select(vec![3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
            .prop_map(Violation::ReservedOpcode),
        Just(Violation::FragmentedPing),
        (126usize..300).prop_map(Violation::PingTooBig),
        Just(Violation::StrayContinuation),
        Just(Violation::InterleavedText),
        Just(Violation::OneByteClose),
        Just(Violation::CloseReasonNotUtf8),
    ]
}

fn not_utf8() -> impl Strategy<Value = Vec<u8>> {
    (
        "[a-z{}\":]{0,10}",
        prop::sample::select(vec![
            vec![0xffu8],
            vec![0xc3, 0x28],
            vec![0xe2, 0x82],
            vec![0xed, 0xa0, 0x80],
            vec![0xf5, 0x80, 0x80, 0x80],
        ]),
    )
        .prop_map(|(prefix, bad)| {
            let mut bytes = prefix.into_bytes();
            bytes.extend(bad);
            bytes
        })
}

fn close_frame() -> impl Strategy<Value = Option<(u16, String)>> {
    prop::option::of((
        prop::sample::select(vec![
            1000u16, 1001, 1003, 1008, 1011, 3000, 4999, 0, 999, 1004, 1005, 1006, 1015, 1016,
            2999, 5000, 65535,
        ]),
        "[a-z ]{0,40}",
    ))
}

fn wire_frame() -> impl Strategy<Value = WireFrame> {
    let small = || prop::collection::vec(any::<u8>(), 0..=125);
    prop_oneof![
        12 => text().prop_map(WireFrame::Text),
        2 => (text(), 2usize..4).prop_map(|(t, n)| WireFrame::Fragmented(t, n)),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(WireFrame::Binary),
        2 => small().prop_map(WireFrame::Ping),
        1 => small().prop_map(WireFrame::Pong),
        1 => close_frame().prop_map(WireFrame::Close),
        1 => not_utf8().prop_map(WireFrame::NotUtf8),
        1 => (any::<bool>(), MAX_MESSAGE + 1..MAX_MESSAGE * 3)
            .prop_map(|(text, len)| WireFrame::Oversized { text, len }),
        2 => violation().prop_map(WireFrame::Violation),
    ]
}

/// Bytes after the handshake: random, or frames then corrupted.
fn raw_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        (
            prop::collection::vec(wire_frame(), 1..6),
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            prop::option::of(any::<prop::sample::Index>()),
        )
            .prop_map(|(frames, flips, cut)| {
                let mut bytes: Vec<u8> = frames.iter().flat_map(WireFrame::bytes).collect();
                if !bytes.is_empty() {
                    for (at, byte) in flips {
                        let i = at.index(bytes.len());
                        bytes[i] ^= byte;
                    }
                }
                if let Some(cut) = cut {
                    bytes.truncate(cut.index(bytes.len() + 1));
                }
                bytes
            }),
    ]
}

/// Bytes instead of the upgrade request: garbage, or the real request
/// with a byte changed or cut short.
fn pre_handshake_bytes() -> impl Strategy<Value = Vec<u8>> {
    let request = upgrade_request(
        "127.0.0.1:1"
            .parse()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 1))),
    );
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map({
            let request = request.clone();
            move |(at, byte)| {
                let mut bytes = request.clone().into_bytes();
                let i = at.index(bytes.len());
                bytes[i] = byte;
                bytes
            }
        }),
        any::<prop::sample::Index>().prop_map(move |at| {
            let bytes = request.clone().into_bytes();
            bytes[..at.index(bytes.len())].to_vec()
        }),
        Just(b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        Just(b"POST /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n".to_vec()),
    ]
}

fn wire_conn() -> impl Strategy<Value = WireConn> {
    prop_oneof![
        1 => (pre_handshake_bytes(), finish()).prop_map(|(bytes, finish)| WireConn::PreHandshake { bytes, finish }),
        2 => (raw_bytes(), finish()).prop_map(|(bytes, finish)| WireConn::Raw { bytes, finish }),
        5 => (prop::collection::vec(wire_frame(), 0..8), finish())
            .prop_map(|(frames, finish)| WireConn::Frames { frames, finish }),
    ]
}

pub(super) fn wire_case() -> impl Strategy<Value = WireCase> {
    (
        prop::bool::weighted(0.75),
        prop::collection::vec(wire_conn(), 1..=4),
        0usize..4,
    )
        .prop_map(|(control, conns, publishes)| WireCase {
            control,
            conns,
            publishes,
        })
}
