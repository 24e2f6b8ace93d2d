//! The conformance suite: every rule of dispatch, written once as a generic
//! async function over [`TestRuntime`], and run unchanged on tokio,
//! async-std and smol by the test files in `tests/tests/`, each of which is
//! one line:
//!
//! ```text
//! use tbone_dispatch_tests::Tokio;
//! tbone_dispatch_tests::conformance_suite!(Tokio);
//! ```
//!
//! Waits are bounded ([`within`], [`eventually`]) and fail the test with a
//! message naming what never happened; no test uses a sleep as an
//! assertion of timing.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use futures::channel::mpsc;
use futures::future::{self, Either};
use futures::stream::BoxStream;
use futures::{Sink, StreamExt};
use tbone_dispatch::websocket as ws_core;
use tbone_dispatch::{
    Carrier, CarrierConfig, Channel, ChannelError, Channels, CloseReason, Frame, HandshakeLimits,
    MemoryBackend, Runtime, SocketOptions, SpawnError,
};

pub mod backends;
pub mod browser;
pub mod carriers;
pub mod channels;
pub mod duplex;
pub mod mongo;
pub mod mongo_commands;
pub mod redis;
pub mod resume;
pub mod resume_socket;
pub mod resume_stored;
pub mod signals;
pub mod soak;
pub mod sse;
pub mod support;
pub mod websocket;

pub use tbone_dispatch_async_std::AsyncStd;
pub use tbone_dispatch_smol::Smol;
pub use tbone_dispatch_tokio::Tokio;

/// The in-memory channel on runtime `R` (each runtime crate's
/// `MemoryChannel`).
pub type Mem<R> = Channel<MemoryBackend, R>;

/// How long any single wait of the suite may take before the test fails.
/// Generous: nothing in the suite should take more than a few milliseconds.
pub const WAIT: Duration = Duration::from_secs(5);

/// What the suite needs from a runtime beyond the core's [`Runtime`]: a way
/// to run a test body, a name (to keep channel names unique per runtime),
/// and the items the runtime crate itself exports, so the suite also checks
/// that those aliases behave like the generic core.
pub trait TestRuntime: Runtime + Default + tbone_dispatch_redis::Connect {
    /// Short name of the runtime, used in channel names.
    fn name() -> &'static str;

    /// Runs a test body to completion.
    fn block_on<F: Future>(future: F) -> F::Output;

    /// The runtime crate's exported `spawn` (fire-and-forget).
    fn spawn_detached<F>(future: F) -> Result<(), SpawnError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static;

    /// The runtime crate's `MemoryChannel::named`.
    fn memory_channel(name: &str) -> Result<Mem<Self>, ChannelError>;

    /// The runtime crate's `Carrier::from_sink`.
    fn carrier_from_sink<S>(sink: S) -> Result<Carrier<Self>, SpawnError>
    where
        S: Sink<Frame> + Send + Unpin + 'static,
        S::Error: fmt::Display;

    /// Serves websockets on `channels` at a fresh port of 127.0.0.1, one
    /// task per connection, as `how` says: this runtime's TCP listener and
    /// the runtime crate's `websocket` functions with `options`.
    fn spawn_server(
        how: Serving,
        channels: Channels<Self>,
        options: SocketOptions,
    ) -> websocket::WsServer;

    /// [`TestRuntime::spawn_server`] with [`Serving::Accept`]: the runtime
    /// crate's `websocket::accept` (origin policy, authorizer, subscription
    /// before the handshake response), then `Accepted::serve`.
    fn spawn_ws_server(
        channels: impl Into<Channels<Self>>,
        options: SocketOptions,
    ) -> websocket::WsServer {
        Self::spawn_server(Serving::Accept, channels.into(), options)
    }

    /// [`TestRuntime::spawn_server`] with [`Serving::Upgraded`]: the
    /// runtime crate's bare `websocket::handshake`, then `websocket::serve`
    /// on the upgraded socket.
    fn spawn_upgraded_ws_server(
        channels: impl Into<Channels<Self>>,
        options: SocketOptions,
    ) -> websocket::WsServer {
        Self::spawn_server(Serving::Upgraded, channels.into(), options)
    }

    /// A TCP connection to `addr` made with this runtime's networking, and
    /// its local address.
    fn connect_tcp(
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<(websocket::ClientIo, SocketAddr)>> + Send;

    /// A fresh port of 127.0.0.1 and the connections to it, accepted with
    /// this runtime's networking: for the servers the suite writes itself
    /// (the SSE tests' HTTP/1.1 loop).
    fn accept_loopback() -> (SocketAddr, Connections);
}

/// Connections accepted by [`TestRuntime::accept_loopback`], with each
/// client's address.
pub type Connections = BoxStream<'static, io::Result<(websocket::ClientIo, SocketAddr)>>;

impl TestRuntime for Tokio {
    fn name() -> &'static str {
        "tokio"
    }

    fn block_on<F: Future>(future: F) -> F::Output {
        // A multi-thread runtime per test, so receivers and carriers really
        // run in parallel with the test body.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("building a tokio runtime");
        let output = runtime.block_on(future);
        runtime.shutdown_timeout(Duration::from_secs(1));
        output
    }

    fn spawn_detached<F>(future: F) -> Result<(), SpawnError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        tbone_dispatch_tokio::spawn(future).map(drop)
    }

    fn memory_channel(name: &str) -> Result<Mem<Self>, ChannelError> {
        tbone_dispatch_tokio::MemoryChannel::named(name)
    }

    fn carrier_from_sink<S>(sink: S) -> Result<Carrier<Self>, SpawnError>
    where
        S: Sink<Frame> + Send + Unpin + 'static,
        S::Error: fmt::Display,
    {
        tbone_dispatch_tokio::Carrier::from_sink(sink)
    }

    fn spawn_server(
        how: Serving,
        channels: Channels<Self>,
        options: SocketOptions,
    ) -> websocket::WsServer {
        use tbone_dispatch_tokio::websocket::{accept, handshake, serve};
        serve_loopback(
            how,
            channels,
            options,
            |listener| tokio::net::TcpListener::from_std(listener).expect("adopting the listener"),
            |listener: tokio::net::TcpListener| async move { (listener.accept().await, listener) },
            WsFunctions {
                accept,
                handshake,
                serve,
            },
        )
    }

    async fn connect_tcp(addr: SocketAddr) -> io::Result<(websocket::ClientIo, SocketAddr)> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let local = tcp.local_addr()?;
        Ok((
            Box::new(async_tungstenite::tokio::TokioAdapter::new(tcp)),
            local,
        ))
    }

    fn accept_loopback() -> (SocketAddr, Connections) {
        let (listener, addr) = websocket::bind_loopback();
        let listener = tokio::net::TcpListener::from_std(listener).expect("adopting the listener");
        let incoming = futures::stream::unfold(listener, |listener| async move {
            let accepted = listener.accept().await.map(|(tcp, peer)| {
                let io: websocket::ClientIo =
                    Box::new(async_tungstenite::tokio::TokioAdapter::new(tcp));
                (io, peer)
            });
            Some((accepted, listener))
        });
        (addr, incoming.boxed())
    }
}

/// How a test server ([`TestRuntime::spawn_server`]) serves each
/// connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serving {
    /// `websocket::accept`: the upgrade request read and judged (origin
    /// policy, authorizer: refused with an HTTP status), the socket
    /// subscribed, the handshake completed; then `Accepted::serve`.
    Accept,
    /// `websocket::handshake` (bare: no upgrade request judged, nothing
    /// subscribed before the response), then `websocket::serve` on the
    /// upgraded socket.
    Upgraded,
}

/// A runtime crate's `websocket::{accept, handshake, serve}` for its TCP
/// stream, as [`serve_loopback`] calls them.
struct WsFunctions<A, H, S> {
    accept: A,
    handshake: H,
    serve: S,
}

/// The body of every runtime's [`TestRuntime::spawn_server`]: a listener
/// on a fresh port of 127.0.0.1, adopted by the runtime (`adopt`) and
/// awaited with `accept_tcp` (which hands the listener back with the
/// connection), whose connections are each served as `how` says with the
/// runtime crate's websocket functions `ws`.
fn serve_loopback<R, L, N, NF, C, A, AF, IO, H, HF, WS, S, SF>(
    how: Serving,
    channels: Channels<R>,
    options: SocketOptions,
    adopt: impl FnOnce(std::net::TcpListener) -> L,
    accept_tcp: N,
    ws: WsFunctions<A, H, S>,
) -> websocket::WsServer
where
    R: TestRuntime,
    L: Send + 'static,
    N: Fn(L) -> NF + Send + 'static,
    NF: Future<Output = (io::Result<(C, SocketAddr)>, L)> + Send + 'static,
    C: Send + 'static,
    A: Fn(C, Channels<R>, SocketOptions) -> AF + Copy + Send + 'static,
    AF: Future<Output = Result<ws_core::Accepted<R, IO>, ws_core::AcceptError>> + Send + 'static,
    IO: futures::AsyncRead + futures::AsyncWrite + Unpin + Send + 'static,
    H: Fn(C, HandshakeLimits) -> HF + Copy + Send + 'static,
    HF: Future<Output = Result<WS, ws_core::AcceptError>> + Send + 'static,
    S: Fn(WS, Channels<R>, SocketOptions) -> SF + Copy + Send + 'static,
    SF: Future<Output = CloseReason> + Send + 'static,
{
    let WsFunctions {
        accept,
        handshake,
        serve,
    } = ws;
    let (listener, addr) = websocket::bind_loopback();
    let incoming = futures::stream::unfold(adopt(listener), move |listener| {
        let next = accept_tcp(listener);
        async move { Some(next.await) }
    });
    websocket::start_server::<R, _, _, _, _>(addr, incoming, move |tcp| {
        let (channels, options) = (channels.clone(), options.clone());
        async move {
            match how {
                Serving::Accept => {
                    let accepted = accept(tcp, channels, options)
                        .await
                        .map_err(websocket::NotServed::from)?;
                    Ok(accepted.serve().await)
                }
                Serving::Upgraded => {
                    let socket = handshake(tcp, options.handshake_limits())
                        .await
                        .map_err(websocket::NotServed::from)?;
                    Ok(serve(socket, channels, options).await)
                }
            }
        }
    })
}

/// async-std and smol differ only in names: one implementation for both.
macro_rules! futures_io_runtime {
    ($runtime:ty, $name:literal, $krate:ident, $net:path, $block_on:path, $adopt:expr) => {
        impl TestRuntime for $runtime {
            fn name() -> &'static str {
                $name
            }

            fn block_on<F: Future>(future: F) -> F::Output {
                $block_on(future)
            }

            fn spawn_detached<F>(future: F) -> Result<(), SpawnError>
            where
                F: Future + Send + 'static,
                F::Output: Send + 'static,
            {
                $krate::spawn(future).map(drop)
            }

            fn memory_channel(name: &str) -> Result<Mem<Self>, ChannelError> {
                $krate::MemoryChannel::named(name)
            }

            fn carrier_from_sink<S>(sink: S) -> Result<Carrier<Self>, SpawnError>
            where
                S: Sink<Frame> + Send + Unpin + 'static,
                S::Error: fmt::Display,
            {
                $krate::Carrier::from_sink(sink)
            }

            fn spawn_server(
                how: Serving,
                channels: Channels<Self>,
                options: SocketOptions,
            ) -> websocket::WsServer {
                use $krate::websocket::{accept, handshake, serve};
                use $net as net;
                serve_loopback(
                    how,
                    channels,
                    options,
                    $adopt,
                    |listener: net::TcpListener| async move { (listener.accept().await, listener) },
                    WsFunctions {
                        accept,
                        handshake,
                        serve,
                    },
                )
            }

            async fn connect_tcp(
                addr: SocketAddr,
            ) -> io::Result<(websocket::ClientIo, SocketAddr)> {
                use $net as net;
                let tcp = net::TcpStream::connect(addr).await?;
                let local = tcp.local_addr()?;
                Ok((Box::new(tcp), local))
            }

            fn accept_loopback() -> (SocketAddr, Connections) {
                use $net as net;
                let (listener, addr) = websocket::bind_loopback();
                let adopt = $adopt;
                let listener: net::TcpListener = adopt(listener);
                let incoming = futures::stream::unfold(listener, |listener| async move {
                    let accepted = listener.accept().await.map(|(tcp, peer)| {
                        let io: websocket::ClientIo = Box::new(tcp);
                        (io, peer)
                    });
                    Some((accepted, listener))
                });
                (addr, incoming.boxed())
            }
        }
    };
}

futures_io_runtime!(
    AsyncStd,
    "async-std",
    tbone_dispatch_async_std,
    async_std::net,
    async_std::task::block_on,
    async_std::net::TcpListener::from
);
futures_io_runtime!(
    Smol,
    "smol",
    tbone_dispatch_smol,
    smol::net,
    smol::block_on,
    |listener| smol::net::TcpListener::try_from(listener).expect("adopting the listener")
);

/// Sends the library's `tracing` output to the test's captured output,
/// filtered by `RUST_LOG` (default: warnings). Called by every suite test.
pub fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// Awaits `future`, failing the test with a message naming `what` if it
/// takes longer than `limit` on runtime `R`'s clock.
pub async fn within<R: TestRuntime, F: Future>(
    limit: Duration,
    what: &str,
    future: F,
) -> F::Output {
    let future = std::pin::pin!(future);
    let timer = std::pin::pin!(R::default().sleep(limit));
    match future::select(future, timer).await {
        Either::Left((output, _)) => output,
        Either::Right(_) => panic!(
            "[{}] timed out after {limit:?} waiting for {what}",
            R::name()
        ),
    }
}

/// [`within`] with the suite's generous default limit, [`WAIT`].
pub async fn wait<R: TestRuntime, F: Future>(what: &str, future: F) -> F::Output {
    within::<R, F>(WAIT, what, future).await
}

/// Polls `condition` (every millisecond, on `R`'s timer) until it holds,
/// failing the test after [`WAIT`]. For state that another task changes.
pub async fn eventually<R: TestRuntime>(what: &str, mut condition: impl FnMut() -> bool) {
    let runtime = R::default();
    wait::<R, _>(what, async {
        while !condition() {
            runtime.sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
}

/// A channel name unique to this runtime and this test.
pub fn unique_name<R: TestRuntime>(test: &str) -> String {
    format!("conformance/{}/{test}", R::name())
}

/// A carrier over a futures unbounded channel (the test's "browser"), with
/// `config`.
pub fn new_carrier_with<R: TestRuntime>(
    config: CarrierConfig,
) -> (Carrier<R>, mpsc::UnboundedReceiver<Frame>) {
    let (sink, client) = mpsc::unbounded::<Frame>();
    let carrier = Carrier::new(&R::default(), sink, config).expect("spawning a carrier");
    (carrier, client)
}

/// A carrier with the default configuration, and its client.
pub fn new_carrier<R: TestRuntime>() -> (Carrier<R>, mpsc::UnboundedReceiver<Frame>) {
    new_carrier_with::<R>(CarrierConfig::default())
}

/// The next frame a client receives, within [`WAIT`].
pub async fn next_frame<R: TestRuntime>(
    client: &mut mpsc::UnboundedReceiver<Frame>,
    what: &str,
) -> Frame {
    match wait::<R, _>(what, client.next()).await {
        Some(frame) => frame,
        None => panic!(
            "[{}] the carrier's sink was closed while waiting for {what}",
            R::name()
        ),
    }
}

/// The next `n` frames a client receives, within [`WAIT`] in all.
pub async fn next_frames<R: TestRuntime>(
    client: &mut mpsc::UnboundedReceiver<Frame>,
    n: usize,
    what: &str,
) -> Vec<Frame> {
    let mut frames = Vec::with_capacity(n);
    wait::<R, _>(what, async {
        while frames.len() < n {
            match client.next().await {
                Some(frame) => frames.push(frame),
                None => panic!(
                    "[{}] the carrier's sink was closed after {} of {n} frames ({what})",
                    R::name(),
                    frames.len()
                ),
            }
        }
    })
    .await;
    frames
}

/// Whether the client has nothing waiting right now (without waiting).
pub fn nothing_received(client: &mut mpsc::UnboundedReceiver<Frame>) -> bool {
    client.try_recv().is_err()
}

/// A TBone frame, parsed: `(event name, data)`. Fails the test if the frame
/// is not `{"type":"event","payload":{"name":..,"data":..}}`.
pub fn parse_frame(frame: &Frame) -> (String, serde_json::Value) {
    let value: serde_json::Value = serde_json::from_str(frame.as_str())
        .unwrap_or_else(|e| panic!("frame is not JSON ({e}): {frame}"));
    assert_eq!(value["type"], "event", "frame type in {frame}");
    let name = value["payload"]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("frame without payload.name: {frame}"))
        .to_string();
    (name, value["payload"]["data"].clone())
}

/// The event name of a TBone frame.
pub fn frame_name(frame: &Frame) -> String {
    parse_frame(frame).0
}

/// The data of a TBone frame.
pub fn frame_data(frame: &Frame) -> serde_json::Value {
    parse_frame(frame).1
}

/// Expands, in a test file, to one `#[test]` per rule of the suite, run on
/// the given runtime type (which must implement [`TestRuntime`] and be in
/// scope).
#[macro_export]
macro_rules! conformance_suite {
    ($runtime:ty) => {
        $crate::__conformance_tests! {
            $runtime;
            signals {
                static_signal_has_typed_args_and_responses,
                connect_limited_to_sender_and_any_sender,
                same_fn_item_connects_once,
                closures_with_same_key_connect_once,
                capturing_closures_without_key_are_distinct,
                disconnect_by_key,
                guard_disconnects_on_drop,
                responses_in_connection_order_async_receivers_run_concurrently,
                send_robust_isolates_panicking_receivers,
                send_robust_timeout_abandons_stuck_receiver,
                fire_and_forget_spawn_runs_receivers,
                connect_and_disconnect_inside_receiver_affect_only_next_send,
            }
            channels {
                channel_is_singleton_by_name,
                same_name_with_other_backend_is_mismatch,
                subscribe_unsubscribe_and_unsubscribe_all,
                unsubscribe_with_clone_of_carrier,
                one_carrier_receives_events_of_two_channels,
                publish_accepts_any_serialize,
                invalid_payload_is_refused_and_nothing_delivered,
                default_frame_is_tbone_bytes,
                custom_envelope_shapes_frames,
                each_event_encoded_once_and_frame_bytes_shared,
                events_without_subscribers_are_not_encoded,
                delivery_does_not_touch_carriers_of_other_events,
                kickoff_is_idempotent,
                events_published_before_kickoff_are_delivered,
                stop_delivers_events_accepted_before_stop,
                stop_ends_channel_and_frees_its_name,
                model_events_of_a_document_follow_its_writes,
            }
            carriers {
                sink_error_removes_carrier_from_every_channel,
                dropped_client_removes_carrier_from_every_channel,
                slow_carrier_is_dropped_without_slowing_others,
                slow_carrier_with_drop_frame_stays_subscribed,
                close_removes_carrier_from_every_channel,
                closed_resolves_with_reason,
                closed_wakes_after_carrier_left_every_channel,
                dropping_last_handle_flushes_then_closes_sink,
                delivery_order_is_publish_order,
            }
            backends {
                custom_backend_delivers_to_carriers,
                backend_publish_error_surfaces,
                backend_consume_error_fails_kickoff,
            }
            mongo {
                two_instances_each_deliver_every_event_in_order,
                stores_and_reads_tbone_documents,
                malformed_documents_are_skipped_and_counted,
                falling_behind_the_capped_collection_reports_one_gap,
                model_writes_become_resource_events,
                model_writes_are_reported_as_they_happened,
                model_updates_and_deletes_that_happened_are_reported_done,
                integers_mongo_cannot_keep_are_refused,
                server_killed_and_restarted_loses_and_repeats_nothing,
                acknowledged_publishes_survive_a_server_crash,
                publish_delivered_waits_for_the_instance_to_read_it_back,
                writers_with_slow_clocks_are_delivered_from_kickoff,
                documents_present_at_kickoff_are_never_delivered,
                a_slow_writer_right_after_the_start_is_delivered,
                the_first_tailing_cursor_matches_a_present_document,
                an_idle_instance_keeps_its_cursor,
                stop_waits_for_the_tailing_task,
                model_events_of_a_document_follow_its_writes,
            }
            redis {
                two_instances_each_deliver_every_event_in_order,
                stores_entries_as_key_and_json_data,
                entries_present_at_kickoff_are_never_delivered,
                malformed_entries_are_skipped_and_counted,
                falling_behind_the_stream_reports_one_gap,
                a_trimmed_last_entry_with_the_rest_kept_is_no_gap,
                entries_trimmed_before_they_were_read_are_one_gap,
                publish_delivered_waits_for_the_instance_to_read_it_back,
                server_killed_and_restarted_loses_and_repeats_nothing,
                a_cut_connection_is_survived,
                stop_waits_for_the_tailing_task,
            }
            resume {
                missed_events_are_replayed_then_live,
                missed_events_are_replayed_then_live_on_mongo,
                resume_while_publishing_continues,
                resume_while_publishing_continues_on_mongo,
                resume_from_the_collection_while_publishing_continues,
                resume_on_another_mongo_instance,
                unknown_positions_fail_recovery_then_go_live,
                unknown_positions_fail_recovery_then_go_live_on_mongo,
                carrier_dropped_for_overflow_resumes_without_loss,
                carrier_dropped_for_overflow_resumes_without_loss_on_mongo,
                a_replay_longer_than_the_queue_is_not_dropped_by_live_events,
            }
            resume_stored {
                a_new_instance_resumes_from_the_collection,
                a_position_older_than_the_history_resumes_from_the_collection,
                redis_resumes_from_the_stream,
            }
            websocket {
                clients_receive_exact_text_frames,
                closing_a_client_removes_its_carrier,
                slow_client_is_dropped_without_slowing_others,
                oversized_message_closes_only_that_connection,
                invalid_frames_close_only_that_connection,
                binary_message_closes_with_1003,
                control_messages_subscribe_and_unsubscribe,
                malformed_control_message_closes_with_1008,
                unauthorized_subscription_gets_error_frame,
                text_is_ignored_without_control_messages,
                pings_arrive_and_answered_pings_keep_the_socket,
                silent_client_is_closed_as_unresponsive,
                channel_stop_with_connected_sockets,
                long_close_reason_is_cut_to_fit_the_close_frame,
            }
            duplex {
                handler_replies_in_order_with_events,
                handler_error_closes_only_its_connection_with_1011,
                handler_panic_closes_only_its_connection_with_1011,
                binary_messages_reach_the_handler_with_their_bytes,
                multiplexer_answers_requests_over_the_socket,
                two_channels_on_one_socket,
                authorizer_refuses_before_the_upgrade,
                foreign_origin_is_refused_with_403,
                authorizer_decides_per_event_and_client,
                subscription_limit_closes_with_1008,
                message_rate_limit_closes_with_1008,
                subscribed_before_the_handshake_response,
                a_reply_after_publish_delivered_follows_the_event,
            }
            resume_socket {
                a_reconnecting_client_receives_what_it_missed_once,
                reconnecting_while_publishing_goes_on_loses_and_repeats_nothing,
                an_unknown_position_gets_recovery_failed_then_live_events,
                a_client_dropped_for_overflow_resumes_without_loss,
                a_client_resumes_on_another_mongo_instance,
                a_client_resumes_on_an_instance_started_after_it_left,
            }
            sse {
                last_event_id_resumes_exactly_the_missed_events,
                a_client_that_leaves_is_removed_without_an_event,
                a_server_that_only_writes_finds_a_departed_client_by_its_keep_alive,
                last_event_id_resumes_on_another_mongo_instance,
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($runtime:ty; $($module:ident { $($test:ident),* $(,)? })*) => {
        type __ConformanceRuntime = $runtime;
        $(
            mod $module {
                $(
                    #[test]
                    fn $test() {
                        $crate::init_logging();
                        <super::__ConformanceRuntime as $crate::TestRuntime>::block_on(
                            $crate::$module::$test::<super::__ConformanceRuntime>(),
                        );
                    }
                )*
            }
        )*
    };
}

/// The README's Rust examples, compiled and run as doc tests so the
/// quickstarts a newcomer copies cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeExamples;
