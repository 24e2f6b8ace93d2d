//! The stream as a history: what a client resuming from a position this
//! instance no longer holds in memory missed
//! ([`Backend::stored_after`](tbone_dispatch::Backend::stored_after)).

use redis::Value;
use tbone_dispatch::tailing::Start;
use tbone_dispatch::{Position, Stored, MAX_STORED_REPLAY};

use crate::backend::Shared;
use crate::connection::{within, Connection};
use crate::entry::entry;
use crate::{Connect, RedisError, StreamId};

/// Where this instance's tail started in the stream (it delivers the
/// entries after this id): set by the tailing task when the server's clock
/// placed its kickoff, read by [`stored_after`].
pub(crate) type LiveFrom = Start<StreamId>;

/// The entries after `after` in the stream, each as an event with its
/// position and whether this instance's tail delivers it; `None` when
/// `after` is not in the stream (trimmed since, or never an entry of it)
/// or more than [`MAX_STORED_REPLAY`] entries follow it. One connection
/// and one round trip: `XRANGE` of `after` itself, then of what follows it
/// (needs Redis 6.2 or later, for the exclusive range).
pub(crate) async fn stored_after<R: Connect>(
    shared: &Shared<R>,
    after: &Position,
) -> Result<Option<Stored>, RedisError> {
    let Ok(after) = after.as_str().parse::<StreamId>() else {
        return Ok(None);
    };
    // As the tail writes it (a client may send `0012-3` for `12-3`).
    let Some(canonical) = after.position() else {
        return Ok(None);
    };
    let limit = shared.options.command_timeout;
    let live_from = within(&shared.runtime, limit, shared.live_from.wait())
        .await
        .ok_or(RedisError::NotTailing)?;
    let context = "reading the stream for a resuming client";
    let mut open = Connection::open(&shared.runtime, &shared.server, limit).await?;
    let mut pipeline = redis::pipe();
    let at = after.to_string();
    pipeline.cmd("XRANGE").arg(&shared.stream).arg(&at).arg(&at);
    pipeline
        .cmd("XRANGE")
        .arg(&shared.stream)
        .arg(format!("({at}"))
        .arg("+")
        .arg("COUNT")
        .arg(MAX_STORED_REPLAY + 1);
    let replies = open
        .send(&shared.runtime, &pipeline, limit, context)
        .await?;
    let (found, later) = match <[Value; 2]>::try_from(replies) {
        Ok([Value::Array(found), Value::Array(later)]) => (found, later),
        Ok(other) => return Err(open.unexpected(context, &other)),
        Err(other) => return Err(open.unexpected(context, &other)),
    };
    if found.is_empty() || later.len() > MAX_STORED_REPLAY {
        return Ok(None);
    }
    let mut stored = Stored::after(canonical, after > live_from);
    for item in later {
        // The tail skips what it cannot read, and so does this.
        let Ok(read) = entry(item, shared.options.max_payload) else {
            continue;
        };
        let (Ok(event), Some(position)) = (read.event, read.id.position()) else {
            continue;
        };
        stored.push(event.with_position(position), read.id > live_from);
    }
    Ok(Some(stored))
}
