//! The demo in a real browser: headless Chromium opens the page twice; an
//! entry posted in one page appears in the other, an edit and a delete made
//! in the second show up in the first. Every one of these writes goes over
//! the page's websocket as TBone's request message, answered on the same
//! socket; the page makes no HTTP request to the API at all.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tbone_dispatch_demo::{serve, MemoryState};
use tbone_dispatch_tests::browser::{Browser, Page};

const LIVE: Duration = Duration::from_secs(15);

fn texts() -> &'static str {
    "JSON.stringify([...document.querySelectorAll('#entries li.entry .text')].map(e => e.textContent))"
}

/// The request `page` sent over its websocket with `method` (the `nth`
/// one, from 0) and the response it received for it, waiting (bounded)
/// for both.
async fn exchange(browser: &mut Browser, page: &Page, method: &str, nth: usize) -> (Value, Value) {
    let deadline = Instant::now() + LIVE;
    loop {
        let _ = browser.eval(page, "true").await; // reads the events so far
        let request = browser
            .websocket_frames(page, true)
            .into_iter()
            .filter(|frame| frame["type"] == "request" && frame["method"] == method)
            .nth(nth);
        if let Some(request) = request {
            let response = browser
                .websocket_frames(page, false)
                .into_iter()
                .find(|frame| frame["type"] == "response" && frame["key"] == request["key"]);
            if let Some(response) = response {
                return (request, response);
            }
        }
        assert!(
            Instant::now() < deadline,
            "the page sent no {method} request over its websocket, or got no response, within {LIVE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
        // The list is read over the socket too.
        let (_, listed) = exchange(&mut browser, page, "GET", 0).await;
        assert_eq!(listed["status"], 200, "{listed}");
        assert_eq!(listed["payload"], json!({"objects": []}));
    }

    // A post the API refuses: the page shows the response's error.
    browser
        .eval(
            &first,
            "document.querySelector('#author').value = '   '; \
             document.querySelector('#text').value = 'nameless'; \
             document.querySelector('#post').click(); true",
        )
        .await;
    browser
        .wait_for(
            &first,
            "document.querySelector('#error').textContent === 'author must not be empty (400)'",
            LIVE,
            "the refused post's error showing",
        )
        .await;
    let (_, refused) = exchange(&mut browser, &first, "POST", 0).await;
    assert_eq!(refused["status"], 400, "{refused}");

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
    let (request, created) = exchange(&mut browser, &first, "POST", 1).await;
    assert_eq!(request["href"], "/api/entries/", "{request}");
    assert_eq!(
        request["body"],
        json!({"author": "Ada", "text": "hello from the first tab"})
    );
    assert_eq!(created["status"], 201, "{created}");
    let id = created["payload"]["_id"]
        .as_str()
        .expect("an id")
        .to_string();
    assert_eq!(
        browser
            .eval(&first, "document.querySelector('#error').textContent")
            .await,
        json!(""),
        "a success clears the error"
    );

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
    let (request, updated) = exchange(&mut browser, &second, "PATCH", 0).await;
    assert_eq!(request["href"], format!("/api/entries/{id}/"), "{request}");
    assert_eq!(
        (updated["status"].clone(), updated["payload"].clone()),
        (
            json!(200),
            json!({"_id": id, "author": "Ada", "text": "edited in the second tab"})
        )
    );

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
    let (request, deleted) = exchange(&mut browser, &second, "DELETE", 0).await;
    assert_eq!(request["href"], format!("/api/entries/{id}/"), "{request}");
    assert_eq!(
        (deleted["status"].clone(), deleted["payload"].clone()),
        (json!(204), Value::Null)
    );
    browser
        .wait_for(
            &second,
            "document.querySelectorAll('#entries li.entry').length === 0",
            LIVE,
            "the deletion in the second page",
        )
        .await;

    // Each page saw every change as an event, including its own (which may
    // come after the response to its request: wait for it).
    for (name, page) in [("first", &first), ("second", &second)] {
        let deadline = Instant::now() + LIVE;
        let events = loop {
            let _ = browser.eval(page, "true").await; // reads the events so far
            let events: Vec<String> = browser
                .websocket_frames(page, false)
                .into_iter()
                .filter(|frame| frame["type"] == "event" && frame["payload"]["data"]["_id"] == id)
                .map(|frame| {
                    frame["payload"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                })
                .collect();
            if events.len() >= 3 || Instant::now() >= deadline {
                break events;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(
            events,
            ["resource_create", "resource_update", "resource_delete"],
            "the events the {name} page received"
        );
        // No write, and no read, went over HTTP.
        let api: Vec<_> = browser
            .http_requests(page)
            .into_iter()
            .filter(|(_, url)| url.contains("/api/"))
            .collect();
        assert!(
            api.is_empty(),
            "the {name} page used HTTP for the API: {api:?}"
        );
        // (The recording works: it holds the page's own load.)
        let requests = browser.http_requests(page);
        assert!(
            requests
                .iter()
                .any(|(method, at)| method == "GET" && *at == url),
            "{requests:?}"
        );
    }

    let shot = browser.screenshot(&first).await;
    assert!(shot.starts_with(b"\x89PNG"), "the page renders");
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}
