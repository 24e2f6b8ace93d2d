//! Strategies: the scripts of client messages, shared with the TCP part.

use proptest::prelude::*;
use tbone_dispatch::{OverflowPolicy, DEFAULT_MAX_EVENT_NAME};

use super::model::{Msg, ReadFailure, SinkKind};
use super::published_names;

/// Event names a client asks for: mostly ones the channel publishes, some
/// refused, too long, or arbitrary.
pub(crate) fn event_name() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(published_names()),
        1 => Just("y".repeat(DEFAULT_MAX_EVENT_NAME + 1)),
        1 => Just("admin_secret".to_string()),
        2 => "\\PC{0,12}",
        1 => any::<String>(),
    ]
}

/// A well-formed control message, spelled in several ways, sometimes
/// with a `channel` (null: the default one; or one not served).
pub(crate) fn control_message() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["subscribe", "unsubscribe"]),
        event_name(),
        any::<bool>(),
        prop::sample::select(vec!["", " ", "\n\t "]),
        prop::sample::select(vec![
            "",
            "",
            "",
            "",
            r#","channel":null"#,
            r#","channel":"elsewhere""#,
        ]),
    )
        .prop_map(|(action, event, swapped, ws, channel)| {
            let event = serde_json::to_string(&event).unwrap_or_default();
            if swapped {
                format!("{ws}{{{ws}\"event\"{ws}:{ws}{event},\"action\":\"{action}\"{channel}{ws}}}{ws}")
            } else {
                format!("{{\"action\":{ws}\"{action}\",{ws}\"event\":{event}{channel}}}")
            }
        })
}

/// Text close to a control message: one mistake, or another serde
/// spelling.
fn near_miss() -> impl Strategy<Value = String> {
    (control_message(), 0usize..14, any::<prop::sample::Index>()).prop_map(|(valid, how, at)| {
        let cut = |text: &str| {
            let mut end = at.index(text.len().max(1));
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text[..end].to_string()
        };
        match how {
            0 => valid.replacen("\"action\"", "\"Action\"", 1),
            1 => valid.replacen("subscribe\"", "Subscribe\"", 1),
            2 => cut(&valid),
            3 => format!("{valid}x"),
            4 => match valid.rfind('}') {
                Some(i) => format!("{},\"extra\":1{}", &valid[..i], &valid[i..]),
                None => valid,
            },
            5 => format!("[{valid}]"),
            6 => r#"{"action":"subscribe"}"#.to_string(),
            7 => r#"{"event":"e0"}"#.to_string(),
            8 => r#"{"action":"subscribe","event":1}"#.to_string(),
            9 => r#"{"action":"subscribe","event":null}"#.to_string(),
            10 => r#"["subscribe","e0"]"#.to_string(),
            11 => r#"{"action":{"unsubscribe":null},"event":"e1"}"#.to_string(),
            12 => r#"{"action":"subscribe","event":"e1","event":"e2"}"#.to_string(),
            _ => "{}".to_string(),
        }
    })
}

/// Any text a client may send.
pub(crate) fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => control_message(),
        3 => near_miss(),
        2 => any::<String>(),
        1 => "[\\[\\]{}\":, actionevntsubcr0-9]{0,40}",
    ]
}

fn read_failure() -> impl Strategy<Value = ReadFailure> {
    prop::sample::select(vec![
        ReadFailure::NotUtf8,
        ReadFailure::TooLong,
        ReadFailure::ReservedBits,
        ReadFailure::Unmasked,
        ReadFailure::FragmentedControl,
        ReadFailure::ControlTooBig,
        ReadFailure::UnknownOpcode,
        ReadFailure::StrayContinuation,
        ReadFailure::ResetWithoutClose,
        ReadFailure::Io,
    ])
}

pub(super) fn msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        10 => text().prop_map(Msg::Text),
        2 => Just(Msg::Alive),
        1 => (0usize..100).prop_map(Msg::Binary),
        1 => Just(Msg::Close),
        1 => read_failure().prop_map(Msg::Fails),
    ]
}

/// One connection of a case.
#[derive(Clone, Debug)]
pub(crate) struct ConnSpec {
    pub(super) control: bool,
    pub(super) initial: Vec<String>,
    pub(super) capacity: usize,
    pub(super) overflow: OverflowPolicy,
    pub(super) sink: SinkKind,
    /// At the end of the script: stay silent until the pings give up
    /// (true) or go away (false).
    pub(super) silent_at_end: bool,
}

/// One step of a script.
#[derive(Clone, Debug)]
pub(crate) enum Step {
    /// Connection `n % connections` receives a message.
    Send(usize, Msg),
    /// Connection `n % connections`'s stream ends.
    End(usize),
    /// The channel publishes event `published_names()[n]`.
    Publish(usize),
    /// One ping interval passes.
    Tick,
}

/// A case: connections served at once, and a script.
#[derive(Clone, Debug)]
pub(crate) struct Case {
    pub(super) conns: Vec<ConnSpec>,
    pub(super) steps: Vec<Step>,
}

fn conn_spec() -> impl Strategy<Value = ConnSpec> {
    let initial: Vec<String> = ["e0", "e1", "e2", "admin_e", "ünï ✓", ""]
        .into_iter()
        .map(String::from)
        .collect();
    (
        prop::bool::weighted(0.8),
        prop::sample::subsequence(initial, 0..=4),
        1usize..6,
        prop::sample::select(vec![OverflowPolicy::DropCarrier, OverflowPolicy::DropFrame]),
        prop_oneof![
            6 => Just(SinkKind::Reading),
            2 => (0usize..6).prop_map(SinkKind::FailAfter),
            2 => Just(SinkKind::Stalled),
        ],
        any::<bool>(),
    )
        .prop_map(
            |(control, initial, capacity, overflow, sink, silent_at_end)| ConnSpec {
                control,
                initial,
                capacity,
                overflow,
                sink,
                silent_at_end,
            },
        )
}

pub(super) fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        10 => (0usize..3, msg()).prop_map(|(n, m)| Step::Send(n, m)),
        4 => (0..published_names().len()).prop_map(Step::Publish),
        2 => Just(Step::Tick),
        1 => (0usize..3).prop_map(Step::End),
    ]
}

pub(super) fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(conn_spec(), 1..=3),
        prop::collection::vec(step(), 0..40),
    )
        .prop_map(|(conns, steps)| Case { conns, steps })
}
