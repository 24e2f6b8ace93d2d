//! The process-wide table that makes channels singletons by name.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use crate::ChannelError;

struct Registered {
    type_id: TypeId,
    type_name: &'static str,
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

fn lookup<T: Any + Send + Sync>(
    registry: &HashMap<String, Registered>,
    name: &str,
    requested: &'static str,
) -> Option<Result<Arc<T>, ChannelError>> {
    let found = registry.get(name)?;
    if found.type_id != TypeId::of::<T>() {
        return Some(Err(ChannelError::BackendMismatch {
            name: name.to_string(),
            existing: found.type_name,
            requested,
        }));
    }
    Some(
        found
            .channel
            .clone()
            .downcast::<T>()
            .map_err(|_| ChannelError::BackendMismatch {
                name: name.to_string(),
                existing: found.type_name,
                requested,
            }),
    )
}

/// Returns the channel registered under `name`, creating it with `create`
/// if there is none. `create` runs outside the lock (it is user code); if
/// two threads race, the first to register wins and the other's instance is
/// dropped unused.
pub(crate) fn get_or_create<T: Any + Send + Sync>(
    name: &str,
    type_name: &'static str,
    create: impl FnOnce() -> Arc<T>,
) -> Result<Arc<T>, ChannelError> {
    if let Some(found) = lookup::<T>(&table(), name, type_name) {
        return found;
    }
    let fresh = create();
    let mut registry = table();
    if let Some(found) = lookup::<T>(&registry, name, type_name) {
        return found;
    }
    registry.insert(
        name.to_string(),
        Registered {
            type_id: TypeId::of::<T>(),
            type_name,
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
