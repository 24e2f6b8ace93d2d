//! The REST resource, through the router: every verb, every status, every
//! validation message, all errors as JSON.

mod support;

use axum::http::{header, Method, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use support::{call, call_with, id, memory_state};
use tbone_dispatch_demo::app;

fn new_app() -> Router {
    app(memory_state())
}

async fn post(app: &Router, author: &str, text: &str) -> Value {
    let body = json!({"author": author, "text": text}).to_string();
    let reply = call(app, Method::POST, "/api/entries/", Some(&body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    reply.body
}

#[tokio::test]
async fn post_returns_201_with_the_entry_and_its_location() {
    let app = new_app();
    let body = json!({"author": "  ann ", "text": " hello\n", "_id": "ignored"}).to_string();
    let reply = call(&app, Method::POST, "/api/entries/", Some(&body)).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let id = id(&reply.body);
    assert_eq!(id.len(), 24);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    assert_eq!(
        reply.body,
        json!({"_id": id, "author": "ann", "text": "hello"})
    );
    assert_eq!(
        reply.headers.get(header::LOCATION).unwrap(),
        &format!("/api/entries/{id}/")
    );
    // Keys in TBone's order: the id first.
    assert_eq!(
        serde_json::to_string(&reply.body).unwrap(),
        format!(r#"{{"_id":"{id}","author":"ann","text":"hello"}}"#)
    );
}

#[tokio::test]
async fn list_is_oldest_first() {
    let app = new_app();
    let empty = call(&app, Method::GET, "/api/entries/", None).await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(empty.body, json!({"objects": []}));

    let first = post(&app, "ann", "one").await;
    let second = post(&app, "bob", "two").await;
    let third = post(&app, "cyd", "three").await;
    let reply = call(&app, Method::GET, "/api/entries/", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, json!({"objects": [first, second, third]}));
    // Without the trailing slash too.
    let bare = call(&app, Method::GET, "/api/entries", None).await;
    assert_eq!(bare.body, reply.body);
}

#[tokio::test]
async fn get_returns_the_entry_or_404() {
    let app = new_app();
    let entry = post(&app, "ann", "hello").await;
    let path = format!("/api/entries/{}/", id(&entry));
    let reply = call(&app, Method::GET, &path, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, entry);

    let unknown = call(
        &app,
        Method::GET,
        "/api/entries/0123456789abcdef01234567/",
        None,
    )
    .await;
    assert_eq!(
        unknown.error(StatusCode::NOT_FOUND),
        "no entry with id `0123456789abcdef01234567`"
    );
    let not_hex = call(&app, Method::GET, "/api/entries/not-an-id/", None).await;
    assert_eq!(
        not_hex.error(StatusCode::NOT_FOUND),
        "no entry with id `not-an-id`"
    );
}

#[tokio::test]
async fn put_replaces_both_fields() {
    let app = new_app();
    let entry = post(&app, "ann", "hello").await;
    let path = format!("/api/entries/{}/", id(&entry));

    let body = json!({"author": "bob", "text": "bye"}).to_string();
    let reply = call(&app, Method::PUT, &path, Some(&body)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body,
        json!({"_id": id(&entry), "author": "bob", "text": "bye"})
    );
    assert_eq!(call(&app, Method::GET, &path, None).await.body, reply.body);

    // Both fields are required.
    let partial = call(&app, Method::PUT, &path, Some(r#"{"text": "x"}"#)).await;
    assert_eq!(partial.error(StatusCode::BAD_REQUEST), "author is required");
    assert_eq!(call(&app, Method::GET, &path, None).await.body, reply.body);

    let unknown = call(
        &app,
        Method::PUT,
        "/api/entries/0123456789abcdef01234567/",
        Some(&body),
    )
    .await;
    unknown.error(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn patch_changes_only_the_given_fields() {
    let app = new_app();
    let entry = post(&app, "ann", "hello").await;
    let path = format!("/api/entries/{}/", id(&entry));

    let reply = call(&app, Method::PATCH, &path, Some(r#"{"text": "edited"}"#)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body,
        json!({"_id": id(&entry), "author": "ann", "text": "edited"})
    );
    let reply = call(&app, Method::PATCH, &path, Some(r#"{"author": "bob"}"#)).await;
    assert_eq!(
        reply.body,
        json!({"_id": id(&entry), "author": "bob", "text": "edited"})
    );

    let nothing = call(&app, Method::PATCH, &path, Some("{}")).await;
    assert_eq!(
        nothing.error(StatusCode::BAD_REQUEST),
        "nothing to update: give \"author\", \"text\" or both"
    );
    let null = call(&app, Method::PATCH, &path, Some(r#"{"text": null}"#)).await;
    assert_eq!(null.error(StatusCode::BAD_REQUEST), "text must be a string");
    let unknown = call(
        &app,
        Method::PATCH,
        "/api/entries/0123456789abcdef01234567/",
        Some(r#"{"text": "x"}"#),
    )
    .await;
    unknown.error(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn delete_returns_204_then_404() {
    let app = new_app();
    let keep = post(&app, "ann", "keep").await;
    let entry = post(&app, "ann", "hello").await;
    let path = format!("/api/entries/{}/", id(&entry));

    let reply = call(&app, Method::DELETE, &path, None).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(reply.body, Value::Null);

    call(&app, Method::GET, &path, None)
        .await
        .error(StatusCode::NOT_FOUND);
    call(&app, Method::DELETE, &path, None)
        .await
        .error(StatusCode::NOT_FOUND);
    call(&app, Method::DELETE, "/api/entries/xyz/", None)
        .await
        .error(StatusCode::NOT_FOUND);
    let list = call(&app, Method::GET, "/api/entries/", None).await;
    assert_eq!(list.body, json!({"objects": [keep]}));
}

#[tokio::test]
async fn validation_errors_say_what_is_wrong() {
    let app = new_app();
    let long_author = "a".repeat(65);
    let long_text = "t".repeat(2001);
    let cases: Vec<(Value, String)> = vec![
        (json!({"text": "x"}), "author is required".into()),
        (json!({"author": "ann"}), "text is required".into()),
        (
            json!({"author": "", "text": "x"}),
            "author must not be empty".into(),
        ),
        (
            json!({"author": "ann", "text": " \n\t"}),
            "text must not be empty".into(),
        ),
        (
            json!({"author": 7, "text": "x"}),
            "author must be a string".into(),
        ),
        (
            json!({"author": "ann", "text": ["x"]}),
            "text must be a string".into(),
        ),
        (
            json!({"author": long_author, "text": "x"}),
            "author must be at most 64 characters (got 65)".into(),
        ),
        (
            json!({"author": "ann", "text": long_text}),
            "text must be at most 2000 characters (got 2001)".into(),
        ),
        (
            json!(["ann", "x"]),
            "the body must be a JSON object with \"author\" and \"text\"".into(),
        ),
    ];
    for (body, message) in cases {
        let reply = call(&app, Method::POST, "/api/entries/", Some(&body.to_string())).await;
        assert_eq!(reply.error(StatusCode::BAD_REQUEST), message, "for {body}");
    }
    // Limits count characters, not bytes.
    post(&app, &"é".repeat(64), &"ü".repeat(2000)).await;
    // Nothing invalid was stored.
    let list = call(&app, Method::GET, "/api/entries/", None).await;
    assert_eq!(list.body["objects"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn malformed_json_is_a_400_json_error() {
    let app = new_app();
    for body in [r#"{"author": "ann", "text": "#, "not json", ""] {
        let reply = call(&app, Method::POST, "/api/entries/", Some(body)).await;
        let message = reply.error(StatusCode::BAD_REQUEST);
        assert!(message.starts_with("malformed JSON: "), "{message}");
    }
    let entry = post(&app, "ann", "hello").await;
    let path = format!("/api/entries/{}/", id(&entry));
    for method in [Method::PUT, Method::PATCH] {
        let reply = call(&app, method, &path, Some("{,}")).await;
        assert!(reply
            .error(StatusCode::BAD_REQUEST)
            .starts_with("malformed JSON: "));
    }
}

#[tokio::test]
async fn an_oversized_body_is_a_413_json_error() {
    let app = new_app();
    let body = json!({"author": "ann", "text": "x".repeat(100 * 1024)}).to_string();
    let reply = call(&app, Method::POST, "/api/entries/", Some(&body)).await;
    let message = reply.error(StatusCode::PAYLOAD_TOO_LARGE);
    assert!(message.starts_with("cannot read the body: "), "{message}");
}

#[tokio::test]
async fn a_body_that_is_not_declared_json_is_refused_as_json() {
    let app = new_app();
    let body = r#"{"author": "ann", "text": "hello"}"#;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let reply = call_with(
            &app,
            Method::POST,
            "/api/entries/",
            content_type,
            Some(body),
        )
        .await;
        assert_eq!(
            reply.error(StatusCode::UNSUPPORTED_MEDIA_TYPE),
            "the body must be JSON, sent with Content-Type: application/json"
        );
    }
    let reply = call_with(
        &app,
        Method::POST,
        "/api/entries/",
        Some("application/json; charset=utf-8"),
        Some(body),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
}

#[tokio::test]
async fn wrong_methods_are_405_and_unknown_routes_404() {
    let app = new_app();
    let entry = post(&app, "ann", "hello").await;
    let item = format!("/api/entries/{}/", id(&entry));
    for (method, path) in [
        (Method::DELETE, "/api/entries/"),
        (Method::PUT, "/api/entries/"),
        (Method::PATCH, "/api/entries/"),
        (Method::POST, item.as_str()),
        (Method::POST, "/"),
    ] {
        let reply = call(&app, method.clone(), path, None).await;
        assert_eq!(
            reply.error(StatusCode::METHOD_NOT_ALLOWED),
            format!("method {method} is not allowed here")
        );
        assert!(reply.headers.contains_key(header::ALLOW), "{reply:?}");
    }
    let reply = call(&app, Method::GET, "/api/nothing", None).await;
    assert_eq!(
        reply.error(StatusCode::NOT_FOUND),
        "no such resource: /api/nothing"
    );
}
