//! Resuming from what a backend stores (issue 11, item 2: "MongoChannel
//! reads [its history] from the capped collection itself"; RedisChannel
//! from its stream alike): when the instance's own history does not hold
//! the client's position (it started later, its history is off or shorter
//! than the store), `Channel::resume` reads the missed events from the
//! store, then the client goes live, with no gap and no duplicate.

use tbone_dispatch::{Backend, Channel, Frame, HistoryLimits, PositionedEnvelope, Resumed};
use tbone_dispatch_redis::RedisBackend;

use crate::mongo::{connect_to, database, database_name, mongo_uri, next_second, MONGO_WAIT};
use crate::redis::{fresh_stream, redis_options, redis_url, server_at, REDIS_WAIT};
use crate::resume::{data, events, frames, mongo_on, numbers, positions, recovery_fails_then_live};
use crate::{new_carrier, unique_name, TestRuntime};

/// Resumes a new client of `channel` after `after`, expecting a replay.
async fn resume<B: Backend, R: TestRuntime>(
    channel: &Channel<B, R>,
    after: &str,
) -> (
    usize,
    tbone_dispatch::Carrier<R>,
    futures::channel::mpsc::UnboundedReceiver<Frame>,
) {
    let (carrier, client) = new_carrier::<R>();
    match channel.resume(&["tick"], &carrier, after).await {
        Ok(Resumed::Replayed { events }) => (events, carrier, client),
        other => panic!(
            "[{}] resuming after {after:?}: expected a replay from the store, got {other:?}",
            R::name()
        ),
    }
}

/// A client of instance A leaves; while it is away A publishes three
/// events, and instance B starts a second later (its history holds none
/// of them). The client resumes on B with A's position: it receives the
/// three from the collection, frame for frame what A's clients received,
/// then the live events, each once.
pub async fn a_new_instance_resumes_from_the_collection<R: TestRuntime>() {
    let test = "resume_stored_new_instance";
    let db_a = database::<R>(test).await;
    let a = mongo_on::<R>(
        &unique_name::<R>("stored-a"),
        &db_a,
        HistoryLimits::default(),
    );
    let (witness, mut watched) = new_carrier::<R>();
    a.subscribe("tick", &witness).expect("subscribe");
    let (first, mut client) = new_carrier::<R>();
    a.subscribe("tick", &first).expect("subscribe");
    for n in 0..3u64 {
        a.publish("tick", &n).await.expect("publish");
    }
    let before = events::<R>(&mut client, 3, MONGO_WAIT, "the events on A").await;
    first.close();
    drop(client);
    for n in 3..6u64 {
        a.publish("other", &"unsubscribed").await.expect("publish");
        a.publish("tick", &n).await.expect("publish");
    }
    // In the same second, B would deliver them live and hold them.
    next_second::<R>().await;

    let db_b = connect_to(&mongo_uri(), &database_name::<R>(test)).await;
    let b = mongo_on::<R>(
        &unique_name::<R>("stored-b"),
        &db_b,
        HistoryLimits::default(),
    );
    // In capitals: the ObjectId all the same, as the collection spells it.
    let (replayed, _again, mut client) =
        resume::<_, R>(&b, &before[2].position.to_uppercase()).await;
    assert_eq!(
        replayed,
        3,
        "[{}] 3, 4 and 5, from the collection",
        R::name()
    );
    a.publish("tick", &6).await.expect("publish");
    b.publish_delivered("tick", &7).await.expect("publish");
    let resumed = frames::<R>(&mut client, 5, MONGO_WAIT, "the missed, then live").await;
    let stayed = frames::<R>(&mut watched, 8, MONGO_WAIT, "A's witness").await;
    let resumed: Vec<&str> = resumed.iter().map(Frame::as_str).collect();
    let stayed: Vec<&str> = stayed[3..].iter().map(Frame::as_str).collect();
    assert_eq!(
        resumed,
        stayed,
        "[{}] exactly the missed events, then the live ones, as A's clients got them",
        R::name()
    );
}

/// An instance whose history is shorter than the collection (3 events),
/// or off: a client resuming from an older position still in the
/// collection gets everything after it, then the live events.
pub async fn a_position_older_than_the_history_resumes_from_the_collection<R: TestRuntime>() {
    for (name, history) in [
        ("short", HistoryLimits::default().events(3)),
        ("off", HistoryLimits::off()),
    ] {
        let db = database::<R>(&format!("resume_stored_{name}")).await;
        let channel = mongo_on::<R>(&unique_name::<R>(&format!("stored-{name}")), &db, history);
        let seen = positions(&channel, 10, MONGO_WAIT).await;
        let (replayed, _carrier, mut client) = resume::<_, R>(&channel, &seen[1]).await;
        assert_eq!(replayed, 8, "[{}] history {name}: 2 to 9", R::name());
        channel
            .publish_delivered("tick", &10)
            .await
            .expect("publish");
        let got = events::<R>(&mut client, 9, MONGO_WAIT, "the replay, then live").await;
        assert_eq!(
            data(&got),
            numbers(2..11),
            "[{}] history {name}: each missed event once, in order, then the live one",
            R::name()
        );
        // Nothing else arrives: no duplicate at the seam.
        channel
            .publish_delivered("tick", &11)
            .await
            .expect("publish");
        let next = events::<R>(&mut client, 1, MONGO_WAIT, "the next live event").await;
        assert_eq!(
            data(&next),
            numbers(11..12),
            "[{}] history {name}",
            R::name()
        );
    }
}

type Redis<R> = Channel<RedisBackend<R>, R>;

/// A RedisChannel instance on `stream` whose frames carry positions.
fn redis_on<R: TestRuntime>(name: &str, stream: &str, history: HistoryLimits) -> Redis<R> {
    let channel: Redis<R> =
        tbone_dispatch_redis::builder(&unique_name::<R>(name), &server_at(&redis_url()))
            .envelope(PositionedEnvelope)
            .history(history)
            .options(redis_options(stream))
            .open()
            .unwrap_or_else(|e| panic!("cannot open channel {name}: {e}"));
    channel.kickoff().expect("kickoff");
    channel
}

/// RedisChannel: an instance started after the client left, and one whose
/// history is off, answer from the stream; a position trimmed from the
/// stream (or never in it) fails recovery, then the client goes live.
pub async fn redis_resumes_from_the_stream<R: TestRuntime>() {
    let stream = fresh_stream::<R>(&redis_url(), "resume_stored");
    let a = redis_on::<R>("stored-redis-a", &stream, HistoryLimits::default());
    let seen = positions(&a, 6, REDIS_WAIT).await;
    let b = redis_on::<R>("stored-redis-b", &stream, HistoryLimits::off());
    let (replayed, _carrier, mut client) = resume::<_, R>(&b, &seen[2]).await;
    assert_eq!(replayed, 3, "[{}] 3, 4 and 5, from the stream", R::name());
    a.publish("tick", &6).await.expect("publish");
    b.publish_delivered("tick", &7).await.expect("publish");
    let got = events::<R>(&mut client, 5, REDIS_WAIT, "the missed, then live").await;
    assert_eq!(
        data(&got),
        numbers(3..8),
        "[{}] exactly the missed events, then the live ones",
        R::name()
    );
    let mut unknown = vec!["1-1".to_string(), "99999999999999-0".to_string()];
    unknown.push(seen[5].replace('-', "+"));
    recovery_fails_then_live(&b, &unknown, REDIS_WAIT).await;
}
