//! The demo in a real browser: headless Chromium opens the page twice; an
//! entry posted in one page appears in the other, an edit and a delete made
//! in the second show up in the first. Every one of these writes goes over
//! the page's websocket as TBone's request message, answered on the same
//! socket; the page makes no HTTP request to the API at all. A page whose
//! connection is cut reconnects with its last position and shows the
//! changes made meanwhile, each once, without reading the list again (or
//! reads it again when the server no longer has that position).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tbone_dispatch_demo::{
    serve, AppState, Entries, Entry, EntryPatch, MemoryState, MemoryStorage,
};
use tbone_dispatch_tests::browser::{Browser, Page, Proxy};
use tbone_dispatch_tokio::{
    ChannelBuilder, HistoryLimits, MemoryBackend, PositionedEnvelope, Tokio,
};

const LIVE: Duration = Duration::from_secs(15);

/// One test at a time: model signals are process-wide, so a write of one
/// test's demo would reach the other's pages as an event.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    let _alone = ONE_AT_A_TIME.lock().await;
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

/// The texts of the page's entries, in its order.
async fn listed(browser: &mut Browser, page: &Page) -> Vec<String> {
    serde_json::from_str(browser.eval(page, texts()).await.as_str().unwrap_or("[]"))
        .expect("the texts as JSON")
}

/// How many list reads (`GET /api/entries/` requests) the page sent.
async fn list_reads(browser: &mut Browser, page: &Page) -> usize {
    let _ = browser.eval(page, "true").await; // reads the events so far
    browser
        .websocket_frames(page, true)
        .iter()
        .filter(|frame| frame["type"] == "request" && frame["method"] == "GET")
        .count()
}

/// The events the page received about entry `id`, by name, in order.
async fn events_about(browser: &mut Browser, page: &Page, id: &str) -> Vec<String> {
    let _ = browser.eval(page, "true").await;
    browser
        .websocket_frames(page, false)
        .into_iter()
        .filter(|frame| frame["type"] == "event" && frame["payload"]["data"]["_id"] == id)
        .map(|frame| {
            frame["payload"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

async fn wait_offline(browser: &mut Browser, page: &Page) {
    browser
        .wait_for(
            page,
            "document.querySelector('#status')?.textContent.startsWith('offline')",
            LIVE,
            "the page noticing its lost connection",
        )
        .await;
}

async fn wait_listed(browser: &mut Browser, page: &Page, expected: &[&str], what: &str) {
    let expression = format!("{} === {}", texts(), json!(json!(expected).to_string()));
    browser.wait_for(page, &expression, LIVE, what).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_whose_connection_is_cut_shows_what_it_missed_once() {
    let _alone = ONE_AT_A_TIME.lock().await;
    tbone_dispatch_tests::init_logging();
    // A short history: it covers the first outage, not the second.
    let channel = ChannelBuilder::new("browser-test-resume")
        .envelope(PositionedEnvelope)
        .history(HistoryLimits::default().events(6))
        .open(Tokio::default(), MemoryBackend::new)
        .expect("the channel");
    let state =
        AppState::new(Entries(Arc::new(MemoryStorage::new())), channel).expect("the demo's state");
    let entries = state.entries().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // The page reaches the server through a proxy that can cut it off.
    let proxy = Proxy::start(listener.local_addr().unwrap()).await;
    let url = format!("http://{}/", proxy.addr);
    let (stop, stopped) = futures::channel::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state, async move {
        let _ = stopped.await;
    }));
    let insert = |text: &str| {
        let entries = entries.clone();
        let entry = Entry {
            author: "Ada".into(),
            text: text.into(),
        };
        async move { entries.insert(entry).await.expect("an insert").id.to_hex() }
    };

    let mut browser = Browser::launch().await;
    let page = browser.open(&url).await;
    browser
        .wait_for(
            &page,
            "document.querySelector('#status')?.textContent === 'live'",
            LIVE,
            "the page's websocket going live",
        )
        .await;
    let (_, first_read) = exchange(&mut browser, &page, "GET", 0).await;
    assert_eq!(first_read["payload"], json!({"objects": []}));
    let a = insert("seen a").await;
    let b = insert("seen b").await;
    wait_listed(
        &mut browser,
        &page,
        &["seen a", "seen b"],
        "the first entries",
    )
    .await;

    // The connection is cut; meanwhile two entries are posted, one edited,
    // one deleted.
    proxy.cut();
    wait_offline(&mut browser, &page).await;
    let c = insert("missed c").await;
    let d = insert("missed d").await;
    let patch = EntryPatch {
        author: None,
        text: Some("edited while away".into()),
    };
    entries
        .update(a.parse().unwrap(), patch)
        .await
        .unwrap()
        .expect("entry a");
    entries
        .delete(b.parse().unwrap())
        .await
        .unwrap()
        .expect("entry b");
    proxy.restore();
    wait_listed(
        &mut browser,
        &page,
        &["edited while away", "missed c", "missed d"],
        "the changes made while away",
    )
    .await;
    // Replayed on the new socket, each once, and the list not read again.
    let created = ["resource_create"];
    assert_eq!(events_about(&mut browser, &page, &c).await, created);
    assert_eq!(events_about(&mut browser, &page, &d).await, created);
    assert_eq!(
        events_about(&mut browser, &page, &a).await,
        ["resource_create", "resource_update"]
    );
    assert_eq!(
        events_about(&mut browser, &page, &b).await,
        ["resource_create", "resource_delete"]
    );
    assert_eq!(
        list_reads(&mut browser, &page).await,
        1,
        "no second read of the list"
    );
    let sockets: Vec<String> = browser
        .events(&page, "Network.webSocketCreated")
        .iter()
        .filter_map(|params| params["url"].as_str().map(String::from))
        .collect();
    assert!(
        sockets.len() >= 2
            && sockets
                .last()
                .is_some_and(|url| url.contains("/ws/?last_position=")),
        "the page reconnects with its last position: {sockets:?}"
    );

    // Cut again, and more changes than the history keeps: the server says
    // recovery failed, and the page reads the list again.
    proxy.cut();
    wait_offline(&mut browser, &page).await;
    let mut expected = vec!["edited while away", "missed c", "missed d"];
    let lost: Vec<String> = (0..7).map(|n| format!("lost {n}")).collect();
    for text in &lost {
        insert(text).await;
        expected.push(text);
    }
    proxy.restore();
    wait_listed(
        &mut browser,
        &page,
        &expected,
        "every entry, after the reload",
    )
    .await;
    let _ = browser.eval(&page, "true").await;
    let failed = browser
        .websocket_frames(&page, false)
        .into_iter()
        .filter(|frame| frame["type"] == "recovery_failed")
        .count();
    assert_eq!(failed, 1, "the server said it could not replay");
    assert_eq!(
        list_reads(&mut browser, &page).await,
        2,
        "the list read again"
    );
    let shown = listed(&mut browser, &page).await;
    assert_eq!(shown, expected, "each entry once");

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}
