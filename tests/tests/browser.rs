//! The demo in a real browser: headless Chromium opens the page twice; an
//! entry posted in one page appears in the other, an edit and a delete made
//! in the second show up in the first, all through the websocket.

use std::time::Duration;

use serde_json::json;
use tbone_dispatch_demo::{serve, MemoryState};
use tbone_dispatch_tests::browser::Browser;

const LIVE: Duration = Duration::from_secs(15);

fn texts() -> &'static str {
    "JSON.stringify([...document.querySelectorAll('#entries li.entry .text')].map(e => e.textContent))"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_posted_in_one_page_appears_live_in_the_other() {
    tbone_dispatch_tests::init_logging();
    let state = MemoryState::memory("browser-test").expect("the demo's state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let (stop, stopped) = futures::channel::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state, async move {
        let _ = stopped.await;
    }));

    let mut browser = Browser::launch().await;
    let first = browser.open(&url).await;
    let second = browser.open(&url).await;
    for page in [&first, &second] {
        browser
            .wait_for(
                page,
                "document.querySelector('#status')?.textContent === 'live'",
                LIVE,
                "the page's websocket going live",
            )
            .await;
    }

    // A person types in the first page and presses Post.
    browser
        .eval(
            &first,
            "document.querySelector('#author').value = 'Ada'; \
             document.querySelector('#text').value = 'hello from the first tab'; \
             document.querySelector('#post').click(); true",
        )
        .await;
    let posted = format!("{}.includes('hello from the first tab')", texts());
    browser
        .wait_for(
            &second,
            &posted,
            LIVE,
            "the entry appearing in the second page",
        )
        .await;
    browser
        .wait_for(
            &first,
            &posted,
            LIVE,
            "the entry appearing in the first page",
        )
        .await;

    // The second page edits it through its own form...
    browser
        .eval(
            &second,
            "const li = document.querySelector('#entries li.entry'); \
             li.querySelector('.edit').click(); \
             li.querySelector('.edit-text').value = 'edited in the second tab'; \
             li.querySelector('.save').click(); true",
        )
        .await;
    let edited = format!("{}.includes('edited in the second tab')", texts());
    browser
        .wait_for(&first, &edited, LIVE, "the edit reaching the first page")
        .await;

    // ...and deletes it.
    browser
        .eval(
            &second,
            "document.querySelector('#entries li.entry .delete').click(); true",
        )
        .await;
    browser
        .wait_for(
            &first,
            "document.querySelectorAll('#entries li.entry').length === 0",
            LIVE,
            "the deletion reaching the first page",
        )
        .await;
    assert_eq!(browser.eval(&second, texts()).await, json!("[]"));

    let shot = browser.screenshot(&first).await;
    assert!(shot.starts_with(b"\x89PNG"), "the page renders");
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}
