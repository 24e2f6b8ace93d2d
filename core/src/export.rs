//! The aliases every runtime crate exports, written once.

/// Declares, in a runtime crate, the aliases that fix the core's generic
/// types to that crate's runtime (`Channel<B>`, `MemoryChannel`, `Carrier`)
/// and the `spawn` function used for fire-and-forget sends.
///
/// Runtime crates call it once at their root: one definition, three runtimes.
/// It is the runtime crates' plumbing, not part of the public API: hidden
/// from the docs and free to change.
#[doc(hidden)]
#[macro_export]
macro_rules! export_runtime {
    ($runtime:ident, $krate:ident) => {
        /// A channel over backend `B` on this crate's runtime.
        pub type Channel<B> = $crate::Channel<B, $runtime>;

        /// The in-process channel (the spec's `MemoryChannel`) on this
        /// crate's runtime. Open one with `MemoryChannel::named("pubsub")`.
        pub type MemoryChannel = $crate::Channel<$crate::MemoryBackend, $runtime>;

        /// A carrier on this crate's runtime. Wrap any
        /// `Sink<Frame>` with `Carrier::from_sink(sink)`.
        pub type Carrier = $crate::Carrier<$runtime>;

        /// Runs `future` in the background and forgets its output: TBone's
        /// `asyncio.ensure_future(signal.send(...))`, for firing a signal
        /// without awaiting its receivers. The returned [`Task`] can be
        /// awaited or aborted; dropping it lets the future run on.
        #[doc = concat!(
                            "```no_run\n",
                            "use ", stringify!($krate), "::{spawn, Sender, Signal, SpawnError};\n",
                            "\n",
                            "struct Entry;\n",
                            "static POST_SAVE: Signal<u32> = Signal::new();\n",
                            "\n",
                            "fn on_saved(id: u32) -> Result<(), SpawnError> {\n",
                            "    // Returns at once; the receivers run in the background.\n",
                            "    spawn(POST_SAVE.send(Sender::of::<Entry>(), id))?;\n",
                            "    Ok(())\n",
                            "}\n",
                            "```"
                        )]
        pub fn spawn<F>(future: F) -> ::std::result::Result<$crate::Task, $crate::SpawnError>
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
