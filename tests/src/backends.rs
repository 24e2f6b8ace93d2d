//! Rules of custom backends.

use serde_json::json;
use tbone_dispatch::{BackendError, ChannelBuilder, ChannelError, PublishError};

use crate::support::{FailingBackend, LoopbackBackend};
use crate::{new_carrier, next_frames, parse_frame, unique_name, wait, TestRuntime};

/// A backend written only against the public API carries events to the
/// channel's carriers; `stop` ends its consumption and closes it.
pub async fn custom_backend_delivers_to_carriers<R: TestRuntime>() {
    let name = unique_name::<R>("custom-backend");
    let channel = ChannelBuilder::new(name.as_str())
        .open(R::default(), |_| LoopbackBackend::default())
        .expect("open");
    let again = ChannelBuilder::new(name.as_str())
        .open(R::default(), |_| -> LoopbackBackend {
            panic!("the backend is built only once")
        })
        .expect("open again");
    assert!(channel == again);
    channel.kickoff().expect("kickoff");
    let (carrier, mut client) = new_carrier::<R>();
    channel.subscribe("create", &carrier).expect("subscribe");
    channel.subscribe("delete", &carrier).expect("subscribe");

    channel
        .publish("create", &json!({"id": 1}))
        .await
        .expect("publish");
    channel.publish("ignored", &()).await.expect("publish");
    channel
        .publish("delete", &json!({"id": 1}))
        .await
        .expect("publish");
    let frames = next_frames::<R>(&mut client, 2, "events through the custom backend").await;
    let got: Vec<_> = frames.iter().map(parse_frame).collect();
    assert_eq!(
        got,
        vec![
            ("create".to_string(), json!({"id": 1})),
            ("delete".to_string(), json!({"id": 1}))
        ]
    );
    assert_eq!(
        channel.backend().published(),
        vec!["create", "ignored", "delete"]
    );
    assert_eq!(channel.stats().published, 3);
    assert_eq!(channel.stats().unrouted, 1);

    assert!(!channel.backend().is_closed());
    wait::<R, _>("stop", channel.stop()).await;
    assert!(
        channel.backend().stream_dropped(),
        "the consumer dropped the backend's stream"
    );
    assert!(channel.backend().is_closed(), "Backend::close was called");
}

/// A backend's publish error reaches the publisher as
/// `PublishError::Backend`, with the backend's error as source.
pub async fn backend_publish_error_surfaces<R: TestRuntime>() {
    let name = unique_name::<R>("failing-backend");
    let channel = ChannelBuilder::new(name.as_str())
        .open(R::default(), |_| FailingBackend::default())
        .expect("open");
    channel.kickoff().expect("kickoff");
    let (carrier, _client) = new_carrier::<R>();
    channel.subscribe("e", &carrier).expect("subscribe");

    match channel.publish("e", &1).await {
        Err(PublishError::Backend {
            channel: c,
            event,
            source,
        }) => {
            assert_eq!(c, name);
            assert_eq!(event, "e");
            assert!(
                matches!(&source, BackendError::Other { message, .. } if message == "disk full"),
                "source = {source:?}"
            );
        }
        other => panic!("expected PublishError::Backend, got {other:?}"),
    }
    assert_eq!(channel.stats().published, 0);
}

/// A backend that cannot start consuming makes `kickoff` fail with
/// `ChannelError::Backend`.
pub async fn backend_consume_error_fails_kickoff<R: TestRuntime>() {
    let name = unique_name::<R>("unconsumable-backend");
    let channel = ChannelBuilder::new(name.as_str())
        .open(R::default(), |_| FailingBackend {
            refuse_consume: true,
        })
        .expect("open");
    match channel.kickoff() {
        Err(ChannelError::Backend { channel: n, source }) => {
            assert_eq!(n, name);
            assert!(
                source.to_string().contains("cannot reach the database"),
                "source = {source}"
            );
        }
        other => panic!("expected ChannelError::Backend, got {other:?}"),
    }
}
