//! The aliases every runtime crate exports, written once.

/// Declares, in a runtime crate, the aliases that fix the core's generic
/// types to that crate's runtime (`Channel<B>`, `MemoryChannel`, `Carrier`)
/// and the `spawn` function used for fire-and-forget sends.
///
/// Runtime crates call it once at their root: one definition, three runtimes.
#[macro_export]
macro_rules! export_runtime {
    ($runtime:ident, $krate:ident) => {
        /// A channel over backend `B` on this crate's runtime.
        pub type Channel<B> = $crate::Channel<B, $runtime>;

        /// The in-process channel (the spec's `MemoryChannel`) on this
        /// crate's runtime. Open one with `MemoryChannel::named("pubsub")`.
        pub type MemoryChannel = $crate::Channel<$crate::MemoryBackend<$runtime>, $runtime>;

        /// A carrier on this crate's runtime. Wrap any
        /// `Sink<Frame>` with `Carrier::from_sink(sink)`.
        pub type Carrier = $crate::Carrier<$runtime>;

        /// Runs `future` in the background and forgets its output: TBone's
        /// `asyncio.ensure_future(signal.send(...))`, for firing a signal
        /// without awaiting its receivers.
        #[doc = concat!(
                            "```no_run\n",
                            "use ", stringify!($krate), "::{spawn, Sender, Signal, SpawnError};\n",
                            "\n",
                            "struct Entry;\n",
                            "static POST_SAVE: Signal<u32> = Signal::new();\n",
                            "\n",
                            "fn on_saved(id: u32) -> Result<(), SpawnError> {\n",
                            "    // Returns at once; the receivers run in the background.\n",
                            "    spawn(POST_SAVE.send(Sender::of::<Entry>(), id))\n",
                            "}\n",
                            "```"
                        )]
        pub fn spawn<F>(future: F) -> ::std::result::Result<(), $crate::SpawnError>
        where
            F: ::std::future::Future + Send + 'static,
            F::Output: Send + 'static,
        {
            $crate::Runtime::spawn(
                &<$runtime as ::std::default::Default>::default(),
                async move {
                    let _ = future.await;
                },
            )
        }
    };
}

/// Declares, in a runtime crate that depends on `async-tungstenite`, the
/// websocket carrier glue for that crate's runtime: the mapping between
/// tungstenite messages and the core's [`Incoming`](crate::Incoming) /
/// [`Outgoing`](crate::Outgoing), [`serve`](crate::serve_socket) over a
/// `WebSocketStream`, and the handshake with the options' size limits.
/// The serving logic itself is [`serve_socket`](crate::serve_socket),
/// written once in the core; this is only the type mapping, so the three
/// runtimes share one implementation.
#[macro_export]
macro_rules! websocket_glue {
    ($runtime:ident) => {
        use ::async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
        use ::async_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
        use ::async_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
        use ::async_tungstenite::WebSocketStream;
        use $crate::futures::{AsyncRead, AsyncWrite, SinkExt as _, StreamExt as _};

        /// What the serving loop needs to know of a message from the client.
        pub fn incoming(message: Message) -> $crate::Incoming {
            match message {
                Message::Text(text) => $crate::Incoming::Text(text.as_str().to_owned()),
                Message::Binary(bytes) => $crate::Incoming::Binary(bytes.len()),
                Message::Close(_) => $crate::Incoming::Close,
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => $crate::Incoming::Alive,
            }
        }

        /// The message that carries `item` to the client. Frames become
        /// text messages sharing the frame's bytes (no copy).
        pub fn outgoing(item: $crate::Outgoing) -> Message {
            match item {
                $crate::Outgoing::Frame(frame) => match Utf8Bytes::try_from(frame.into_bytes()) {
                    Ok(text) => Message::Text(text),
                    // A Frame is UTF-8 by construction; kept total anyway.
                    Err(_) => Message::Text(Utf8Bytes::from_static("")),
                },
                $crate::Outgoing::Ping => Message::Ping(Default::default()),
                $crate::Outgoing::Close(code, reason) => Message::Close(Some(CloseFrame {
                    code: CloseCode::from(code),
                    reason: reason.into(),
                })),
            }
        }

        /// The websocket configuration enforcing the options' size limits.
        /// The read buffer is [`READ_BUFFER_SIZE`]($crate::READ_BUFFER_SIZE)
        /// rather than tungstenite's 128 KiB.
        pub fn config(options: &$crate::SocketOptions) -> WebSocketConfig {
            let max = options.get_max_message_size();
            WebSocketConfig::default()
                .read_buffer_size($crate::READ_BUFFER_SIZE)
                .max_message_size(Some(max))
                .max_frame_size(Some(max))
        }

        /// Completes the server handshake on any `futures` byte stream,
        /// with the options' size limits, within their handshake timeout
        /// (an `io::ErrorKind::TimedOut` error after it).
        pub async fn accept_stream<S>(
            stream: S,
            options: &$crate::SocketOptions,
        ) -> Result<WebSocketStream<S>, WsError>
        where
            S: AsyncRead + AsyncWrite + Unpin,
        {
            // Without a bound, a client that connects and never sends the
            // upgrade request holds its task and socket forever.
            let timeout = options.get_handshake_timeout();
            // Boxed, both: the handshake's state (about 1.4 KiB) then lives
            // only while it runs, instead of in the caller's connection
            // task for as long as the connection lasts.
            let handshake = ::std::boxed::Box::pin(::async_tungstenite::accept_async_with_config(
                stream,
                Some(config(options)),
            ));
            let limit =
                ::std::boxed::Box::pin($crate::Runtime::sleep(&<$runtime>::default(), timeout));
            match $crate::futures::future::select(handshake, limit).await {
                $crate::futures::future::Either::Left((accepted, _)) => accepted,
                $crate::futures::future::Either::Right(_) => {
                    Err(WsError::Io(::std::io::Error::new(
                        ::std::io::ErrorKind::TimedOut,
                        format!("the websocket handshake did not complete within {timeout:?}"),
                    )))
                }
            }
        }

        /// The whole task of one connection: the handshake
        /// ([`accept_stream`]), then [`serve`] until the socket closes.
        /// Returns why it closed, or the handshake's error.
        ///
        /// Prefer it to calling the two in one `async` block: the
        /// connection's future then keeps neither the handshake's state
        /// nor the byte stream and options it started from, which on an
        /// idle connection is about a third of its memory.
        pub fn accept_and_serve_stream<'a, S, B>(
            stream: S,
            channel: &'a $crate::Channel<B, $runtime>,
            options: $crate::SocketOptions,
        ) -> impl ::std::future::Future<Output = Result<$crate::CloseReason, WsError>> + 'a
        where
            S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
            B: $crate::Backend,
        {
            // What the handshake needs lives in this box only while it runs.
            let accepted = ::std::boxed::Box::pin(async move {
                let socket = accept_stream(stream, &options).await?;
                Ok::<_, WsError>((socket, options))
            });
            async move {
                let serving = {
                    let (socket, options) = accepted.await?;
                    serve(socket, channel, options)
                };
                Ok(serving.await)
            }
        }

        /// Serves an accepted websocket on `channel` until it closes: one
        /// call for the spec's handler (carrier, subscribe, read loop,
        /// clean-up). See [`serve_socket`]($crate::serve_socket): the
        /// socket is subscribed when this is called, and dropping the
        /// returned future closes it.
        // A plain fn returning the core's future: as an `async fn` its
        // `socket` argument would be kept in the future for the whole
        // connection.
        pub fn serve<'a, S, B>(
            socket: WebSocketStream<S>,
            channel: &'a $crate::Channel<B, $runtime>,
            options: $crate::SocketOptions,
        ) -> impl ::std::future::Future<Output = $crate::CloseReason> + 'a
        where
            S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
            B: $crate::Backend,
        {
            let (sink, stream) = socket.split();
            let sink =
                sink.with(|item| $crate::futures::future::ready(Ok::<_, WsError>(outgoing(item))));
            let stream = stream.map(|message| message.map(incoming));
            $crate::serve_socket(&<$runtime>::default(), channel, sink, stream, options)
        }
    };
}
