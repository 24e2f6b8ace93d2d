//! The REST resource `/api/entries/`: every answer, errors included, is
//! JSON.

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tbone_dispatch_tokio::mongo::mongodb::bson::oid::ObjectId;

use crate::entry::{Entry, EntryPatch, ValidationError};
use crate::state::Entries;
use crate::storage::{EntryRecord, StorageError};

/// An error answer: its status and `{"error": "<message>"}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not a valid entry (400).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The body is not JSON (400).
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// The body is not declared as JSON (415).
    #[error("the body must be JSON, sent with Content-Type: application/json")]
    NotJson,
    /// An extractor refused the request (a body too large, a websocket
    /// request without the upgrade...), with axum's status and message.
    #[error("{message}")]
    Rejected {
        /// The status axum chose.
        status: StatusCode,
        /// What went wrong.
        message: String,
    },
    /// No such entry, or an id that is not an ObjectId (404).
    #[error("no entry with id `{0}`")]
    NotFound(String),
    /// No such route (404).
    #[error("no such resource: {0}")]
    NoRoute(String),
    /// Known route, unsupported method (405).
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    /// The storage failed (500); details go to the log, not the client.
    #[error("the storage failed; see the server log")]
    Storage(#[from] StorageError),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid(_) | ApiError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            ApiError::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Rejected { status, .. } => *status,
            ApiError::NotFound(_) | ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Storage(error) = &self {
            tracing::error!(%error, "storage failed");
        }
        (self.status(), Json(json!({ "error": self.to_string() }))).into_response()
    }
}

/// A JSON request body, parsed into a [`Value`], whose every rejection is
/// an [`ApiError`] (so axum's plain-text rejections never reach clients).
#[derive(Debug)]
pub struct JsonBody(pub Value);

fn is_json(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::NotJson);
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| ApiError::Rejected {
                status: rejection.status(),
                message: format!("cannot read the body: {}", rejection.body_text()),
            })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::MalformedJson(e.to_string()))
    }
}

/// Parses an id from the path: anything that is not an ObjectId names no
/// entry.
fn object_id(path: Result<Path<String>, PathRejection>) -> Result<ObjectId, ApiError> {
    let Path(id) = path.map_err(|rejection| ApiError::NotFound(rejection.body_text()))?;
    ObjectId::parse_str(&id).map_err(|_| ApiError::NotFound(id))
}

fn found(id: ObjectId, record: Option<EntryRecord>) -> Result<Json<EntryRecord>, ApiError> {
    record
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(id.to_hex()))
}

/// `GET /api/entries/`: `{"objects": [...]}`, oldest first.
pub async fn list(State(entries): State<Entries>) -> Result<Json<Value>, ApiError> {
    let records = entries.list().await?;
    Ok(Json(json!({ "objects": records })))
}

/// `POST /api/entries/`: 201, the entry, and its `Location`.
pub async fn create(
    State(entries): State<Entries>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let entry = Entry::from_body(&body)?;
    let record = entries.insert(entry).await?;
    let location = HeaderValue::try_from(format!("/api/entries/{}/", record.id.to_hex()));
    let mut response = (StatusCode::CREATED, Json(record)).into_response();
    if let Ok(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `GET /api/entries/{id}/`.
pub async fn read(
    State(entries): State<Entries>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<EntryRecord>, ApiError> {
    let id = object_id(id)?;
    found(id, entries.get(id).await?)
}

/// `PUT /api/entries/{id}/`: replaces both fields.
pub async fn replace(
    State(entries): State<Entries>,
    id: Result<Path<String>, PathRejection>,
    body: Result<JsonBody, ApiError>,
) -> Result<Json<EntryRecord>, ApiError> {
    let id = object_id(id)?;
    let entry = Entry::from_body(&body?.0)?;
    found(id, entries.replace(id, entry).await?)
}

/// `PATCH /api/entries/{id}/`: changes the fields given.
pub async fn update(
    State(entries): State<Entries>,
    id: Result<Path<String>, PathRejection>,
    body: Result<JsonBody, ApiError>,
) -> Result<Json<EntryRecord>, ApiError> {
    let id = object_id(id)?;
    let patch = EntryPatch::from_body(&body?.0)?;
    found(id, entries.update(id, patch).await?)
}

/// `DELETE /api/entries/{id}/`: 204.
pub async fn delete(
    State(entries): State<Entries>,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let id = object_id(id)?;
    match entries.delete(id).await? {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(ApiError::NotFound(id.to_hex())),
    }
}
