//! Signals: in-process publish/subscribe with typed arguments.

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use futures::future::{self, BoxFuture, Either};
use futures::FutureExt;

use crate::Runtime;

/// Who sends a signal: a type, as in Django and TBone where the sender is a
/// class (`post_save` is sent by the model class that saved).
///
/// ```
/// use tbone_dispatch::Sender;
///
/// struct Entry;
/// struct User;
/// assert_eq!(Sender::of::<Entry>(), Sender::of::<Entry>());
/// assert_ne!(Sender::of::<Entry>(), Sender::of::<User>());
/// assert!(Sender::of::<Entry>().name().ends_with("Entry"));
/// ```
#[derive(Clone, Copy)]
pub struct Sender {
    id: TypeId,
    name: &'static str,
}

impl Sender {
    /// The sender identified by type `T`.
    pub fn of<T: ?Sized + 'static>() -> Self {
        Sender {
            id: TypeId::of::<T>(),
            name: std::any::type_name::<T>(),
        }
    }

    /// The sender's type name, for logs.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl PartialEq for Sender {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for Sender {}

impl std::hash::Hash for Sender {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sender({})", self.name)
    }
}

/// Which senders a receiver listens to: the `sender` argument of
/// [`Signal::connect`].
///
/// A [`Sender`] converts into `Senders::Only`, so `connect(f, Sender::of::<T>())`
/// limits `f` to signals sent by `T`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Senders {
    /// Every sender.
    Any,
    /// Only this sender.
    Only(Sender),
}

impl Senders {
    fn matches(&self, sender: &Sender) -> bool {
        match self {
            Senders::Any => true,
            Senders::Only(only) => only == sender,
        }
    }
}

impl From<Sender> for Senders {
    fn from(sender: Sender) -> Self {
        Senders::Only(sender)
    }
}

/// The identity of a connected receiver, the Rust form of Django's
/// `dispatch_uid`: connecting a receiver under a key that is already
/// connected for the same [`Senders`] does nothing.
///
/// Receivers that capture nothing (plain `fn`s and non-capturing closures)
/// get a key from their type automatically, so connecting the same function
/// twice is a no-op. A capturing closure has no identity of its own: each
/// connection is new unless you name it with [`Receiver::key`].
///
/// ```
/// use tbone_dispatch::ReceiverKey;
///
/// let key = ReceiverKey::from("audit-log");
/// assert_eq!(key.to_string(), "audit-log");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ReceiverKey(KeyKind);

#[derive(Clone, PartialEq, Eq, Hash)]
enum KeyKind {
    Type(TypeId, &'static str),
    Name(Cow<'static, str>),
    Unique(u64),
}

impl ReceiverKey {
    fn of_receiver<F: 'static>() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        if std::mem::size_of::<F>() == 0 {
            ReceiverKey(KeyKind::Type(TypeId::of::<F>(), std::any::type_name::<F>()))
        } else {
            ReceiverKey(KeyKind::Unique(NEXT.fetch_add(1, Ordering::Relaxed)))
        }
    }
}

impl From<&'static str> for ReceiverKey {
    fn from(name: &'static str) -> Self {
        ReceiverKey(KeyKind::Name(Cow::Borrowed(name)))
    }
}

impl From<String> for ReceiverKey {
    fn from(name: String) -> Self {
        ReceiverKey(KeyKind::Name(Cow::Owned(name)))
    }
}

impl fmt::Display for ReceiverKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            KeyKind::Type(_, name) => f.write_str(name),
            KeyKind::Name(name) => f.write_str(name),
            KeyKind::Unique(n) => write!(f, "receiver#{n}"),
        }
    }
}

impl fmt::Debug for ReceiverKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReceiverKey({self})")
    }
}

type SyncFn<A, R> = dyn Fn(Sender, &A) -> R + Send + Sync;
type AsyncFn<A, R> = dyn Fn(Sender, Arc<A>) -> BoxFuture<'static, R> + Send + Sync;

enum Call<A, R> {
    Sync(Arc<SyncFn<A, R>>),
    Async(Arc<AsyncFn<A, R>>),
}

impl<A, R> Clone for Call<A, R> {
    fn clone(&self) -> Self {
        match self {
            Call::Sync(f) => Call::Sync(f.clone()),
            Call::Async(f) => Call::Async(f.clone()),
        }
    }
}

/// A receiver function with its key, for [`Signal::connect_receiver`].
///
/// [`Signal::connect`] and [`Signal::connect_async`] build one for you; build
/// it yourself to give a closure a key.
///
/// ```
/// use tbone_dispatch::{Receiver, Senders, Signal};
///
/// static SAVED: Signal<u32> = Signal::new();
///
/// let prefix = String::from("saved");
/// let log = move |_sender, id: &u32| println!("{prefix} {id}");
/// SAVED.connect_receiver(Receiver::sync(log.clone()).key("log"), Senders::Any);
/// SAVED.connect_receiver(Receiver::sync(log).key("log"), Senders::Any); // no-op
/// assert_eq!(SAVED.receiver_count(), 1);
/// ```
pub struct Receiver<A, R = ()> {
    key: ReceiverKey,
    call: Call<A, R>,
}

impl<A: Send + Sync + 'static, R: Send + 'static> Receiver<A, R> {
    /// A receiver that runs to completion when called.
    pub fn sync<F>(receiver: F) -> Self
    where
        F: Fn(Sender, &A) -> R + Send + Sync + 'static,
    {
        Receiver {
            key: ReceiverKey::of_receiver::<F>(),
            call: Call::Sync(Arc::new(receiver)),
        }
    }

    /// A receiver that returns a future; the arguments are shared through an
    /// [`Arc`] so the future can keep them.
    pub fn future<F, Fut>(receiver: F) -> Self
    where
        F: Fn(Sender, Arc<A>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        Receiver {
            key: ReceiverKey::of_receiver::<F>(),
            call: Call::Async(Arc::new(move |sender, args| receiver(sender, args).boxed())),
        }
    }

    /// Names the receiver, so that connecting it again is a no-op and
    /// [`Signal::disconnect`] can find it.
    pub fn key(mut self, key: impl Into<ReceiverKey>) -> Self {
        self.key = key.into();
        self
    }
}

struct Entry<A, R> {
    key: ReceiverKey,
    senders: Senders,
    call: Call<A, R>,
}

impl<A, R> Clone for Entry<A, R> {
    fn clone(&self) -> Self {
        Entry {
            key: self.key.clone(),
            senders: self.senders,
            call: self.call.clone(),
        }
    }
}

struct Table<A, R> {
    // Copy-on-write: a send clones the Arc and runs without the lock, so a
    // receiver may connect or disconnect (even on this signal) without
    // deadlock and without changing the set of receivers of that send.
    entries: Mutex<Arc<[Entry<A, R>]>>,
}

impl<A, R> Table<A, R> {
    fn lock(&self) -> MutexGuard<'_, Arc<[Entry<A, R>]>> {
        // Receivers never run under this lock, so poisoning can only come
        // from an allocation failure mid-update; the old slice is intact.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn remove(&self, key: &ReceiverKey, senders: &Senders) -> bool {
        let mut entries = self.lock();
        let before = entries.len();
        let kept: Vec<Entry<A, R>> = entries
            .iter()
            .filter(|e| !(e.key == *key && e.senders == *senders))
            .cloned()
            .collect();
        if kept.len() == before {
            return false;
        }
        *entries = kept.into();
        true
    }
}

/// A signal: receivers connect to it, senders send typed arguments to all of
/// them. The Rust form of TBone's (and Django's) `Signal`.
///
/// `A` is the arguments struct (the `**kwargs` of the original) and `R` what
/// each receiver returns. Declare a signal once, as a `static` or a value,
/// and use it anywhere:
///
/// ```
/// use tbone_dispatch::{Sender, Senders, Signal};
///
/// pub struct PostInit {
///     pub workers: usize,
/// }
///
/// pub static POST_INIT: Signal<PostInit, String> = Signal::new();
///
/// struct App;
/// struct OtherApp;
///
/// fn on_init(sender: Sender, args: &PostInit) -> String {
///     format!("{} started {} workers", sender.name(), args.workers)
/// }
///
/// // Only signals sent by `App` reach `on_init`.
/// POST_INIT.connect(on_init, Sender::of::<App>());
/// // An async receiver, for every sender.
/// POST_INIT.connect_async(
///     |_sender, args| async move { format!("{} workers", args.workers) },
///     Senders::Any,
/// );
///
/// # futures::executor::block_on(async {
/// let replies = POST_INIT.send(Sender::of::<App>(), PostInit { workers: 4 }).await;
/// assert_eq!(replies.len(), 2);
/// assert!(replies[0].ends_with("App started 4 workers"));
/// assert_eq!(replies[1], "4 workers");
///
/// let replies = POST_INIT.send(Sender::of::<OtherApp>(), PostInit { workers: 1 }).await;
/// assert_eq!(replies, vec!["1 workers".to_string()]);
/// # });
/// ```
///
/// # Sending without waiting
///
/// TBone's docs fire a signal with `asyncio.ensure_future(signal.send(...))`
/// so receivers run after the response is returned. [`Signal::send`]
/// returns a `'static` future, so the same is one line with the runtime's
/// spawn, e.g. `tbone_dispatch_tokio::spawn(POST_INIT.send(sender, args));`.
pub struct Signal<A, R = ()> {
    // Lazily allocated so that `new` can be `const` (for statics) while
    // guards still hold a weak reference that cannot dangle.
    table: OnceLock<Arc<Table<A, R>>>,
}

impl<A, R> Default for Signal<A, R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A, R> fmt::Debug for Signal<A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signal")
            .field("receivers", &self.snapshot().map_or(0, |e| e.len()))
            .finish()
    }
}

impl<A, R> Signal<A, R> {
    /// A signal with no receivers. `const`, so it can initialize a `static`.
    pub const fn new() -> Self {
        Signal {
            table: OnceLock::new(),
        }
    }

    fn table(&self) -> &Arc<Table<A, R>> {
        self.table.get_or_init(|| {
            Arc::new(Table {
                entries: Mutex::new(Arc::from(Vec::new())),
            })
        })
    }

    fn snapshot(&self) -> Option<Arc<[Entry<A, R>]>> {
        self.table.get().map(|t| t.lock().clone())
    }

    /// Disconnects the receiver with this key for these senders. Returns
    /// whether one was connected.
    pub fn disconnect(&self, key: &ReceiverKey, senders: impl Into<Senders>) -> bool {
        let senders = senders.into();
        self.table.get().is_some_and(|t| t.remove(key, &senders))
    }

    /// How many receivers are connected, for any sender.
    pub fn receiver_count(&self) -> usize {
        self.snapshot().map_or(0, |e| e.len())
    }

    /// Whether a send from `sender` would reach any receiver.
    pub fn has_receivers_for(&self, sender: Sender) -> bool {
        self.snapshot()
            .is_some_and(|e| e.iter().any(|e| e.senders.matches(&sender)))
    }
}

impl<A: Send + Sync + 'static, R: Send + 'static> Signal<A, R> {
    /// Connects a receiver (see [`Receiver`]) for the given senders. If a
    /// receiver with the same key is already connected for the same senders,
    /// nothing changes and the returned [`Connection`] says so.
    pub fn connect_receiver(
        &self,
        receiver: Receiver<A, R>,
        senders: impl Into<Senders>,
    ) -> Connection {
        let senders = senders.into();
        let table = self.table();
        let mut entries = table.lock();
        let exists = entries
            .iter()
            .any(|e| e.key == receiver.key && e.senders == senders);
        if !exists {
            let mut next = Vec::with_capacity(entries.len() + 1);
            next.extend(entries.iter().cloned());
            next.push(Entry {
                key: receiver.key.clone(),
                senders,
                call: receiver.call,
            });
            *entries = next.into();
        }
        let weak: Weak<dyn Disconnect> = Arc::downgrade(table) as Weak<dyn Disconnect>;
        Connection {
            key: receiver.key,
            senders,
            table: weak,
            new: !exists,
        }
    }

    /// Connects a receiver function (`fn(Sender, &A) -> R`, or a closure),
    /// limited to `senders`: a [`Sender`] or [`Senders::Any`].
    ///
    /// Connecting the same non-capturing function twice for the same senders
    /// is a no-op. Returns a [`Connection`]; call
    /// [`Connection::guard`] on it to disconnect when the guard drops.
    pub fn connect<F>(&self, receiver: F, senders: impl Into<Senders>) -> Connection
    where
        F: Fn(Sender, &A) -> R + Send + Sync + 'static,
    {
        self.connect_receiver(Receiver::sync(receiver), senders)
    }

    /// Connects an async receiver: a function returning a future. See
    /// [`Signal::connect`].
    pub fn connect_async<F, Fut>(&self, receiver: F, senders: impl Into<Senders>) -> Connection
    where
        F: Fn(Sender, Arc<A>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        self.connect_receiver(Receiver::future(receiver), senders)
    }

    /// Sends the signal: every receiver connected for `sender` (or for any
    /// sender) runs, concurrently, and their responses come back in the
    /// order the receivers were connected.
    ///
    /// The set of receivers is fixed when `send` is called; connecting or
    /// disconnecting afterwards, even from inside a receiver, affects only
    /// later sends. The returned future is `'static` and `Send`, so it can be
    /// spawned. Synchronous receivers run on the first poll; a receiver that
    /// panics makes this future panic (use [`Signal::send_robust`] to isolate
    /// failures).
    pub fn send(&self, sender: Sender, args: A) -> impl Future<Output = Vec<R>> + Send + 'static {
        let entries = self.snapshot();
        async move {
            let Some(entries) = entries else {
                return Vec::new();
            };
            let matching = entries.iter().filter(|e| e.senders.matches(&sender));
            if entries.iter().all(|e| matches!(e.call, Call::Sync(_))) {
                // Sized up front: collecting a filter would grow the vector
                // several times, which costs more than the calls themselves.
                let mut replies = Vec::with_capacity(entries.len());
                for entry in matching {
                    if let Call::Sync(f) = &entry.call {
                        replies.push(f(sender, &args));
                    }
                }
                return replies;
            }
            let args = Arc::new(args);
            let calls: Vec<_> = matching
                .map(|e| match &e.call {
                    Call::Sync(f) => Either::Left(future::ready(f(sender, &args))),
                    Call::Async(f) => Either::Right(f(sender, args.clone())),
                })
                .collect();
            future::join_all(calls).await
        }
    }

    /// Sends the signal like [`Signal::send`], but isolates receivers from
    /// each other: a receiver that panics yields an `Err` in its place and the
    /// others run to completion. This is Django's `send_robust`.
    ///
    /// ```
    /// use tbone_dispatch::{ReceiverError, Sender, Senders, Signal};
    ///
    /// let signal: Signal<i32, i32> = Signal::new();
    /// signal.connect(|_, n: &i32| n + 1, Senders::Any);
    /// signal.connect(|_, _: &i32| -> i32 { panic!("boom") }, Senders::Any);
    /// signal.connect(|_, n: &i32| n * 10, Senders::Any);
    ///
    /// # futures::executor::block_on(async {
    /// let results = signal.send_robust(Sender::of::<()>(), 4).await;
    /// assert_eq!(results[0].as_ref().unwrap(), &5);
    /// assert!(matches!(&results[1], Err(ReceiverError::Panicked { message, .. }) if message == "boom"));
    /// assert_eq!(results[2].as_ref().unwrap(), &40);
    /// # });
    /// ```
    pub fn send_robust(
        &self,
        sender: Sender,
        args: A,
    ) -> impl Future<Output = Vec<Result<R, ReceiverError>>> + Send + 'static {
        // No deadline: the timer type is never used.
        self.send_robust_inner(
            sender,
            args,
            None::<(Duration, fn(Duration) -> future::Pending<()>)>,
        )
    }

    /// [`Signal::send_robust`] with a deadline per receiver: a receiver still
    /// running after `timeout` is abandoned (its future dropped) and yields
    /// [`ReceiverError::TimedOut`]. The timer comes from `runtime`.
    pub fn send_robust_timeout<Rt: Runtime>(
        &self,
        runtime: &Rt,
        timeout: Duration,
        sender: Sender,
        args: A,
    ) -> impl Future<Output = Vec<Result<R, ReceiverError>>> + Send + 'static {
        let runtime = runtime.clone();
        let timer = move |d| {
            let runtime = runtime.clone();
            async move { runtime.sleep(d).await }
        };
        self.send_robust_inner(sender, args, Some((timeout, timer)))
    }

    fn send_robust_inner<T, S>(
        &self,
        sender: Sender,
        args: A,
        deadline: Option<(Duration, T)>,
    ) -> impl Future<Output = Vec<Result<R, ReceiverError>>> + Send + 'static
    where
        T: Fn(Duration) -> S + Clone + Send + 'static,
        S: Future<Output = ()> + Send + 'static,
    {
        let entries = self.snapshot();
        async move {
            let Some(entries) = entries else {
                return Vec::new();
            };
            let args = Arc::new(args);
            let calls: Vec<_> = entries
                .iter()
                .filter(|e| e.senders.matches(&sender))
                .map(|e| {
                    let key = e.key.clone();
                    let started = catch_unwind(AssertUnwindSafe(|| match &e.call {
                        Call::Sync(f) => Either::Left(future::ready(f(sender, &args))),
                        Call::Async(f) => Either::Right(f(sender, args.clone())),
                    }));
                    let deadline = deadline.clone();
                    async move {
                        let running = match started {
                            Ok(running) => running,
                            Err(panic) => return Err(ReceiverError::panicked(key, panic)),
                        };
                        let guarded = AssertUnwindSafe(running).catch_unwind();
                        let outcome = match deadline {
                            None => guarded.await,
                            Some((timeout, timer)) => {
                                let sleep = std::pin::pin!(timer(timeout));
                                match future::select(guarded, sleep).await {
                                    Either::Left((outcome, _)) => outcome,
                                    Either::Right(_) => {
                                        return Err(ReceiverError::TimedOut { key, timeout })
                                    }
                                }
                            }
                        };
                        outcome.map_err(|panic| ReceiverError::panicked(key, panic))
                    }
                })
                .collect();
            future::join_all(calls).await
        }
    }
}

/// Why one receiver of a [`Signal::send_robust`] produced no response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiverError {
    /// The receiver panicked; the panic was caught and the others ran on.
    #[error("receiver `{key}` panicked: {message}")]
    Panicked {
        /// The receiver.
        key: ReceiverKey,
        /// The panic message, when it was a string.
        message: String,
    },
    /// The receiver did not finish in time and was abandoned.
    #[error("receiver `{key}` did not finish within {timeout:?} and was abandoned")]
    TimedOut {
        /// The receiver.
        key: ReceiverKey,
        /// The deadline it missed.
        timeout: Duration,
    },
}

impl ReceiverError {
    fn panicked(key: ReceiverKey, panic: Box<dyn Any + Send>) -> Self {
        let message = if let Some(s) = panic.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = panic.downcast_ref::<String>() {
            s.clone()
        } else {
            "a non-string panic payload".to_string()
        };
        tracing::warn!(receiver = %key, %message, "signal receiver panicked");
        ReceiverError::Panicked { key, message }
    }
}

trait Disconnect: Send + Sync {
    fn disconnect(&self, key: &ReceiverKey, senders: &Senders) -> bool;
}

impl<A, R> Disconnect for Table<A, R> {
    fn disconnect(&self, key: &ReceiverKey, senders: &Senders) -> bool {
        self.remove(key, senders)
    }
}

/// A connected receiver, returned by [`Signal::connect`].
///
/// Dropping a `Connection` leaves the receiver connected (most receivers
/// live as long as the program). Turn it into a [`ConnectionGuard`] to
/// disconnect on drop, the Rust form of TBone's weakly held receivers.
pub struct Connection {
    key: ReceiverKey,
    senders: Senders,
    table: Weak<dyn Disconnect>,
    new: bool,
}

impl Connection {
    /// The receiver's key.
    pub fn key(&self) -> &ReceiverKey {
        &self.key
    }

    /// False when this connect was a no-op because the same receiver was
    /// already connected for the same senders.
    pub fn is_new(&self) -> bool {
        self.new
    }

    /// Disconnects the receiver now. Returns whether it was still connected.
    pub fn disconnect(self) -> bool {
        self.table
            .upgrade()
            .is_some_and(|t| t.disconnect(&self.key, &self.senders))
    }

    /// A guard that disconnects the receiver when dropped.
    ///
    /// ```
    /// use tbone_dispatch::{Senders, Signal};
    ///
    /// let signal: Signal<()> = Signal::new();
    /// {
    ///     let _guard = signal.connect(|_, _: &()| (), Senders::Any).guard();
    ///     assert_eq!(signal.receiver_count(), 1);
    /// }
    /// assert_eq!(signal.receiver_count(), 0);
    /// ```
    pub fn guard(self) -> ConnectionGuard {
        ConnectionGuard {
            connection: Some(self),
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("key", &self.key)
            .field("senders", &self.senders)
            .field("new", &self.new)
            .finish()
    }
}

/// Disconnects its receiver when dropped. See [`Connection::guard`].
#[must_use = "dropping the guard disconnects the receiver at once"]
#[derive(Debug)]
pub struct ConnectionGuard {
    connection: Option<Connection>,
}

impl ConnectionGuard {
    /// Keeps the receiver connected for good and forgets the guard.
    pub fn forget(mut self) {
        self.connection = None;
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            connection.disconnect();
        }
    }
}
