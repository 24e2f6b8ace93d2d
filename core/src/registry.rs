//! The process-wide table that makes channels singletons by name.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use crate::ChannelError;

struct Registered {
    type_id: TypeId,
    type_name: &'static str,
    settings: String,
    channel: Arc<dyn Any + Send + Sync>,
}

type Table = Mutex<HashMap<String, Registered>>;

fn table() -> MutexGuard<'static, HashMap<String, Registered>> {
    static TABLE: OnceLock<Table> = OnceLock::new();
    // Only map operations run under the lock.
    TABLE
        .get_or_init(Table::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// What a channel is opened as: its name, type and settings.
pub(crate) struct Registration<'a> {
    pub(crate) name: &'a str,
    pub(crate) type_name: &'static str,
    /// The arguments it was made from, as text; another open of the name
    /// must ask for the same.
    pub(crate) settings: &'a str,
}

enum Found<T> {
    Usable(Arc<T>),
    /// Registered, but its consumer is gone: to be replaced.
    Orphaned(Arc<T>),
}

fn lookup<T: Any + Send + Sync>(
    registry: &HashMap<String, Registered>,
    wanted: &Registration<'_>,
    orphaned: &impl Fn(&T) -> bool,
) -> Option<Result<Found<T>, ChannelError>> {
    let found = registry.get(wanted.name)?;
    let mismatch = || ChannelError::BackendMismatch {
        channel: wanted.name.to_string(),
        existing: found.type_name,
        requested: wanted.type_name,
    };
    if found.type_id != TypeId::of::<T>() {
        return Some(Err(mismatch()));
    }
    let Ok(channel) = found.channel.clone().downcast::<T>() else {
        return Some(Err(mismatch()));
    };
    if orphaned(&channel) {
        return Some(Ok(Found::Orphaned(channel)));
    }
    if found.settings != wanted.settings {
        return Some(Err(ChannelError::SettingsMismatch {
            channel: wanted.name.to_string(),
            existing: found.settings.clone(),
            requested: wanted.settings.to_string(),
        }));
    }
    Some(Ok(Found::Usable(channel)))
}

/// Returns the channel registered as `wanted`, creating it with `create`
/// if there is none, or if the one there is `orphaned` (its consumer died
/// with its runtime; it is `retire`d). `create` runs outside the lock (it
/// is user code); if two threads race, the first to register wins and the
/// other's instance is dropped unused.
pub(crate) fn get_or_create<T: Any + Send + Sync>(
    wanted: Registration<'_>,
    orphaned: impl Fn(&T) -> bool,
    retire: impl Fn(&T),
    create: impl FnOnce() -> Arc<T>,
) -> Result<Arc<T>, ChannelError> {
    let found = lookup::<T>(&table(), &wanted, &orphaned).transpose()?;
    match found {
        Some(Found::Usable(channel)) => return Ok(channel),
        Some(Found::Orphaned(old)) => {
            tracing::info!(
                channel = wanted.name,
                "the channel's consumer ended with its runtime: replacing it"
            );
            retire(&old);
            remove(wanted.name, &old);
        }
        None => {}
    }
    let fresh = create();
    let mut registry = table();
    match lookup::<T>(&registry, &wanted, &orphaned).transpose()? {
        Some(Found::Usable(channel)) => return Ok(channel),
        Some(Found::Orphaned(_)) | None => {}
    }
    registry.insert(
        wanted.name.to_string(),
        Registered {
            type_id: TypeId::of::<T>(),
            type_name: wanted.type_name,
            settings: wanted.settings.to_string(),
            channel: fresh.clone(),
        },
    );
    Ok(fresh)
}

/// Forgets `name` if it still refers to `channel`.
pub(crate) fn remove<T: Any + Send + Sync>(name: &str, channel: &Arc<T>) {
    let mut registry = table();
    let same = registry
        .get(name)
        .is_some_and(|r| std::ptr::addr_eq(Arc::as_ptr(&r.channel), Arc::as_ptr(channel)));
    if same {
        registry.remove(name);
    }
}
