//! The socket session's rules, driven with no runtime at all: no executor,
//! no timer, no socket. A [`Session`] takes what the client sent and the
//! time, and answers with [`Action`]s; these tests are its driver.
//!
//! First the rules one by one, as examples; then property tests over
//! random options, client scripts, clock steps and driver outcomes, checked
//! against a model of the rules (see [`Harness`]).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use tbone_dispatch::socket::{
    Action, ClientMessage, HandlerOutcome, Incoming, ReadError, Session, SubscribeOutcome,
};
use tbone_dispatch::{
    close_code, CarrierConfig, CarrierId, CloseReason, HandlerError, Limits, SocketHandle,
    SocketOptions, SubscribeError,
};

// ---------------------------------------------------------------------------
// Helpers shared by the examples and the properties.

/// A handler that does nothing: the session only needs to know one is set.
async fn ignore(_: ClientMessage, _: SocketHandle) -> Result<(), HandlerError> {
    Ok(())
}

fn names(channels: &[&str]) -> Arc<[Arc<str>]> {
    channels.iter().map(|c| Arc::<str>::from(*c)).collect()
}

fn subscribe(event: &str) -> Incoming {
    Incoming::Text(format!(r#"{{"action":"subscribe","event":"{event}"}}"#))
}

fn subscribe_on(channel: &str, event: &str) -> Incoming {
    Incoming::Text(format!(
        r#"{{"action":"subscribe","event":"{event}","channel":"{channel}"}}"#
    ))
}

fn text(text: &str) -> Incoming {
    Incoming::Text(text.into())
}

/// Every action the session has queued.
fn actions(session: &mut Session) -> Vec<Action> {
    std::iter::from_fn(|| session.poll_action()).collect()
}

/// The one action queued, which must be a close: its reason and whether
/// queued frames go first.
fn the_close(session: &mut Session) -> (CloseReason, bool) {
    match actions(session).as_slice() {
        [Action::Close {
            reason,
            after_queued,
        }] => {
            assert!(session.is_closed());
            assert_eq!(session.close_reason(), Some(reason));
            (reason.clone(), *after_queued)
        }
        other => panic!("expected one close, got {other:?}"),
    }
}

/// A session pinging every `interval` whose one message in flight (the
/// limit) is a slow request, delivered at `start`: it does not read until
/// the handler finishes.
fn busy_session(start: Instant, interval: Duration) -> Session {
    let options = SocketOptions::new(["e"])
        .on_message(ignore)
        .limits(Limits::default().max_in_flight(1))
        .ping_interval(interval);
    let mut session = Session::new(&options, names(&["pubsub"]), start);
    session.handle_message(start, text("slow request"));
    assert_eq!(actions(&mut session).len(), 1, "the request delivered");
    assert!(!session.wants_read());
    session
}

fn code(reason: &CloseReason) -> Option<u16> {
    reason.close_frame().map(|(code, _)| code)
}

/// The message of an error frame (`{"type":"error","payload":{"message":..}}`).
fn error_message(action: &Action) -> Option<String> {
    let Action::Send(frame) = action else {
        return None;
    };
    let value: serde_json::Value = serde_json::from_str(frame.as_str()).ok()?;
    if value["type"] != "error" {
        return None;
    }
    value["payload"]["message"].as_str().map(String::from)
}

// ---------------------------------------------------------------------------
// The rules, one example each.

#[test]
fn a_control_message_subscribes_and_reading_waits_for_it() {
    let start = Instant::now();
    let options = SocketOptions::new(["e"]).control_messages(true);
    let mut session = Session::new(&options, names(&["pubsub"]), start);
    assert!(session.wants_read());

    session.handle_message(start, subscribe("chat"));
    assert_eq!(
        actions(&mut session),
        [Action::Subscribe {
            channel: 0,
            event: "chat".into()
        }]
    );
    assert!(
        !session.wants_read(),
        "one subscription at a time, in order"
    );
    assert_eq!(session.client_subscriptions(), 1);
    session.subscribe_finished(SubscribeOutcome::Subscribed(true));
    assert!(session.wants_read());
    assert_eq!(session.client_subscriptions(), 1);

    session.handle_message(start, text(r#"{"action":"unsubscribe","event":"chat"}"#));
    assert_eq!(
        actions(&mut session),
        [Action::Unsubscribe {
            channel: 0,
            event: "chat".into()
        }]
    );
    assert_eq!(session.client_subscriptions(), 0);
}

#[test]
fn a_refused_subscription_gets_an_error_frame_and_the_socket_stays_open() {
    let start = Instant::now();
    let options = SocketOptions::new(["e"]).control_messages(true);
    let mut session = Session::new(&options, names(&["pubsub"]), start);
    session.handle_message(start, subscribe("admin_audit"));
    actions(&mut session);
    session.subscribe_finished(SubscribeOutcome::Refused);
    let sent = actions(&mut session);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        error_message(&sent[0]).as_deref(),
        Some("not allowed to subscribe to `admin_audit`")
    );
    assert!(!session.is_closed());
    assert_eq!(session.client_subscriptions(), 0);
}

#[test]
fn a_malformed_control_message_closes_with_1008() {
    for malformed in [
        r#"{"action":"jump","event":"e"}"#,
        r#"{"action":"subscribe"}"#,
        r#"{"action":"subscribe","event":"e","extra":1}"#,
        r#"{"action":1}"#,
    ] {
        let start = Instant::now();
        let options = SocketOptions::new(["e"]).control_messages(true);
        let mut session = Session::new(&options, names(&["pubsub"]), start);
        session.handle_message(start, text(malformed));
        let (reason, after_queued) = the_close(&mut session);
        assert_eq!(code(&reason), Some(close_code::POLICY), "{malformed}");
        assert!(!after_queued, "the client's fault: no need to drain");
        assert!(!session.wants_read());
    }
}

#[test]
fn with_control_messages_and_no_handler_other_text_closes_with_1008() {
    let start = Instant::now();
    let options = SocketOptions::new(["e"]).control_messages(true);
    let mut session = Session::new(&options, names(&["pubsub"]), start);
    session.handle_message(start, text("hello"));
    let (reason, _) = the_close(&mut session);
    assert_eq!(code(&reason), Some(close_code::POLICY));
}

#[test]
fn without_a_handler_text_is_ignored_and_binary_closes_with_1003() {
    let start = Instant::now();
    let options = SocketOptions::new(["e"]);
    let mut session = Session::new(&options, names(&["pubsub"]), start);
    session.handle_message(start, text("hello"));
    session.handle_message(start, text(r#"{"action":"subscribe","event":"e"}"#));
    assert_eq!(actions(&mut session), [], "control messages are off");

    session.handle_message(start, Incoming::Binary(Bytes::from_static(b"\x00\x01")));
    let (reason, after_queued) = the_close(&mut session);
    assert_eq!(code(&reason), Some(close_code::UNSUPPORTED));
    assert!(!after_queued);
}

#[test]
fn with_a_handler_text_and_binary_go_to_the_application() {
    let start = Instant::now();
    let options = SocketOptions::new(["e"])
        .control_messages(true)
        .on_message(ignore);
    let mut session = Session::new(&options, names(&["pubsub"]), start);
    session.handle_message(start, text(r#"{"type":"request","key":1}"#));
    session.handle_message(start, Incoming::Binary(Bytes::from_static(b"\xff")));
    assert_eq!(
        actions(&mut session),
        [
            Action::Deliver(ClientMessage::Text(r#"{"type":"request","key":1}"#.into())),
            Action::Deliver(ClientMessage::Binary(Bytes::from_static(b"\xff"))),
        ]
    );
    assert_eq!(session.in_flight(), 2);
    // Control messages still are the session's.
    session.handle_message(start, subscribe("x"));
    assert!(matches!(
        actions(&mut session).as_slice(),
        [Action::Subscribe { .. }]
    ));
}

#[test]
fn reading_pauses_at_the_in_flight_limit() {
    let start = Instant::now();
    let options = SocketOptions::new(["e"])
        .on_message(ignore)
        .limits(Limits::default().max_in_flight(2));
    let mut session = Session::new(&options, names(&["pubsub"]), start);
    session.handle_message(start, text("one"));
    assert!(session.wants_read());
    session.handle_message(start, text("two"));
    assert!(
        !session.wants_read(),
        "two in flight: the socket is not read"
    );
    assert_eq!(actions(&mut session).len(), 2);
    session.handler_finished(HandlerOutcome::Done);
    assert!(session.wants_read());
    assert_eq!(session.in_flight(), 1);
    assert!(!session.is_closed(), "the limit never closes anything");
}

#[test]
fn a_handler_error_or_panic_closes_with_1011_after_what_was_queued() {
    for outcome in [
        HandlerOutcome::Failed("boom".into()),
        HandlerOutcome::Panicked,
    ] {
        let start = Instant::now();
        let options = SocketOptions::new(["e"]).on_message(ignore);
        let mut session = Session::new(&options, names(&["pubsub"]), start);
        session.handle_message(start, text("hi"));
        actions(&mut session);
        session.handler_finished(outcome);
        let (reason, after_queued) = the_close(&mut session);
        assert_eq!(code(&reason), Some(close_code::INTERNAL_ERROR));
        assert!(after_queued, "the replies already queued are written first");
    }
}

#[test]
fn read_errors_close_with_the_code_of_their_kind() {
    let cases = [
        (
            ReadError::InvalidUtf8("x".into()),
            Some(close_code::INVALID_PAYLOAD),
        ),
        (ReadError::TooBig("x".into()), Some(close_code::TOO_BIG)),
        (ReadError::Protocol("x".into()), Some(close_code::PROTOCOL)),
        (ReadError::ConnectionLost("reset".into()), None),
    ];
    for (error, expected) in cases {
        let start = Instant::now();
        let mut session = Session::new(&SocketOptions::new(["e"]), names(&["pubsub"]), start);
        session.handle_read_error(error.clone());
        let (reason, _) = the_close(&mut session);
        assert_eq!(code(&reason), expected, "{error}");
    }
}

#[test]
fn the_peer_closing_sends_no_close_frame() {
    let start = Instant::now();
    let mut session = Session::new(&SocketOptions::new(["e"]), names(&["pubsub"]), start);
    session.handle_message(start, Incoming::Close);
    let (reason, _) = the_close(&mut session);
    assert_eq!(reason, CloseReason::PeerClosed);
    assert_eq!(reason.close_frame(), None);

    let mut ended = Session::new(&SocketOptions::new(["e"]), names(&["pubsub"]), start);
    ended.handle_end_of_stream();
    assert_eq!(the_close(&mut ended).0, CloseReason::PeerClosed);
}

#[test]
fn once_closed_the_session_does_nothing_more() {
    let start = Instant::now();
    let options = SocketOptions::new(["e"])
        .control_messages(true)
        .on_message(ignore)
        .ping_interval(Duration::from_secs(1));
    let mut session = Session::new(&options, names(&["pubsub"]), start);
    session.handle_message(start, text("hi"));
    session.handle_read_error(ReadError::Protocol("bad frame".into()));
    // The delivery queued before the close is dropped: only the close is left.
    let (reason, _) = the_close(&mut session);
    assert_eq!(code(&reason), Some(close_code::PROTOCOL));
    session.handler_finished(HandlerOutcome::Panicked);
    session.handle_timeout(start + Duration::from_secs(10));
    session.go_away(start, "shutdown");
    session.subscribe_finished(SubscribeOutcome::Refused);
    assert_eq!(actions(&mut session), []);
    assert_eq!(session.poll_timeout(), None);
    assert!(!session.wants_read());
    assert_eq!(
        session.close_reason(),
        Some(&reason),
        "the first reason stays"
    );
}

#[test]
fn a_silent_client_is_closed_with_1001_at_the_second_ping() {
    let start = Instant::now();
    let interval = Duration::from_secs(30);
    let options = SocketOptions::new(["e"]).ping_interval(interval);
    let mut session = Session::new(&options, names(&["pubsub"]), start);
    assert_eq!(session.poll_timeout(), Some(start + interval));
    session.handle_timeout(start + interval - Duration::from_millis(1));
    assert_eq!(actions(&mut session), [], "not due yet");

    session.handle_timeout(start + interval);
    assert_eq!(actions(&mut session), [Action::Ping]);
    assert_eq!(session.poll_timeout(), Some(start + 2 * interval));
    session.handle_timeout(start + 2 * interval);
    let (reason, after_queued) = the_close(&mut session);
    assert_eq!(
        reason,
        CloseReason::Rejected(close_code::GOING_AWAY, "no answer to pings".into())
    );
    assert!(!after_queued);
}

#[test]
fn a_client_that_answers_is_pinged_once_per_interval() {
    let start = Instant::now();
    let interval = Duration::from_secs(30);
    let options = SocketOptions::new(["e"]).ping_interval(interval);
    let mut session = Session::new(&options, names(&["pubsub"]), start);
    for k in 1..=10 {
        let due = session.poll_timeout().unwrap();
        assert_eq!(due, start + k * interval);
        session.handle_timeout(due);
        assert_eq!(actions(&mut session), [Action::Ping]);
        // The pong.
        session.handle_message(due + Duration::from_millis(20), Incoming::Alive);
    }
    assert!(!session.is_closed());
}

#[test]
fn a_busy_application_does_not_make_its_client_unresponsive() {
    let start = Instant::now();
    let interval = Duration::from_secs(30);
    let mut session = busy_session(start, interval);
    // Not reading for three intervals: pings go out, nobody is closed.
    for k in 1..=3 {
        session.handle_timeout(start + k * interval);
        assert_eq!(actions(&mut session), [Action::Ping]);
    }
    assert!(!session.is_closed());
}

#[test]
fn no_pings_with_a_zero_interval() {
    let start = Instant::now();
    let options = SocketOptions::new(["e"]).ping_interval(Duration::ZERO);
    let mut session = Session::new(&options, names(&["pubsub"]), start);
    assert_eq!(session.poll_timeout(), None);
    session.handle_timeout(start + Duration::from_secs(3600));
    assert_eq!(actions(&mut session), []);
}

#[test]
fn the_subscription_limit_closes_with_1008() {
    let start = Instant::now();
    let options = SocketOptions::new(["e"])
        .control_messages(true)
        .limits(Limits::default().max_subscriptions(2));
    let mut session = Session::new(&options, names(&["pubsub"]), start);
    for event in ["a", "b", "a"] {
        session.handle_message(start, subscribe(event));
        actions(&mut session);
        session.subscribe_finished(SubscribeOutcome::Subscribed(true));
    }
    assert_eq!(
        session.client_subscriptions(),
        2,
        "subscribing again is not a new one"
    );
    session.handle_message(start, subscribe("c"));
    let (reason, _) = the_close(&mut session);
    assert_eq!(
        reason,
        CloseReason::Rejected(
            close_code::POLICY,
            "too many subscriptions: the limit is 2".into()
        )
    );
}

#[test]
fn the_rate_limit_closes_with_1008_and_counts_every_message() {
    let start = Instant::now();
    let options =
        SocketOptions::new(["e"]).limits(Limits::default().max_messages_per_second(Some(3)));
    let mut session = Session::new(&options, names(&["pubsub"]), start);
    let at = start + Duration::from_millis(100);
    session.handle_message(at, Incoming::Alive);
    session.handle_message(at, text("ignored"));
    session.handle_message(at, Incoming::Alive);
    assert!(!session.is_closed());
    session.handle_message(at, Incoming::Alive);
    let (reason, _) = the_close(&mut session);
    assert_eq!(
        reason,
        CloseReason::Rejected(
            close_code::POLICY,
            "too many messages: the limit is 3 per second".into()
        )
    );

    // A second later, the client may send as many again.
    let mut steady = Session::new(&options, names(&["pubsub"]), start);
    for second in 0..5u32 {
        for _ in 0..3 {
            steady.handle_message(start + second * Duration::from_secs(1), Incoming::Alive);
        }
    }
    assert!(!steady.is_closed());
}

#[test]
fn several_channels_control_messages_name_the_channel() {
    let start = Instant::now();
    let options = SocketOptions::new(["e"]).control_messages(true);
    let mut session = Session::new(&options, names(&["pubsub", "chat"]), start);

    session.handle_message(start, subscribe_on("chat", "message"));
    assert_eq!(
        actions(&mut session),
        [Action::Subscribe {
            channel: 1,
            event: "message".into()
        }]
    );
    session.subscribe_finished(SubscribeOutcome::Subscribed(true));

    session.handle_message(start, subscribe("message"));
    let sent = actions(&mut session);
    assert_eq!(
        error_message(&sent[0]).as_deref(),
        Some("name the channel: this socket serves pubsub, chat")
    );
    session.handle_message(start, subscribe_on("nope", "message"));
    let sent = actions(&mut session);
    assert_eq!(
        error_message(&sent[0]).as_deref(),
        Some("no channel `nope` on this socket; it serves pubsub, chat")
    );
    assert!(!session.is_closed());
    assert!(session.wants_read());
}

#[test]
fn going_away_and_failed_subscriptions() {
    let start = Instant::now();
    let options = SocketOptions::new(["e"]).control_messages(true);
    let mut session = Session::new(&options, names(&["pubsub"]), start);
    session.go_away(start, "the server is shutting down");
    let (reason, after_queued) = the_close(&mut session);
    assert_eq!(code(&reason), Some(close_code::GOING_AWAY));
    assert!(
        after_queued,
        "the client did nothing wrong: it gets its frames"
    );

    // The channel stopped while subscribing: going away too.
    let mut session = Session::new(&options, names(&["pubsub"]), start);
    session.handle_message(start, subscribe("x"));
    actions(&mut session);
    session.subscribe_finished(SubscribeOutcome::Failed(SubscribeError::Stopped {
        channel: "pubsub".into(),
    }));
    let (reason, after_queued) = the_close(&mut session);
    assert_eq!(code(&reason), Some(close_code::GOING_AWAY));
    assert!(after_queued);

    // The carrier closed meanwhile: its reason is the session's.
    let mut session = Session::new(&options, names(&["pubsub"]), start);
    session.handle_message(start, subscribe("x"));
    actions(&mut session);
    session.subscribe_finished(SubscribeOutcome::Failed(SubscribeError::CarrierClosed {
        carrier: CarrierId::next(),
        reason: CloseReason::Overflow,
    }));
    assert_eq!(the_close(&mut session), (CloseReason::Overflow, false));

    // A carrier closed outside the session's view: nothing left to do.
    let mut session = Session::new(&options, names(&["pubsub"]), start);
    session.handle_message(start, subscribe("x"));
    session.handle_carrier_closed(CloseReason::Overflow);
    assert_eq!(actions(&mut session), []);
    assert_eq!(session.close_reason(), Some(&CloseReason::Overflow));
}

#[test]
fn with_resume_messages_the_events_wait_for_the_first_message() {
    let start = Instant::now();
    let options = SocketOptions::new(["e"])
        .resume_message(true)
        .control_messages(true);
    let mut session = Session::new(&options, names(&["pubsub"]), start);
    assert!(session.wants_read());
    // A pong is not the first message.
    session.handle_message(start, Incoming::Alive);
    assert_eq!(actions(&mut session), []);

    session.handle_message(start, text(r#"{"action":"resume","position":"17a-3"}"#));
    assert_eq!(
        actions(&mut session),
        [Action::SubscribeEvents {
            resume: Some((0, "17a-3".into()))
        }]
    );
    assert!(!session.wants_read(), "nothing read before the replay");
    session.events_subscribed(Ok(()));
    assert_eq!(actions(&mut session), []);
    assert!(session.wants_read());
    assert_eq!(
        session.client_subscriptions(),
        0,
        "the server's, not the client's"
    );

    // Once is all: a later one says how to resume instead.
    session.handle_message(start, text(r#"{"action":"resume","position":"17a-9"}"#));
    let sent = actions(&mut session);
    assert!(
        error_message(&sent[0]).is_some_and(|m| m.contains("last_position")),
        "{sent:?}"
    );
    assert!(!session.is_closed());
}

#[test]
fn a_resume_message_without_a_position_starts_live() {
    let start = Instant::now();
    let options = SocketOptions::new(["e"]).resume_message(true);
    let mut session = Session::new(&options, names(&["pubsub"]), start);
    session.handle_message(start, text(r#"{"action":"resume"}"#));
    assert_eq!(
        actions(&mut session),
        [Action::SubscribeEvents { resume: None }]
    );
}

#[test]
fn another_first_message_subscribes_the_events_live_then_is_handled() {
    let start = Instant::now();
    let options = SocketOptions::new(["e"])
        .resume_message(true)
        .on_message(ignore);
    let mut session = Session::new(&options, names(&["pubsub"]), start);
    session.handle_message(start, text("hello"));
    assert_eq!(
        actions(&mut session),
        [Action::SubscribeEvents { resume: None }]
    );
    assert!(!session.wants_read());
    assert_eq!(
        session.in_flight(),
        0,
        "not before the events are subscribed"
    );
    session.events_subscribed(Ok(()));
    assert_eq!(
        actions(&mut session),
        [Action::Deliver(ClientMessage::Text("hello".into()))]
    );
    assert_eq!(session.in_flight(), 1);
}

#[test]
fn a_resume_message_names_the_channel_where_several_are_served() {
    let start = Instant::now();
    let options = SocketOptions::new(["e"]).resume_message(true);
    let mut session = Session::new(&options, names(&["pubsub", "chat"]), start);

    session.handle_message(start, text(r#"{"action":"resume","position":"p"}"#));
    let sent = actions(&mut session);
    assert_eq!(
        error_message(&sent[0]).as_deref(),
        Some("name the channel: this socket serves pubsub, chat")
    );
    session.handle_message(
        start,
        text(r#"{"action":"resume","position":"p","channel":"nope"}"#),
    );
    assert_eq!(actions(&mut session).len(), 1, "an error frame");
    assert!(session.wants_read(), "still waiting for a served channel");

    session.handle_message(
        start,
        text(r#"{"action":"resume","position":"c-4","channel":"chat"}"#),
    );
    assert_eq!(
        actions(&mut session),
        [Action::SubscribeEvents {
            resume: Some((1, "c-4".into()))
        }]
    );
}

#[test]
fn without_resume_messages_a_resume_message_is_not_obeyed() {
    let start = Instant::now();
    let resume = r#"{"action":"resume","position":"p"}"#;
    // With control messages: an error frame saying how to resume.
    let options = SocketOptions::new(["e"]).control_messages(true);
    let mut session = Session::new(&options, names(&["pubsub"]), start);
    session.handle_message(start, text(resume));
    let sent = actions(&mut session);
    assert!(error_message(&sent[0]).is_some(), "{sent:?}");
    // Without: the application's message, as any other.
    let options = SocketOptions::new(["e"]).on_message(ignore);
    let mut session = Session::new(&options, names(&["pubsub"]), start);
    session.handle_message(start, text(resume));
    assert_eq!(
        actions(&mut session),
        [Action::Deliver(ClientMessage::Text(resume.into()))]
    );
}

#[test]
fn events_that_cannot_be_subscribed_close_the_socket() {
    let start = Instant::now();
    let options = SocketOptions::new(["e"]).resume_message(true);
    let resume = text(r#"{"action":"resume","position":"p"}"#);
    let failing = |error: SubscribeError| {
        let mut session = Session::new(&options, names(&["pubsub"]), start);
        session.handle_message(start, resume.clone());
        actions(&mut session);
        session.events_subscribed(Err(error));
        the_close(&mut session)
    };
    let (reason, after_queued) = failing(SubscribeError::Stopped {
        channel: "pubsub".into(),
    });
    assert_eq!(
        (code(&reason), after_queued),
        (Some(close_code::GOING_AWAY), true)
    );
    let closed = failing(SubscribeError::CarrierClosed {
        carrier: CarrierId::next(),
        reason: CloseReason::Overflow,
    });
    assert_eq!(closed, (CloseReason::Overflow, false));
    let (reason, _) = failing(SubscribeError::EventNameTooLong { len: 300, max: 256 });
    assert_eq!(code(&reason), Some(close_code::INTERNAL_ERROR));
}

// ---------------------------------------------------------------------------
// The model.

const CHANNELS: [&str; 3] = ["c0", "c1", "c2"];
const EVENTS: [&str; 4] = ["e0", "e1", "e2", "e3"];
const SECOND: Duration = Duration::from_secs(1);

/// The options of one case.
#[derive(Clone, Debug)]
struct Setup {
    control: bool,
    handler: bool,
    subscriptions: usize,
    /// As given to `max_in_flight` (0 is raised to 1).
    in_flight: usize,
    per_second: Option<u32>,
    ping: Duration,
    channels: usize,
    /// The socket's events wait for a resume message.
    resume: bool,
}

impl Setup {
    fn options(&self) -> SocketOptions {
        let options = SocketOptions::new(["initial"])
            .control_messages(self.control)
            .resume_message(self.resume)
            .ping_interval(self.ping)
            .limits(
                Limits::default()
                    .max_subscriptions(self.subscriptions)
                    .max_in_flight(self.in_flight)
                    .max_messages_per_second(self.per_second),
            );
        if self.handler {
            options.on_message(ignore)
        } else {
            options
        }
    }

    fn names(&self) -> Arc<[Arc<str>]> {
        names(&CHANNELS[..self.channels])
    }

    fn in_flight_limit(&self) -> usize {
        self.in_flight.max(1)
    }
}

/// How a control message names its channel.
#[derive(Clone, Copy, Debug)]
enum Naming {
    Omitted,
    /// Served channel number `n % channels`.
    Served(usize),
    Unknown,
}

/// What the client sends (a read error and the end of the stream come
/// through the same stream).
#[derive(Clone, Debug)]
enum Sent {
    Control {
        subscribe: bool,
        event: usize,
        naming: Naming,
    },
    /// `{"action":"resume"}`, with a position or not.
    Resume {
        position: bool,
        naming: Naming,
    },
    /// Claims to be a control message, and is not a valid one.
    Malformed(&'static str),
    /// Text that is not a control message.
    Other(String),
    Binary(Vec<u8>),
    Alive,
    Close,
    Error(ReadError),
    End,
}

#[derive(Clone, Debug)]
enum Handled {
    Done,
    Failed,
    Panicked,
}

#[derive(Clone, Debug)]
enum Subscribed {
    Added,
    AlreadyWas,
    Refused,
    TooLong,
    Stopped,
    CarrierClosed(CloseReason),
}

/// One step of a script: time passes, then something happens.
#[derive(Clone, Debug)]
enum Event {
    Client(Sent),
    /// The handler finishes the oldest message in flight (if any).
    Handler(Handled),
    /// The pending subscription is done (if any).
    Subscribe(Subscribed),
    /// The socket's own events are subscribed (if they were being).
    Events(Subscribed),
    GoAway,
    CarrierClosed,
}

#[derive(Clone, Debug)]
struct Step {
    wait: Duration,
    /// Whether the driver's timer fires at each due time while the time
    /// passes (or only once, late, when the step's time has come).
    precise: bool,
    event: Event,
}

/// In which order the driver sees a timer and another event that are due
/// at the same instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    /// The timer first, then the event (and then reading).
    TimerFirst,
    /// The event first, then the timer, then reading: the order of
    /// `Connection`'s poll loop (subscription, handlers, timer, read).
    AsTheDriver,
}

/// What one input to the session must produce.
#[derive(Debug)]
enum Expect {
    Nothing,
    Deliver(ClientMessage),
    Subscribe(usize, String),
    SubscribeEvents(Option<(usize, String)>),
    Unsubscribe(usize, String),
    ErrorFrame,
    Ping,
    Close(Cause, bool),
    /// Either is right (a rule that leaves room).
    Either(Box<Expect>, Box<Expect>),
}

#[derive(Debug)]
enum Cause {
    Peer,
    Lost,
    Code(u16, &'static str),
    Exact(CloseReason),
}

impl Expect {
    fn matches(&self, actions: &[Action]) -> bool {
        match (self, actions) {
            (Expect::Either(a, b), _) => a.matches(actions) || b.matches(actions),
            (Expect::Nothing, []) => true,
            (Expect::Deliver(expected), [Action::Deliver(message)]) => expected == message,
            (Expect::Subscribe(c, e), [Action::Subscribe { channel, event }])
            | (Expect::Unsubscribe(c, e), [Action::Unsubscribe { channel, event }]) => {
                c == channel && e == event
            }
            (Expect::SubscribeEvents(expected), [Action::SubscribeEvents { resume }]) => {
                expected == resume
            }
            (Expect::ErrorFrame, [action]) => error_message(action).is_some(),
            (Expect::Ping, [Action::Ping]) => true,
            (
                Expect::Close(cause, queued),
                [Action::Close {
                    reason,
                    after_queued,
                }],
            ) => queued == after_queued && cause.matches(reason),
            _ => false,
        }
    }
}

impl Cause {
    fn matches(&self, reason: &CloseReason) -> bool {
        match (self, reason) {
            (Cause::Peer, CloseReason::PeerClosed) => reason.close_frame().is_none(),
            (Cause::Lost, CloseReason::ConnectionLost(_)) => reason.close_frame().is_none(),
            (Cause::Code(expected, prefix), CloseReason::Rejected(c, why)) => {
                c == expected && why.starts_with(prefix) && code(reason) == Some(*expected)
            }
            (Cause::Exact(expected), reason) => expected == reason,
            _ => false,
        }
    }
}

fn going_away_close() -> Expect {
    Expect::Close(
        Cause::Exact(CloseReason::Rejected(
            close_code::GOING_AWAY,
            "shutting down".into(),
        )),
        true,
    )
}

fn rate_close() -> Expect {
    Expect::Close(Cause::Code(close_code::POLICY, "too many messages"), false)
}

/// The socket's own events, in the model.
#[derive(Debug)]
enum ModelEvents {
    Subscribed,
    AwaitingFirstMessage,
    /// Being subscribed; the first message, handled after, if it was not
    /// the resume message.
    Subscribing(Option<Sent>),
}

/// The driver of one session, and the model its actions are checked
/// against. Every input to the session goes through [`Harness::input`],
/// which drains the actions it produced (as the driver does before
/// anything else) and compares them with what the rules say.
struct Harness {
    setup: Setup,
    order: Order,
    /// Check the rate limit over any sliding second (the documented
    /// "within one second"), not only the limiter's own windows.
    strict_rate: bool,
    session: Session,
    start: Instant,
    now: Instant,
    /// What the client sent and the driver has not read yet.
    inbox: VecDeque<Sent>,
    in_flight: usize,
    pending: Option<(usize, String)>,
    subscriptions: HashSet<(usize, String)>,
    /// Where the socket's own events stand.
    events: ModelEvents,
    /// The first message, read while the events wait for it.
    first: Option<Sent>,
    /// The session's Close action was seen (or the carrier closed).
    closed: bool,
    last_ping: Instant,
    /// A message was given to the session since the last ping (or start).
    heard: bool,
    /// The client sent something since the last ping, before the next
    /// was due (read or not).
    sent: bool,
    /// The session was not reading at some point since the last ping.
    paused: bool,
    /// When each message (other than a close) was given to the session.
    fed: VecDeque<Instant>,
    /// When each message the rate limit let through was given.
    admitted: VecDeque<Instant>,
    /// The server is going away: until when handlers may finish.
    going_away: Option<Instant>,
    /// The number of the step being taken.
    step: usize,
}

impl fmt::Debug for Harness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("setup", &self.setup)
            .field("elapsed", &(self.now - self.start))
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl Harness {
    fn new(setup: Setup, order: Order, strict_rate: bool) -> Self {
        let start = Instant::now();
        let session = Session::new(&setup.options(), setup.names(), start);
        let events = if setup.resume {
            ModelEvents::AwaitingFirstMessage
        } else {
            ModelEvents::Subscribed
        };
        Harness {
            setup,
            order,
            strict_rate,
            session,
            start,
            now: start,
            inbox: VecDeque::new(),
            in_flight: 0,
            pending: None,
            subscriptions: HashSet::new(),
            events,
            first: None,
            closed: false,
            last_ping: start,
            heard: true,
            sent: false,
            paused: false,
            fed: VecDeque::new(),
            admitted: VecDeque::new(),
            going_away: None,
            step: 0,
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn fail(&self, what: String) -> ! {
        panic!("{what}\n  at {:?}\n  {self:?}", self.elapsed())
    }

    fn reading(&self) -> bool {
        !self.closed
            && self.going_away.is_none()
            && self.pending.is_none()
            && !matches!(self.events, ModelEvents::Subscribing(_))
            && self.in_flight < self.setup.in_flight_limit()
    }

    /// Gives the session one input, checks what it did against `expect`
    /// and carries it out on the model.
    fn input(&mut self, what: impl fmt::Debug, expect: Expect, call: impl FnOnce(&mut Session)) {
        let was_closed = self.session.is_closed();
        call(&mut self.session);
        let actions = actions(&mut self.session);
        if was_closed {
            if !actions.is_empty() {
                self.fail(format!("a closed session acted: {actions:?}"));
            }
            return;
        }
        if !expect.matches(&actions) {
            self.fail(format!("{what:?}: expected {expect:?}, got {actions:?}"));
        }
        for action in actions {
            self.perform(action);
        }
        self.check();
    }

    /// What the driver does with one action.
    fn perform(&mut self, action: Action) {
        if self.closed {
            self.fail(format!("{action:?} after the close"));
        }
        match action {
            Action::Subscribe { channel, event } => {
                if self.pending.is_some() {
                    self.fail("a second subscription while one is pending".into());
                }
                assert!(channel < self.setup.channels);
                self.pending = Some((channel, event));
            }
            Action::SubscribeEvents { resume } => {
                if !matches!(self.events, ModelEvents::AwaitingFirstMessage) {
                    self.fail(format!("events subscribed twice ({resume:?})"));
                }
                let held = self
                    .first
                    .take()
                    .filter(|sent| !matches!(sent, Sent::Resume { .. }));
                self.events = ModelEvents::Subscribing(held);
            }
            Action::Unsubscribe { channel, event } => {
                self.subscriptions.remove(&(channel, event));
            }
            Action::Send(_) => {}
            Action::Ping => {
                // One ping per interval at most (the start counts as one).
                if self.now < self.last_ping + self.setup.ping {
                    self.fail(format!(
                        "a ping {:?} after the last",
                        self.now - self.last_ping
                    ));
                }
                self.last_ping = self.now;
                self.heard = false;
                self.sent = false;
                self.paused = !self.reading();
                let next = self.session.poll_timeout();
                if next != Some(self.now + self.setup.ping) {
                    self.fail(format!("after a ping, the next is due {next:?}"));
                }
            }
            Action::Deliver(_) => {
                if !self.setup.handler {
                    self.fail("a delivery without a handler".into());
                }
                self.in_flight += 1;
            }
            Action::Close { reason, .. } => {
                self.closed = true;
                if self.session.close_reason() != Some(&reason) {
                    self.fail(format!(
                        "closed for {reason:?} but says {:?}",
                        self.session.close_reason()
                    ));
                }
            }
            other => self.fail(format!("unknown action {other:?}")),
        }
    }

    /// The invariants, after every input.
    fn check(&mut self) {
        let session = &self.session;
        if self.closed {
            assert!(session.is_closed(), "closed, yet not is_closed()");
            assert!(!session.wants_read());
            assert_eq!(session.poll_timeout(), None);
            return;
        }
        if session.is_closed() {
            self.fail("is_closed() without a close".into());
        }
        if session.in_flight() != self.in_flight {
            self.fail(format!(
                "in flight: session {} model {}",
                session.in_flight(),
                self.in_flight
            ));
        }
        if self.in_flight > self.setup.in_flight_limit() {
            self.fail(format!("{} messages in flight", self.in_flight));
        }
        if self.subscriptions.len() > self.setup.subscriptions {
            self.fail(format!("{} subscriptions", self.subscriptions.len()));
        }
        // Held and pending, each (channel, event) once: never over the
        // limit, and what `client_subscriptions()` reports.
        let pending_new = self
            .pending
            .as_ref()
            .is_some_and(|p| !self.subscriptions.contains(p));
        let distinct = self.subscriptions.len() + usize::from(pending_new);
        if distinct > self.setup.subscriptions {
            self.fail(format!("{distinct} subscriptions held or pending"));
        }
        let reported = session.client_subscriptions();
        if reported != distinct {
            self.fail(format!(
                "client_subscriptions() is {reported}, {distinct} held or pending"
            ));
        }
        if session.wants_read() != self.reading() {
            self.fail(format!("wants_read() is {}", session.wants_read()));
        }
        if !session.wants_read() {
            self.paused = true;
        }
        // A timer: the pings', or the deadline of a server going away.
        if (self.setup.ping.is_zero() && self.going_away.is_none())
            != session.poll_timeout().is_none()
        {
            self.fail(format!("poll_timeout() is {:?}", session.poll_timeout()));
        }
    }

    /// The rules for a message given to the session.
    fn expect_message(&self, sent: &Sent) -> (Incoming, Expect) {
        let setup = &self.setup;
        let deliver_text = |text: &str| {
            if setup.handler {
                Expect::Deliver(ClientMessage::Text(text.into()))
            } else {
                Expect::Nothing
            }
        };
        let not_control = Expect::Close(
            Cause::Code(close_code::POLICY, "malformed control message"),
            false,
        );
        match sent {
            Sent::Alive => (Incoming::Alive, Expect::Nothing),
            Sent::Binary(bytes) => {
                let bytes = Bytes::from(bytes.clone());
                let expect = if setup.handler {
                    Expect::Deliver(ClientMessage::Binary(bytes.clone()))
                } else {
                    Expect::Close(Cause::Code(close_code::UNSUPPORTED, ""), false)
                };
                (Incoming::Binary(bytes), expect)
            }
            Sent::Malformed(text) => {
                let expect = if setup.control {
                    not_control
                } else {
                    deliver_text(text)
                };
                (Incoming::Text(text.to_string()), expect)
            }
            Sent::Other(text) => {
                let expect = match (setup.control, setup.handler) {
                    (true, false) => not_control,
                    _ => deliver_text(text),
                };
                (Incoming::Text(text.clone()), expect)
            }
            Sent::Control {
                subscribe,
                event,
                naming,
            } => {
                let event = EVENTS[*event].to_string();
                let action = if *subscribe {
                    "subscribe"
                } else {
                    "unsubscribe"
                };
                let mut message = serde_json::json!({"action": action, "event": event});
                let channel = match naming {
                    Naming::Omitted => (setup.channels == 1).then_some(0),
                    Naming::Served(n) => {
                        let index = n % setup.channels;
                        message["channel"] = CHANNELS[index].into();
                        Some(index)
                    }
                    Naming::Unknown => {
                        message["channel"] = "elsewhere".into();
                        None
                    }
                };
                let text = message.to_string();
                let expect = match (setup.control, channel) {
                    (false, _) => deliver_text(&text),
                    (true, None) => Expect::ErrorFrame,
                    (true, Some(channel)) if !subscribe => Expect::Unsubscribe(channel, event),
                    (true, Some(channel)) => {
                        let key = (channel, event);
                        if !self.subscriptions.contains(&key)
                            && self.subscriptions.len() >= setup.subscriptions
                        {
                            Expect::Close(
                                Cause::Code(close_code::POLICY, "too many subscriptions"),
                                false,
                            )
                        } else {
                            Expect::Subscribe(key.0, key.1)
                        }
                    }
                };
                (Incoming::Text(text), expect)
            }
            Sent::Resume { .. } => {
                let (text, _) = self.resume_text(sent);
                let expect = if setup.control {
                    Expect::ErrorFrame
                } else {
                    deliver_text(&text)
                };
                (Incoming::Text(text), expect)
            }
            Sent::Close | Sent::Error(_) | Sent::End => unreachable!("not a message"),
        }
    }

    /// A resume message's text, and the channel it names if the socket
    /// serves it.
    fn resume_text(&self, sent: &Sent) -> (String, Option<usize>) {
        let Sent::Resume { position, naming } = sent else {
            unreachable!("not a resume message")
        };
        let mut message = serde_json::json!({"action": "resume"});
        if *position {
            message["position"] = "p-7".into();
        }
        let channel = match naming {
            Naming::Omitted => (self.setup.channels == 1).then_some(0),
            Naming::Served(n) => {
                let index = n % self.setup.channels;
                message["channel"] = CHANNELS[index].into();
                Some(index)
            }
            Naming::Unknown => {
                message["channel"] = "elsewhere".into();
                None
            }
        };
        (message.to_string(), channel)
    }

    /// The rules for the first message of a socket whose events wait for
    /// it (pings and pongs aside).
    fn expect_first_message(&self, sent: &Sent) -> (Incoming, Expect) {
        match sent {
            Sent::Resume { position, .. } => {
                let (text, channel) = self.resume_text(sent);
                let expect = match channel {
                    // Still waiting, for a channel it serves.
                    None => Expect::ErrorFrame,
                    Some(index) => {
                        Expect::SubscribeEvents(position.then(|| (index, "p-7".to_string())))
                    }
                };
                (Incoming::Text(text), expect)
            }
            other => {
                let (message, _) = self.expect_message(other);
                (message, Expect::SubscribeEvents(None))
            }
        }
    }

    /// The driver reads one item of the client's stream.
    fn read(&mut self, sent: Sent) {
        assert!(
            self.session.wants_read(),
            "read while wants_read() is false"
        );
        let now = self.now;
        match sent {
            Sent::Close => self.input("close", Expect::Close(Cause::Peer, false), |s| {
                s.handle_message(now, Incoming::Close)
            }),
            Sent::End => self.input("end of stream", Expect::Close(Cause::Peer, false), |s| {
                s.handle_end_of_stream()
            }),
            Sent::Error(error) => {
                let cause = match &error {
                    ReadError::InvalidUtf8(_) => Cause::Code(close_code::INVALID_PAYLOAD, ""),
                    ReadError::TooBig(_) => Cause::Code(close_code::TOO_BIG, ""),
                    ReadError::Protocol(_) => Cause::Code(close_code::PROTOCOL, ""),
                    ReadError::ConnectionLost(_) => Cause::Lost,
                    other => panic!("a read error this test does not know: {other:?}"),
                };
                self.input(error.clone(), Expect::Close(cause, false), |s| {
                    s.handle_read_error(error)
                })
            }
            sent => {
                let awaiting = matches!(self.events, ModelEvents::AwaitingFirstMessage)
                    && !matches!(sent, Sent::Alive);
                let (message, expect) = if awaiting {
                    self.first = Some(sent.clone());
                    self.expect_first_message(&sent)
                } else {
                    self.expect_message(&sent)
                };
                // Messages over the limit within the last second (this one
                // included): only then may the rate limit close.
                while self.fed.front().is_some_and(|t| now - *t >= SECOND) {
                    self.fed.pop_front();
                }
                self.fed.push_back(now);
                let expect = match self.setup.per_second {
                    Some(limit) if self.fed.len() > limit as usize => {
                        Expect::Either(Box::new(rate_close()), Box::new(expect))
                    }
                    _ => expect,
                };
                self.heard = true;
                self.input(message.clone(), expect, |s| s.handle_message(now, message));
                let rate_closed = matches!(
                    self.session.close_reason(),
                    Some(CloseReason::Rejected(_, why)) if why.starts_with("too many messages")
                );
                if !rate_closed {
                    self.admit(now);
                }
            }
        }
    }

    /// A message the rate limit let through. The limit is a token bucket
    /// (a burst of `n`, then `n` per second): over any stretch from an
    /// earlier admitted message to now, at most `n + n·T` were admitted
    /// (strict, checked over the last few seconds), and so at most twice
    /// the limit within any second.
    fn admit(&mut self, now: Instant) {
        let Some(limit) = self.setup.per_second else {
            return;
        };
        let horizon = if self.strict_rate { 4 * SECOND } else { SECOND };
        while self.admitted.front().is_some_and(|t| now - *t >= horizon) {
            self.admitted.pop_front();
        }
        self.admitted.push_back(now);
        let n = f64::from(limit);
        let total = self.admitted.len();
        for (i, since) in self.admitted.iter().enumerate() {
            let stretch = (now - *since).as_secs_f64();
            let bound = if self.strict_rate {
                n + n * stretch + 1e-6
            } else if stretch < 1.0 {
                2.0 * n
            } else {
                continue;
            };
            let count = total - i;
            if count as f64 > bound {
                self.fail(format!(
                    "{count} messages admitted within {stretch:.3} s, limit {limit} per second (bound {bound:.2})"
                ));
            }
        }
    }

    /// The driver's timer fired: the session is told the time.
    fn timeout(&mut self) {
        let now = self.now;
        let expect = match self.session.poll_timeout() {
            // Going away: the handlers' time is up.
            Some(due) if due <= now && self.going_away.is_some() => going_away_close(),
            Some(due) if due <= now => {
                let silent = !self.heard && !self.sent;
                if !self.reading() || !silent {
                    // Nothing was read because nothing could be, or the
                    // client spoke: a new ping, no verdict.
                    Expect::Ping
                } else if self.paused {
                    // Silent, and not read for part of the interval: the
                    // session may judge either way.
                    Expect::Either(
                        Box::new(Expect::Ping),
                        Box::new(Expect::Close(
                            Cause::Code(close_code::GOING_AWAY, "no answer to pings"),
                            false,
                        )),
                    )
                } else {
                    Expect::Close(
                        Cause::Code(close_code::GOING_AWAY, "no answer to pings"),
                        false,
                    )
                }
            }
            _ => Expect::Nothing,
        };
        self.input("timeout", expect, |s| s.handle_timeout(now));
        if let Some(next) = self.session.poll_timeout() {
            if next <= now {
                self.fail(format!("after handle_timeout, due {next:?} is past"));
            }
        }
    }

    /// The driver's loop: timers that are due, then reading while the
    /// session wants to.
    fn pump(&mut self) {
        while !self.closed {
            if self
                .session
                .poll_timeout()
                .is_some_and(|due| due <= self.now)
            {
                self.timeout();
            } else if self.session.wants_read() && !self.inbox.is_empty() {
                let sent = self.inbox.pop_front().unwrap();
                self.read(sent);
            } else {
                break;
            }
        }
    }

    fn step(&mut self, step: Step) {
        let target = self.now + step.wait;
        if step.precise {
            while let Some(due) = self.session.poll_timeout().filter(|due| *due < target) {
                self.now = due;
                self.pump();
            }
        }
        self.now = target;
        if self.order == Order::TimerFirst {
            self.pump();
        }
        match step.event {
            Event::Client(sent) => {
                // An answer in time: before the next ping is due (a timer
                // that fires late does not make a late answer timely).
                if self.session.poll_timeout().is_none_or(|due| self.now < due) {
                    self.sent = true;
                }
                self.inbox.push_back(sent);
            }
            Event::Handler(handled) if self.in_flight > 0 => {
                self.in_flight -= 1;
                let (outcome, expect) = match handled {
                    // The last handler the server was waiting for.
                    Handled::Done if self.going_away.is_some() && self.in_flight == 0 => {
                        (HandlerOutcome::Done, going_away_close())
                    }
                    Handled::Done => (HandlerOutcome::Done, Expect::Nothing),
                    Handled::Failed => (
                        HandlerOutcome::Failed("boom".into()),
                        Expect::Close(
                            Cause::Code(close_code::INTERNAL_ERROR, "the application failed"),
                            true,
                        ),
                    ),
                    Handled::Panicked => (
                        HandlerOutcome::Panicked,
                        Expect::Close(
                            Cause::Code(close_code::INTERNAL_ERROR, "the application failed"),
                            true,
                        ),
                    ),
                };
                self.input(handled, expect, |s| s.handler_finished(outcome));
            }
            Event::Handler(_) => {}
            Event::Subscribe(subscribed) => {
                if let Some((channel, event)) = self.pending.take() {
                    let (outcome, expect) = match subscribed {
                        Subscribed::Added | Subscribed::AlreadyWas => {
                            if !self.closed {
                                self.subscriptions.insert((channel, event));
                            }
                            let added = matches!(subscribed, Subscribed::Added);
                            (SubscribeOutcome::Subscribed(added), Expect::Nothing)
                        }
                        Subscribed::Refused => (SubscribeOutcome::Refused, Expect::ErrorFrame),
                        Subscribed::TooLong => (
                            SubscribeOutcome::Failed(SubscribeError::EventNameTooLong {
                                len: 300,
                                max: 256,
                            }),
                            Expect::ErrorFrame,
                        ),
                        Subscribed::Stopped => (
                            SubscribeOutcome::Failed(SubscribeError::Stopped {
                                channel: CHANNELS[channel].into(),
                            }),
                            Expect::Close(Cause::Code(close_code::GOING_AWAY, ""), true),
                        ),
                        Subscribed::CarrierClosed(reason) => (
                            SubscribeOutcome::Failed(SubscribeError::CarrierClosed {
                                carrier: CarrierId::next(),
                                reason: reason.clone(),
                            }),
                            Expect::Close(Cause::Exact(reason), false),
                        ),
                    };
                    self.input("subscribe finished", expect, |s| {
                        s.subscribe_finished(outcome)
                    });
                }
            }
            Event::Events(subscribed) => {
                if let ModelEvents::Subscribing(held) = &mut self.events {
                    let held = held.take();
                    self.events = ModelEvents::Subscribed;
                    let (outcome, expect) = match subscribed {
                        Subscribed::Added | Subscribed::AlreadyWas | Subscribed::Refused => {
                            // The first message is handled now, by the rules
                            // of the moment.
                            let expect = match &held {
                                Some(sent) if !self.closed => self.expect_message(sent).1,
                                _ => Expect::Nothing,
                            };
                            (Ok(()), expect)
                        }
                        Subscribed::TooLong => (
                            Err(SubscribeError::EventNameTooLong { len: 300, max: 256 }),
                            Expect::Close(
                                Cause::Code(
                                    close_code::INTERNAL_ERROR,
                                    "the server is misconfigured",
                                ),
                                true,
                            ),
                        ),
                        Subscribed::Stopped => (
                            Err(SubscribeError::Stopped {
                                channel: CHANNELS[0].into(),
                            }),
                            Expect::Close(Cause::Code(close_code::GOING_AWAY, ""), true),
                        ),
                        Subscribed::CarrierClosed(reason) => (
                            Err(SubscribeError::CarrierClosed {
                                carrier: CarrierId::next(),
                                reason: reason.clone(),
                            }),
                            Expect::Close(Cause::Exact(reason), false),
                        ),
                    };
                    self.input("events subscribed", expect, |s| {
                        s.events_subscribed(outcome)
                    });
                }
            }
            Event::GoAway => {
                let now = self.now;
                // With messages in the handler's hands, it waits for them
                // (within the close timeout) before closing.
                let expect = if self.going_away.is_some() || (self.in_flight > 0 && !self.closed) {
                    if self.going_away.is_none() {
                        self.going_away = Some(now + CarrierConfig::default().close_timeout);
                    }
                    Expect::Nothing
                } else {
                    going_away_close()
                };
                self.input("go away", expect, |s| s.go_away(now, "shutting down"));
            }
            Event::CarrierClosed => {
                let reason = CloseReason::SinkError("gone".into());
                let was_closed = self.session.is_closed();
                // The session emits nothing: the driver knows already.
                self.closed = true;
                self.input("carrier closed", Expect::Nothing, |s| {
                    s.handle_carrier_closed(reason.clone())
                });
                if !was_closed {
                    assert_eq!(self.session.close_reason(), Some(&reason));
                }
            }
        }
        if self.closed {
            // A hand-written driver may still tell a closed session the
            // time: nothing happens.
            let now = self.now;
            self.input("timeout after the close", Expect::Nothing, |s| {
                s.handle_timeout(now)
            });
        }
        self.pump();
        if let Some(due) = self.session.poll_timeout() {
            if due <= self.now {
                self.fail(format!("due {due:?} is past after the step"));
            }
        }
        if self.session.poll_action().is_some() {
            self.fail("an action left behind".into());
        }
    }
}

// ---------------------------------------------------------------------------
// Strategies.

fn setup() -> impl Strategy<Value = Setup> {
    (
        any::<bool>(),
        any::<bool>(),
        0..4usize,
        0..4usize,
        prop_oneof![1 => Just(None), 2 => (2..12u32).prop_map(Some)],
        prop_oneof![
            1 => Just(Duration::ZERO),
            3 => prop::sample::select(vec![1_000u64, 2_500, 5_000]).prop_map(Duration::from_millis),
        ],
        1..=3usize,
        prop::bool::weighted(0.3),
    )
        .prop_map(
            |(control, handler, subscriptions, in_flight, per_second, ping, channels, resume)| {
                Setup {
                    control,
                    handler,
                    subscriptions,
                    in_flight,
                    per_second,
                    ping,
                    channels,
                    resume,
                }
            },
        )
}

fn naming() -> impl Strategy<Value = Naming> {
    prop_oneof![
        2 => Just(Naming::Omitted),
        2 => (0..3usize).prop_map(Naming::Served),
        1 => Just(Naming::Unknown),
    ]
}

fn read_error() -> impl Strategy<Value = ReadError> {
    prop_oneof![
        Just(ReadError::InvalidUtf8("invalid utf-8".into())),
        Just(ReadError::TooBig("64 KiB".into())),
        Just(ReadError::Protocol("unmasked frame".into())),
        Just(ReadError::ConnectionLost("reset by peer".into())),
    ]
}

/// Text that is no control message: arbitrary (without the word `action`,
/// so that it cannot claim to be one), and JSON the application reads.
fn other_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(any::<char>(), 0..24)
            .prop_map(|chars| chars.into_iter().collect::<String>())
            .prop_filter("not a control message", |t| !t.contains("action")),
        1 => prop::sample::select(vec![
            r#"{"type":"request","key":1,"method":"GET","href":"/api/"}"#,
            "[1,2]",
            r#"["subscribe","e0"]"#,
            "{}",
            "  {not json",
            "",
        ])
        .prop_map(String::from),
    ]
}

fn binary() -> BoxedStrategy<Sent> {
    prop::collection::vec(any::<u8>(), 0..8)
        .prop_map(Sent::Binary)
        .boxed()
}

/// One of the weighted strategies, leaving out those of weight zero.
fn weighted(options: Vec<(u32, BoxedStrategy<Sent>)>) -> BoxedStrategy<Sent> {
    let options: Vec<_> = options.into_iter().filter(|(w, _)| *w > 0).collect();
    prop::strategy::Union::new_weighted(options).boxed()
}

/// What the client sends and a session with `setup` lives on.
fn benign(setup: &Setup) -> BoxedStrategy<Sent> {
    // Without a handler, binary closes; with control messages and no
    // handler, other text does: those are `fatal`.
    let binary_lives = setup.handler;
    let other_lives = setup.handler || !setup.control;
    weighted(vec![
        (
            6,
            (any::<bool>(), 0..EVENTS.len(), naming())
                .prop_map(|(subscribe, event, naming)| Sent::Control {
                    subscribe,
                    event,
                    naming,
                })
                .boxed(),
        ),
        (
            if other_lives { 3 } else { 0 },
            other_text().prop_map(Sent::Other).boxed(),
        ),
        (if binary_lives { 1 } else { 0 }, binary()),
        (4, Just(Sent::Alive).boxed()),
        (
            // Later ones get an error frame, or go to the application.
            2,
            (any::<bool>(), naming())
                .prop_map(|(position, naming)| Sent::Resume { position, naming })
                .boxed(),
        ),
    ])
}

/// What the client sends that ends a session with `setup`.
fn fatal(setup: &Setup) -> BoxedStrategy<Sent> {
    let malformed = prop::sample::select(vec![
        r#"{"action":"jump","event":"e0"}"#,
        r#"{"action":"subscribe"}"#,
        r#"{"action":"subscribe","event":"e0","extra":true}"#,
        r#"{"action":"subscribe","event":7}"#,
        r#"{"action":1}"#,
        r#"{"action":"SUBSCRIBE","event":"e0"}"#,
        r#"{"action":"unsubscribe","event":"e0","channel":5}"#,
    ]);
    weighted(vec![
        (1, malformed.prop_map(Sent::Malformed).boxed()),
        (1, Just(Sent::Close).boxed()),
        (1, read_error().prop_map(Sent::Error).boxed()),
        (1, Just(Sent::End).boxed()),
        (u32::from(!setup.handler), binary()),
        (
            u32::from(setup.control && !setup.handler),
            other_text().prop_map(Sent::Other).boxed(),
        ),
    ])
}

/// Weighted so that a session lives for a few dozen steps.
fn event(setup: &Setup) -> impl Strategy<Value = Event> {
    prop_oneof![
        40 => benign(setup).prop_map(Event::Client),
        2 => fatal(setup).prop_map(Event::Client),
        15 => prop_oneof![
            20 => Just(Handled::Done),
            1 => Just(Handled::Failed),
            1 => Just(Handled::Panicked),
        ]
        .prop_map(Event::Handler),
        15 => prop_oneof![
            16 => Just(Subscribed::Added),
            4 => Just(Subscribed::AlreadyWas),
            4 => Just(Subscribed::Refused),
            2 => Just(Subscribed::TooLong),
            1 => Just(Subscribed::Stopped),
            1 => prop::sample::select(vec![
                CloseReason::Overflow,
                CloseReason::SinkError("broken pipe".into()),
                CloseReason::Application(4000, "bye".into()),
                CloseReason::Closed,
            ])
            .prop_map(Subscribed::CarrierClosed),
        ]
        .prop_map(Event::Subscribe),
        5 => prop_oneof![
            16 => Just(Subscribed::Added),
            1 => Just(Subscribed::TooLong),
            1 => Just(Subscribed::Stopped),
            1 => Just(Subscribed::CarrierClosed(CloseReason::Overflow)),
        ]
        .prop_map(Event::Events),
        1 => prop_oneof![Just(Event::GoAway), Just(Event::CarrierClosed)],
    ]
}

fn step(setup: &Setup) -> impl Strategy<Value = Step> {
    (
        prop_oneof![
            6 => Just(0u64),
            10 => 1..400u64,
            3 => 400..3_000u64,
            1 => 3_000..8_000u64,
        ],
        prop::bool::weighted(0.7),
        event(setup),
    )
        .prop_map(|(wait, precise, event)| Step {
            wait: Duration::from_millis(wait),
            precise,
            event,
        })
}

fn script() -> impl Strategy<Value = (Setup, Vec<Step>)> {
    setup().prop_flat_map(|setup| {
        let steps = prop::collection::vec(step(&setup), 1..60);
        (Just(setup), steps)
    })
}

fn run(setup: Setup, steps: Vec<Step>, order: Order, strict_rate: bool) {
    let mut harness = Harness::new(setup, order, strict_rate);
    for step in steps {
        harness.step += 1;
        harness.step(step);
    }
}

/// Cases of the main property: about two seconds in a debug build (most
/// of it generating the scripts). `PROPTEST_CASES` overrides every count.
const CASES: u32 = 1_000;

fn config(cases: u32) -> ProptestConfig {
    let default = ProptestConfig::default();
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() {
        default.cases
    } else {
        cases
    };
    ProptestConfig {
        cases,
        // No regression files outside tests/: a failure prints its input.
        failure_persistence: None,
        ..default
    }
}

// ---------------------------------------------------------------------------
// The properties.

proptest! {
    #![proptest_config(config(CASES))]

    /// Random options, client scripts, clock steps and driver outcomes:
    /// no panic; every input produces what the rules say (close codes
    /// included); nothing after the close; the limits hold; the timer is
    /// never in the past. The driver's timer fires before an event due at
    /// the same instant.
    #[test]
    fn the_session_follows_its_rules((setup, steps) in script()) {
        run(setup, steps, Order::TimerFirst, false);
    }
}

proptest! {
    #![proptest_config(config(300))]

    /// A client that answers every ping within the interval, on a session
    /// that is always reading: one ping per interval, to the instant, and
    /// the connection stays open.
    #[test]
    fn an_answering_client_is_pinged_once_per_interval(
        ping in (100..5_000u64).prop_map(Duration::from_millis),
        answers in prop::collection::vec(0.0..1.0f64, 1..40),
        chatter in prop::collection::vec(0.0..1.0f64, 0..40),
    ) {
        let start = Instant::now();
        let options = SocketOptions::new(["e"]).ping_interval(ping);
        let mut session = Session::new(&options, names(&["pubsub"]), start);
        // The client's own messages, at random instants of the first
        // intervals.
        let mut chatter: Vec<Duration> = chatter
            .iter()
            .map(|f| ping.mul_f64(f * answers.len() as f64))
            .collect();
        chatter.sort();
        let mut chatter = chatter.into_iter().peekable();
        let mut last = start;
        for (k, answer) in answers.iter().enumerate() {
            let due = start + ping * (k as u32 + 1);
            prop_assert_eq!(session.poll_timeout(), Some(due));
            while let Some(at) = chatter.next_if(|at| start + *at < due) {
                last = last.max(start + at);
                session.handle_message(last, text("chatter"));
                prop_assert!(session.poll_action().is_none());
            }
            session.handle_timeout(due);
            prop_assert_eq!(actions(&mut session), [Action::Ping]);
            // The pong, strictly before the next ping is due.
            let pong = due + ping.mul_f64(*answer).min(ping - Duration::from_millis(1));
            last = pong;
            session.handle_message(pong, Incoming::Alive);
            prop_assert!(session.poll_action().is_none());
            prop_assert!(!session.is_closed());
        }
    }
}

proptest! {
    #![proptest_config(config(CASES))]

    /// The driver's poll loop handles a finished handler before its timer,
    /// and the timer before reading: a handler that finishes when the ping
    /// is due must not make the session judge a client whose pong is still
    /// unread as silent (it did, with 1001, before the session remembered
    /// that it had paused reading).
    #[test]
    fn the_session_follows_its_rules_in_the_drivers_order((setup, steps) in script()) {
        run(setup, steps, Order::AsTheDriver, false);
    }

    /// The rate limit is a token bucket: over any stretch of T seconds, at
    /// most `n + n·T` messages pass (fixed one-second windows, before, let
    /// up to `2n` through within 100 ms).
    #[test]
    fn the_rate_limit_is_a_token_bucket((setup, steps) in script()) {
        run(setup, steps, Order::TimerFirst, true);
    }
}

// ---------------------------------------------------------------------------
// The bugs the properties found, as examples.

/// The in-flight limit paused reading, the client answered the ping, and
/// the handler finishes just as the next ping is due: the driver tells the
/// session about the handler, then the time, and reads the pong only after
/// the session closed for "no answer to pings".
#[test]
fn a_pong_left_unread_while_the_application_was_busy_is_not_silence() {
    let start = Instant::now();
    let interval = Duration::from_secs(30);
    let mut session = busy_session(start, interval);
    session.handle_timeout(start + interval);
    assert_eq!(actions(&mut session), [Action::Ping]);
    // The client answers at once; the pong waits, unread.
    assert!(!session.wants_read());
    // At the second ping the handler is done and, in the same poll, the
    // timer is due (Connection polls handlers before the timer and the
    // timer before the stream).
    session.handler_finished(HandlerOutcome::Done);
    session.handle_timeout(start + 2 * interval);
    assert_eq!(
        actions(&mut session),
        [Action::Ping],
        "the client was not read since the ping: it cannot be judged silent"
    );
}

/// Limit 3 per second: a burst of three, then one every third of a
/// second; three more 100 ms later are too many. (With fixed one-second
/// windows, three just before a window's end and three just after passed.)
#[test]
fn the_rate_limit_holds_within_any_second() {
    let start = Instant::now();
    let options =
        SocketOptions::new(["e"]).limits(Limits::default().max_messages_per_second(Some(3)));
    let mut session = Session::new(&options, names(&["pubsub"]), start);
    for at in [900, 900, 900, 1_000, 1_000, 1_000] {
        session.handle_message(start + Duration::from_millis(at), Incoming::Alive);
    }
    assert!(
        session.is_closed(),
        "six messages within 100 ms, limit 3 per second"
    );
}

/// Subscribing again to an event the client holds is not a new
/// subscription (the limit lets it through), yet while it is pending
/// `client_subscriptions()` counts it twice, over the limit.
#[test]
fn a_repeated_subscription_is_counted_once() {
    let start = Instant::now();
    let options = SocketOptions::new(["e"])
        .control_messages(true)
        .limits(Limits::default().max_subscriptions(1));
    let mut session = Session::new(&options, names(&["pubsub"]), start);
    session.handle_message(start, subscribe("a"));
    actions(&mut session);
    session.subscribe_finished(SubscribeOutcome::Subscribed(true));
    session.handle_message(start, subscribe("a"));
    assert!(matches!(
        actions(&mut session).as_slice(),
        [Action::Subscribe { .. }]
    ));
    assert_eq!(session.client_subscriptions(), 1, "limit 1, one event");
}

/// A server going away waits for the handler's messages in flight (so
/// their replies reach the client), within the close timeout, then closes
/// with 1001 after what was queued.
#[test]
fn going_away_waits_for_the_handler_within_the_close_timeout() {
    let start = Instant::now();
    let options = SocketOptions::new(["e"]).on_message(ignore);
    let mut session = Session::new(&options, names(&["pubsub"]), start);
    session.handle_message(start, text("a request"));
    assert_eq!(actions(&mut session).len(), 1, "delivered");
    session.go_away(start, "the server is shutting down");
    assert_eq!(actions(&mut session), [], "the request is still in flight");
    assert!(!session.wants_read(), "nothing more is read");
    session.handler_finished(HandlerOutcome::Done);
    let (reason, after_queued) = the_close(&mut session);
    assert_eq!(code(&reason), Some(close_code::GOING_AWAY));
    assert!(after_queued, "the reply goes out before the close frame");

    // A handler that never finishes: closed at the close timeout.
    let mut session = Session::new(&options, names(&["pubsub"]), start);
    session.handle_message(start, text("a slow request"));
    actions(&mut session);
    session.go_away(start, "the server is shutting down");
    let deadline = start + CarrierConfig::default().close_timeout;
    assert_eq!(session.poll_timeout(), Some(deadline));
    session.handle_timeout(deadline - Duration::from_millis(1));
    assert_eq!(actions(&mut session), []);
    session.handle_timeout(deadline);
    let (reason, _) = the_close(&mut session);
    assert_eq!(code(&reason), Some(close_code::GOING_AWAY));
}
