//! The admin API's extractors: axum's `Path`, `Query` and body extractors with their
//! rejections answered in the API's JSON error shape (`{"error": "..."}`, see
//! [`super::error`]) instead of axum's plain text, so a client parses every admin error the
//! same way.
//!
//! The status stays axum's: 400 for a path that is not UTF-8 or a query that does not
//! deserialize, 413 for a body over [`BODY_LIMIT`] (enforced by the router's
//! `DefaultBodyLimit`).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use serde::de::DeserializeOwned;

use super::error;

/// The largest request body the admin API reads: 64 KiB. Its bodies are small JSON
/// objects; anything bigger is refused with 413 before it is buffered.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Path parameters, as `axum::extract::Path` deserializes them.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(error(rejection.status(), rejection.body_text())),
        }
    }
}

/// The query string, as `axum::extract::Query` deserializes it.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(error(rejection.status(), rejection.body_text())),
        }
    }
}

/// The whole request body, at most [`BODY_LIMIT`] bytes.
pub struct ApiBody(pub Bytes);

impl<S> FromRequest<S> for ApiBody
where
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        match Bytes::from_request(req, state).await {
            Ok(body) => Ok(Self(body)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                let message = format!("request body too large: at most {} KiB", BODY_LIMIT / 1024);
                Err(error(StatusCode::PAYLOAD_TOO_LARGE, message))
            }
            Err(rejection) => Err(error(rejection.status(), rejection.body_text())),
        }
    }
}
