//! What users' own test suites do: one tokio runtime per test
//! (`#[tokio::test]`), each opening the same channel by name.

use futures::StreamExt;
use tbone_dispatch_tokio::{Carrier, ChannelError, Frame, MemoryChannel};

fn one_test(n: u32) -> Result<MemoryChannel, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let pubsub = MemoryChannel::named("tokio-tests-pubsub")?;
        pubsub.kickoff()?;
        let (socket, mut client) = futures::channel::mpsc::unbounded::<Frame>();
        pubsub.subscribe("resource_create", &Carrier::from_sink(socket)?)?;
        pubsub.publish("resource_create", &n).await?;
        let frame = client.next().await.ok_or("no frame")?;
        assert!(
            frame.as_str().contains(&format!(r#""data":{n}"#)),
            "{frame}"
        );
        Ok(pubsub)
    })
}

/// Issue 12, defect 2: the second runtime got the first one's channel,
/// whose consumer had died with it; every publish failed as `Stopped`.
#[test]
fn each_runtime_gets_a_working_channel() {
    let first = one_test(1).expect("the first test");
    let second = one_test(2).expect("the second test: a fresh channel");
    assert!(first != second);
    assert!(first.is_stopped());
    assert!(matches!(
        first.kickoff(),
        Err(ChannelError::ConsumerGone { .. })
    ));
}
