//! A socket's own events, subscribed live or, for a client that says where
//! it stopped, after its last position on each channel.

use std::sync::Arc;

use super::authorize::{Client, ConnectRequest, DynAuthorizer, Refusal};
use super::channels::Channels;
use super::options::InitialEvent;
use crate::{Carrier, Resumed, Runtime, SubscribeError};

/// The query parameter of the upgrade request in which a websocket client
/// gives the position of the last event it received (the `"position"` of
/// [`PositionedEnvelope`](crate::PositionedEnvelope)'s frames), to receive
/// what it missed before the live events: `?last_position=<position>` for
/// the socket's default (first) channel, `?last_position.<channel>=<position>`
/// for any channel it serves by name. Channels without a position, and an
/// empty one, start live; a client that has seen nothing yet may send
/// `?last_position=` on a socket served with
/// [`SocketOptions::resume_message`](crate::SocketOptions::resume_message),
/// to start at once rather than wait for its first message. A name the
/// socket does not serve, or two positions for one channel, refuse the
/// connection with 400.
///
/// The missed events of each channel come first, in order, then its live
/// ones, with no gap and no duplicate
/// ([`Channel::resume`](crate::Channel::resume)). A
/// position the channel no longer has (older than its history, from
/// another process or before a restart) brings the envelope's
/// [`recovery_failed`](crate::Envelope::recovery_failed) frame instead, then
/// the live events: the client should reload.
///
/// ```
/// use futures::channel::mpsc;
/// use tbone_dispatch::socket::{Connection, LAST_POSITION};
/// use tbone_dispatch::testing::ManualRuntime;
/// use tbone_dispatch::{ChannelBuilder, ConnectRequest, MemoryBackend, Outgoing, PositionedEnvelope, SocketOptions};
///
/// let runtime = ManualRuntime::new();
/// let pubsub = ChannelBuilder::new("doc-last-position")
///     .envelope(PositionedEnvelope)
///     .open(runtime.clone(), MemoryBackend::new)
///     .unwrap();
/// pubsub.kickoff().unwrap();
///
/// let request = ConnectRequest::new(&format!("/ws/?{LAST_POSITION}=from-another-process"));
/// let connection = runtime
///     .run(Connection::open(&pubsub, SocketOptions::new(["tick"]), request))
///     .unwrap()
///     .unwrap();
/// let (sink, mut client) = mpsc::unbounded::<Outgoing>();
/// let (_incoming, stream) = mpsc::unbounded();
/// let mut serving = Box::pin(connection.serve(sink, stream));
/// assert!(runtime.run_for(serving.as_mut()).is_none(), "serving");
/// assert_eq!(
///     client.try_recv().unwrap(),
///     Outgoing::Frame(r#"{"type":"recovery_failed","position":"from-another-process"}"#.into())
/// );
/// ```
pub const LAST_POSITION: &str = "last_position";

/// The positions the client gave in its upgrade request: (channel index,
/// position), at most one per channel; `None` when it has no
/// [`LAST_POSITION`] parameter at all (not even an empty one).
pub(crate) fn positions(
    request: &ConnectRequest,
    names: &[Arc<str>],
) -> Result<Option<Vec<(usize, String)>>, Refusal> {
    let mut positions: Vec<(usize, String)> = Vec::new();
    let mut named: Vec<usize> = Vec::new();
    for (key, value) in request.query_pairs() {
        let index = if key == LAST_POSITION {
            0
        } else if let Some(name) = key
            .strip_prefix(LAST_POSITION)
            .and_then(|rest| rest.strip_prefix('.'))
        {
            names
                .iter()
                .position(|served| &**served == name)
                .ok_or_else(|| {
                    let served: Vec<&str> = names.iter().map(|n| &**n).collect();
                    Refusal::new(
                        400,
                        format!(
                            "{key}: this socket serves no channel `{name}`; it serves {}",
                            served.join(", ")
                        ),
                    )
                })?
        } else {
            continue;
        };
        if named.contains(&index) {
            let name = names.get(index).map_or("", |n| &**n);
            return Err(Refusal::new(
                400,
                format!("two positions for channel `{name}`: give one {LAST_POSITION} per channel"),
            ));
        }
        named.push(index);
        if !value.is_empty() {
            positions.push((index, value.into_owned()));
        }
    }
    Ok((!named.is_empty()).then_some(positions))
}

/// Who is subscribing, for the authorization hook.
pub(crate) type Check<'a> = Option<(&'a Arc<dyn DynAuthorizer>, &'a Client)>;

/// Subscribes `carrier` to the socket's own events: those `check` allows,
/// after the client's position on the channels of `positions`, live on the
/// others.
pub(crate) async fn subscribe_events<R: Runtime>(
    channels: &Channels<R>,
    initial: &[InitialEvent],
    check: Check<'_>,
    carrier: &Carrier<R>,
    positions: &[(usize, String)],
) -> Result<(), SubscribeError> {
    // Authorized first, then grouped per channel: a channel's missed
    // events are replayed for all its events at once, in order.
    let mut allowed: Vec<Vec<&str>> = vec![Vec::new(); channels.len()];
    for event in initial {
        let index = channels.index(event.channel.as_deref())?;
        if let Some((authorizer, client)) = check {
            if !authorizer
                .allow(&**client, channels.name(index), &event.event)
                .await
            {
                continue;
            }
        }
        if let Some(events) = allowed.get_mut(index) {
            events.push(&event.event);
        }
    }
    for (index, events) in allowed.iter().enumerate() {
        if events.is_empty() {
            continue;
        }
        match positions.iter().find(|(channel, _)| *channel == index) {
            Some((_, after)) => {
                let resumed = channels.resume(index, events, carrier, after).await?;
                if resumed == Resumed::Failed {
                    tracing::debug!(
                        channel = channels.name(index),
                        position = after.as_str(),
                        "a socket's position is not in the history: recovery failed"
                    );
                }
            }
            None => {
                for event in events {
                    channels.subscribe(index, event, carrier)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<Arc<str>> {
        vec![Arc::from("pubsub"), Arc::from("chat room")]
    }

    fn read(target: &str) -> Result<Vec<(usize, String)>, u16> {
        positions(&ConnectRequest::new(target), &names())
            .map(Option::unwrap_or_default)
            .map_err(|refusal| refusal.status())
    }

    #[test]
    fn the_query_gives_one_position_per_channel() {
        assert_eq!(read("/ws/"), Ok(vec![]));
        assert_eq!(
            read("/ws/?a=1&last_position=p-1"),
            Ok(vec![(0, "p-1".into())])
        );
        assert_eq!(
            read("/ws/?last_position.chat%20room=c-2&last_position.pubsub=p-1"),
            Ok(vec![(1, "c-2".into()), (0, "p-1".into())])
        );
        assert_eq!(read("/ws/?last_position="), Ok(vec![]), "empty: live");
        assert_eq!(
            read("/ws/?last_positions=x"),
            Ok(vec![]),
            "another parameter"
        );
        assert_eq!(read("/ws/?last_position.elsewhere=x"), Err(400));
        assert_eq!(
            read("/ws/?last_position=a&last_position.pubsub=b"),
            Err(400)
        );
        assert_eq!(read("/ws/?last_position=a&last_position=a"), Err(400));
    }

    #[test]
    fn an_empty_position_still_says_the_client_resumes_in_its_query() {
        let given = |target: &str| positions(&ConnectRequest::new(target), &names()).unwrap();
        assert_eq!(given("/ws/?room=1"), None);
        assert_eq!(given("/ws/?last_position="), Some(vec![]));
        assert_eq!(given("/ws/?last_position.pubsub"), Some(vec![]));
    }
}
