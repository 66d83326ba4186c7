//! When and how long to retry a registry request: retryable answers, backoff, `Retry-After`, and the
//! error of an answer that is not retried.

use std::time::Duration;

use reqwest::{header, StatusCode};

use crate::error::Error;

/// Retries after the first attempt, with [`backoff`] between them.
pub(crate) const MAX_RETRIES: u32 = 3;
/// The longest `Retry-After` we honour; a registry asking for more gets it capped.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// 200 ms, 400 ms, 800 ms.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200 << attempt.min(5))
}

pub(crate) fn retryable_status(s: StatusCode) -> bool {
    s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS || s == StatusCode::REQUEST_TIMEOUT
}

/// How long to wait before retrying after `resp`: its `Retry-After` in seconds when it has one (429 and
/// 503 answers do), capped at [`MAX_RETRY_AFTER`]; else [`backoff`].
pub(crate) fn retry_delay(resp: &reqwest::Response, attempt: u32) -> Duration {
    resp.headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or_else(
            || backoff(attempt),
            |secs| Duration::from_secs(secs).min(MAX_RETRY_AFTER),
        )
}

/// An [`Error::Status`] with the start of the body; registry error JSON becomes `CODE: message` lines.
pub(crate) async fn status_error(method: &str, resp: reqwest::Response) -> Error {
    let status = resp.status();
    let url = resp.url().to_string();
    // The body is only for the message; failing to read it must not hide the status.
    let raw = resp.bytes().await.unwrap_or_default();
    status_error_parts(method, status, url, &raw)
}

/// [`status_error`] for a response already read.
pub(crate) fn status_error_parts(
    method: &str,
    status: StatusCode,
    url: String,
    raw: &[u8],
) -> Error {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<RegistryError>,
    }
    #[derive(serde::Deserialize)]
    struct RegistryError {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let body = match serde_json::from_slice::<Errors>(raw) {
        Ok(e) if !e.errors.is_empty() => e
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        _ => {
            let text = String::from_utf8_lossy(raw);
            let text = text.trim();
            match text.char_indices().nth(300) {
                Some((i, _)) => format!("{}…", &text[..i]),
                None if text.is_empty() => "(empty body)".to_owned(),
                None => text.to_owned(),
            }
        }
    };
    Error::Status {
        status: status.as_u16(),
        method: method.to_owned(),
        url,
        body,
    }
}
