//! The HTTP face of a node: the internal endpoints (signed core messages,
//! copies between nodes), the store's signed delivery URLs, the prism's
//! public API, and health/readiness. Handlers translate; core decides.

use crate::runtime::{file_body, Shared, CONTENT_PATH};
use axum::body::Body as AxumBody;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use stretchfs_core::content::{normalize_ext, ContentMeta, Ext, MAX_EXISTS_HASHES};
use stretchfs_core::hash::{ContentHash, HashKind};
use stretchfs_core::purchase::{Purchase, Token, MAX_LIFE, MIN_LIFE};
use stretchfs_core::{ClientError, ClientRequest, ClientResponse, Duration, Input};
use stretchfs_transport_http::auth::{hex, STREAMED_BODY};
use stretchfs_transport_http::client::unix_secs;
use stretchfs_transport_http::{
    open_prechecked, precheck_message, Refused, UrlError, MAX_ENVELOPE_BYTES, MESSAGE_PATH,
};

type St = State<Arc<Shared>>;

/// The largest JSON body the public API reads (an exists query of
/// `MAX_EXISTS_HASHES` sha512 hashes is about 34 KiB).
const MAX_JSON_BYTES: usize = 64 << 10;
/// Content streams (never buffered whole); a file that fits in one
/// stream chunk is read in one go.
const READ_WHOLE: u64 = 256 << 10;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(MESSAGE_PATH, post(message))
        .route(&format!("{CONTENT_PATH}/{{hash}}"), put(receive_copy))
        .route("/c/{file}", get(serve_copy))
        .route("/v1/content", put(upload))
        .route("/v1/content/exists", post(exists))
        .route("/v1/content/{hash}", get(detail).delete(delete_content))
        .route("/v1/purchases", post(create_purchase))
        .route(
            "/v1/purchases/{token}",
            get(get_purchase).delete(remove_purchase),
        )
        .route("/p/{token}/{filename}", get(deliver))
        .route("/v1/status", get(status))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        // Bodies are capped where they are read: JSON by `read_json`, node
        // messages by `MAX_ENVELOPE_BYTES`, uploads by `max_object_bytes`.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(close_after_refused_body))
        .with_state(shared)
}

/// A request refused part way through its body (or before it) leaves
/// unread bytes on the connection: the answer says `Connection: close`, so
/// the client does not send its next request down a connection the server
/// is about to close (RFC 9112, 9.6).
async fn close_after_refused_body(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let h = req.headers();
    let has_body =
        h.contains_key(header::TRANSFER_ENCODING) || declared_length(h).is_some_and(|n| n > 0);
    let mut resp = next.run(req).await;
    if has_body && (resp.status().is_client_error() || resp.status().is_server_error()) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// An error as clients see it: a status and `{"error":{"code","message"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

#[derive(Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    fn stopped() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "this node is shutting down",
        )
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> ApiError {
        use StatusCode as S;
        match e {
            ClientError::NotReady => ApiError::new(
                S::SERVICE_UNAVAILABLE,
                "not_ready",
                "this prism has not caught up with the cluster yet",
            ),
            ClientError::NotFound(what) => ApiError::new(S::NOT_FOUND, "not_found", what),
            ClientError::Expired => ApiError::new(S::GONE, "expired", "the purchase has expired"),
            ClientError::Forbidden => ApiError::new(
                S::FORBIDDEN,
                "referrer_not_allowed",
                "the referrer is not allowed for this purchase",
            ),
            ClientError::Unavailable(why) => {
                ApiError::new(S::SERVICE_UNAVAILABLE, "unavailable", why)
            }
            ClientError::BadRequest(why) => ApiError::bad(why),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn require_key(s: &Shared, h: &HeaderMap) -> ApiResult<()> {
    use subtle::ConstantTimeEq;
    let got = header_str(h, "authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .as_bytes();
    // Every key is compared, in constant time each, so the answer's timing
    // says nothing about which key (or how much of one) matched.
    let same = std::iter::once(&s.cfg.api_key)
        .chain(&s.cfg.api_keys)
        .fold(subtle::Choice::from(0), |any, key| {
            any | key.as_bytes().ct_eq(got)
        });
    if bool::from(same) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this call needs the API key as `Authorization: Bearer <key>`",
        ))
    }
}

fn require_prism(s: &Shared) -> ApiResult<()> {
    if s.roles.prism {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_a_prism",
            "this node does not serve the public API; ask a prism",
        ))
    }
}

async fn ask(s: &Arc<Shared>, request: ClientRequest) -> ApiResult<ClientResponse> {
    match s.ask(request).await {
        None => Err(ApiError::stopped()),
        Some(ClientResponse::Error(e)) => Err(e.into()),
        Some(r) => Ok(r),
    }
}

fn unexpected(r: ClientResponse) -> ApiError {
    tracing::error!(?r, "core answered with an unexpected response");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "unexpected answer",
    )
}

/// A query string that does not parse, as a JSON error.
fn query<T>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::bad(e.body_text()))
}

/// Unknown paths and methods get the JSON error shape too.
async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!("no {method} {}", uri.path()),
    )
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not take {method}", uri.path()),
    )
}

fn parse_hash(s: &str) -> ApiResult<ContentHash> {
    ContentHash::parse(s).map_err(|e| ApiError::bad(format!("hash {s:?}: {e}")))
}

fn parse_ext(s: &str) -> ApiResult<Ext> {
    normalize_ext(s).map_err(|e| ApiError::bad(e.to_string()))
}

/// The length a request declares, if it declares one.
fn declared_length(h: &HeaderMap) -> Option<u64> {
    header_str(h, "content-length").and_then(|v| v.parse().ok())
}

/// Why a capped body could not be read.
enum BodyError {
    TooLarge,
    Broken(String),
}

/// Reads a body of at most `max` bytes: refused from its declared length
/// before any of it is read, else as soon as more than `max` have come.
async fn read_capped(h: &HeaderMap, body: AxumBody, max: usize) -> Result<Bytes, BodyError> {
    use http_body_util::BodyExt;
    if declared_length(h).is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge);
    }
    match http_body_util::Limited::new(body, max).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Err(e) => Err(BodyError::Broken(e.to_string())),
    }
}

/// A JSON body of at most `MAX_JSON_BYTES`, parsed.
async fn read_json<T: serde::de::DeserializeOwned>(h: &HeaderMap, body: AxumBody) -> ApiResult<T> {
    let bytes = match read_capped(h, body, MAX_JSON_BYTES).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return Err(ApiError::too_large(format!(
                "a JSON body is at most {MAX_JSON_BYTES} bytes"
            )))
        }
        Err(BodyError::Broken(why)) => return Err(ApiError::bad(why)),
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_json", e.to_string()))
}

// ---- internal ----------------------------------------------------------

fn lookup(h: &HeaderMap) -> impl Fn(&str) -> Option<String> + '_ {
    move |name| header_str(h, name).map(str::to_string)
}

/// Refusals of node traffic are logged (rate-limited: a flood must not
/// turn into a flood of log lines) and answered in the JSON error shape.
static REFUSALS: crate::throttle::Throttle = crate::throttle::Throttle::new(10);

fn refuse_node(what: &'static str, why: &Refused) -> Response {
    if let Some(suppressed) = REFUSALS.allow(std::time::Instant::now()) {
        tracing::warn!(reason = %why, suppressed, "refused a {what}");
    }
    let status = StatusCode::from_u16(why.status()).unwrap_or(StatusCode::FORBIDDEN);
    ApiError::new(status, why.code(), why.to_string()).into_response()
}

fn message_too_large() -> Response {
    let why = format!("a node message is at most {MAX_ENVELOPE_BYTES} bytes");
    ApiError::too_large(why).into_response()
}

/// A node message: everything the headers can tell is checked before the
/// body is read (an unsigned or foreign request costs no more than its
/// headers), and the body is read only up to its declared length, at most
/// `MAX_ENVELOPE_BYTES`, within the node's budget of bytes in flight.
async fn message(State(s): St, headers: HeaderMap, body: AxumBody) -> Response {
    let checked = match precheck_message(&s.signer, &s.me, lookup(&headers), unix_secs()) {
        Ok(c) => c,
        Err(why) => return refuse_node("node message", &why),
    };
    // Senders always declare the length (one encoded envelope), so the
    // bytes can be reserved before any is read. Neither a length nor a
    // transfer coding: no body (RFC 9112, 6.3).
    let declared = match declared_length(&headers) {
        Some(n) => n,
        None if !headers.contains_key(header::TRANSFER_ENCODING) => 0,
        None => {
            let why = "a node message declares its content-length";
            let e = ApiError::new(StatusCode::LENGTH_REQUIRED, "length_required", why);
            return e.into_response();
        }
    };
    let Some(declared) = u32::try_from(declared)
        .ok()
        .filter(|n| *n as usize <= MAX_ENVELOPE_BYTES)
    else {
        return message_too_large();
    };
    let Ok(_reserved) = s.message_bytes.try_acquire_many(declared) else {
        let why = "too many message bytes in flight; retry";
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", why).into_response();
    };
    let body = match read_capped(&headers, body, declared as usize).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return message_too_large(),
        Err(BodyError::Broken(why)) => return ApiError::bad(why).into_response(),
    };
    match open_prechecked(&s.signer, checked, &s.me, &body, unix_secs()) {
        Ok(env) => {
            s.input(Input::Message(env));
            StatusCode::NO_CONTENT.into_response()
        }
        Err(why) => refuse_node("node message", &why),
    }
}

#[derive(Deserialize)]
struct ExtQuery {
    ext: String,
}

/// A copy sent by a prism (upload) or another store (repair). Answered
/// only once the copy is verified against its hash and durable.
async fn receive_copy(
    State(s): St,
    Path(hash): Path<String>,
    q: Result<Query<ExtQuery>, QueryRejection>,
    uri: Uri,
    headers: HeaderMap,
    body: AxumBody,
) -> Response {
    let target = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let now = unix_secs();
    if let Err(why) = s
        .signer
        .verify("PUT", target, &s.me, lookup(&headers), STREAMED_BODY, now)
    {
        return refuse_node("content copy", &Refused::Auth(why));
    }
    if !s.roles.store {
        return ApiError::new(StatusCode::NOT_FOUND, "not_a_store", "not a store").into_response();
    }
    let q = match query(q) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let (hash, ext) = match (parse_hash(&hash), parse_ext(&q.ext)) {
        (Ok(h), Ok(e)) => (h, e),
        (Err(e), _) | (_, Err(e)) => return e.into_response(),
    };
    // Already here: core hears of it again (it may have missed it, or be
    // about to drop an older report of it).
    if s.commit_copy(None, hash, ext).is_ok() {
        // Another receive may have renamed it in place and not yet made
        // that durable: acknowledge only a durable copy.
        return match s.content.durable(&hash).await {
            Ok(()) => StatusCode::OK.into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        };
    }
    let staged = match s
        .content
        .stage(Some(hash), hash.kind(), body.into_data_stream())
        .await
    {
        Ok(w) => w,
        Err(crate::disk::WriteError::Mismatch { expected, got }) => {
            tracing::warn!(%expected, %got, "copy does not match its hash; kept nothing");
            let e = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "hash_mismatch",
                format!("content hashes to {got}, not {expected}"),
            );
            return e.into_response();
        }
        Err(e) => {
            tracing::warn!(%hash, error = %e, "could not store a copy");
            return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
        }
    };
    let committed = match s.commit_copy(Some(&staged), hash, ext) {
        Ok(_) => s.content.durable(&hash).await,
        Err(e) => {
            let _ = std::fs::remove_file(&staged.path);
            Err(e)
        }
    };
    match committed {
        // Acknowledged only once the rename is durable.
        Ok(()) => StatusCode::CREATED.into_response(),
        Err(e) => {
            tracing::warn!(%hash, error = %e, "could not store a copy");
            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
    }
}

// ---- store delivery -----------------------------------------------------

#[derive(Deserialize)]
struct SignedQuery {
    /// The store the URL was signed for (16 hex digits).
    n: String,
    e: i64,
    s: String,
}

/// A single byte range of a `size`-byte file: `Ok(None)` for the whole.
fn parse_range(h: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(h) = h else { return Ok(None) };
    let spec = h.strip_prefix("bytes=").ok_or(())?;
    if spec.contains(',') {
        return Ok(None); // Multiple ranges: serve the whole file.
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            (size.saturating_sub(n), size.saturating_sub(1))
        }
        (a, "") => (a.parse().map_err(|_| ())?, size.saturating_sub(1)),
        (a, b) => {
            let (a, b): (u64, u64) = (a.parse().map_err(|_| ())?, b.parse().map_err(|_| ())?);
            (a, b.min(size.saturating_sub(1)))
        }
    };
    if size == 0 || start > end || start >= size {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// The `Range` to honour: none when `If-Range` carries a validator that does
/// not match (RFC 9110, 13.1.5), so the whole file goes out with 200. Only a
/// strong comparison with the entity tag matches; a date never does (stores
/// send no `Last-Modified`).
fn effective_range<'a>(
    range: Option<&'a str>,
    if_range: Option<&str>,
    etag: &str,
) -> Option<&'a str> {
    match if_range.map(str::trim) {
        Some(v) if v != etag => None,
        _ => range,
    }
}

/// Extensions whose content type a browser renders or runs (markup,
/// scripts, styles, plugins): served as downloads.
fn is_active_type(ext: &str) -> bool {
    const ACTIVE: &[&str] = &[
        "htm", "html", "shtml", "xhtml", "xht", "xml", "xsl", "xslt", "svg", "svgz", "js", "mjs",
        "css", "swf", "pdf", "rdf", "mht", "mhtml", "wasm",
    ];
    ACTIVE.contains(&ext)
}

async fn serve_copy(
    State(s): St,
    Path(file): Path<String>,
    q: Result<Query<SignedQuery>, QueryRejection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let q = match query(q) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = s
        .signer
        .verify_url(uri.path(), &q.n, q.e, &q.s, s.cluster_unix_secs())
    {
        let (status, code) = match e {
            UrlError::BadSignature => (StatusCode::FORBIDDEN, "bad_signature"),
            UrlError::Expired => (StatusCode::GONE, "url_expired"),
        };
        return ApiError::new(status, code, e.to_string()).into_response();
    }
    if q.n != s.node_id.to_string() {
        // Signed for a store that was here before (its data directory was
        // lost and it came back as a new one): this one holds nothing it
        // was sent for. Not a 404: the content may well exist elsewhere, and
        // 421 says this server is the wrong one to ask (RFC 9110, 15.5.20).
        let why = format!(
            "this is store {}, not {}: ask the prism again",
            s.node_id, q.n
        );
        return ApiError::new(StatusCode::MISDIRECTED_REQUEST, "wrong_store", why).into_response();
    }
    let hash = match file.split_once('.').map(|(h, _)| parse_hash(h)) {
        Some(Ok(h)) => h,
        _ => return ApiError::bad("expected /c/<hash>.<ext>").into_response(),
    };
    let Some((path, meta)) = s.content.find(&hash) else {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no copy here").into_response();
    };
    let etag = format!("\"{hash}\"");
    if header_str(&headers, "if-none-match") == Some(etag.as_str()) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let size = meta.size;
    let asked = effective_range(
        header_str(&headers, "range"),
        header_str(&headers, "if-range"),
        &etag,
    );
    let range = match parse_range(asked, size) {
        Ok(r) => r,
        Err(()) => {
            let why = format!("the file has {size} bytes: no such range");
            let mut resp =
                ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, "bad_range", why).into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return resp;
        }
    };
    let (status, start, len) = match range {
        Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        None => (StatusCode::OK, 0, size),
    };
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, meta.content_type())
        .header(header::CONTENT_LENGTH, len)
        .header(header::ETAG, etag)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, "private, max-age=3600")
        // Stored bytes are anyone's upload served from the store's origin:
        // never sniffed into something active, never scripted, and types a
        // browser would run are downloaded rather than shown.
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::CONTENT_SECURITY_POLICY, "sandbox");
    if is_active_type(&meta.ext) {
        resp = resp.header(header::CONTENT_DISPOSITION, "attachment");
    }
    if range.is_some() {
        let end = start + len - 1;
        resp = resp.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"));
    }
    let body = if method == Method::HEAD {
        AxumBody::empty()
    } else if start == 0 && len <= READ_WHOLE {
        match tokio::fs::read(&path).await {
            Ok(bytes) if bytes.len() as u64 == size => AxumBody::from(bytes),
            _ => return (StatusCode::INTERNAL_SERVER_ERROR, "copy changed").into_response(),
        }
    } else {
        match file_body(&path, start, len).await {
            Ok(b) => AxumBody::new(b),
            Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        }
    };
    resp.body(body)
        .unwrap_or_else(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
}

// ---- prism: content -----------------------------------------------------

#[derive(Deserialize)]
struct UploadQuery {
    ext: String,
    /// The hash the client expects; the upload is refused (422) if the
    /// bytes differ.
    hash: Option<String>,
    /// Hash type when no hash is given (sha1 by default).
    kind: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub struct Uploaded {
    pub hash: String,
    pub ext: String,
    pub size: u64,
    pub copies: Vec<String>,
}

async fn upload(
    State(s): St,
    q: Result<Query<UploadQuery>, QueryRejection>,
    headers: HeaderMap,
    body: AxumBody,
) -> ApiResult<Response> {
    require_key(&s, &headers)?;
    require_prism(&s)?;
    let q = query(q)?;
    if !s.is_ready() {
        return Err(ClientError::NotReady.into());
    }
    let ext = parse_ext(&q.ext)?;
    let expected = q.hash.as_deref().map(parse_hash).transpose()?;
    let kind = match &q.kind {
        Some(k) => {
            HashKind::from_name(k).ok_or_else(|| ApiError::bad(format!("hash kind {k:?}")))?
        }
        None => HashKind::Sha1,
    };
    let max = s.cfg.max_object_bytes;
    if declared_length(&headers).is_some_and(|n| n > max) {
        return Err(ApiError::too_large(format!(
            "an object is at most {max} bytes here"
        )));
    }
    let spooled = s
        .content
        .spool(expected, kind, body.into_data_stream(), max)
        .await
        .map_err(|e| match e {
            crate::disk::WriteError::Mismatch { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "hash_mismatch",
                e.to_string(),
            ),
            crate::disk::WriteError::TooLarge { .. } => ApiError::too_large(e.to_string()),
            crate::disk::WriteError::Body(_) => ApiError::bad(e.to_string()),
            crate::disk::WriteError::Io(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "disk", e.to_string())
            }
        })?;
    let meta = ContentMeta {
        ext,
        size: spooled.size,
    };
    let hash = spooled.hash;
    // Listed for the copies to stores while it is placed; unlisted and
    // removed when this request ends, however it ends (a client that goes
    // away drops this future part way).
    let _listed = SpoolEntry::list(&s, spooled, meta);
    let answer = ask(&s, ClientRequest::Upload { hash, meta }).await;
    match answer? {
        ClientResponse::Uploaded { hash, size, copies } => {
            let body = Uploaded {
                hash: hash.to_string(),
                ext: ext.to_string(),
                size,
                copies: copies.iter().map(|c| c.to_string()).collect(),
            };
            Ok((StatusCode::CREATED, Json(body)).into_response())
        }
        other => Err(unexpected(other)),
    }
}

/// An upload listed in the prism's spool: unlisted and its file removed
/// when dropped.
struct SpoolEntry {
    shared: Arc<Shared>,
    hash: ContentHash,
    file: crate::disk::TempFile,
}

impl SpoolEntry {
    fn list(s: &Arc<Shared>, spooled: crate::disk::Spooled, meta: ContentMeta) -> SpoolEntry {
        let path = spooled.file.path().to_path_buf();
        s.spool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(spooled.hash, (path, meta));
        SpoolEntry {
            shared: s.clone(),
            hash: spooled.hash,
            file: spooled.file,
        }
    }
}

impl Drop for SpoolEntry {
    fn drop(&mut self) {
        let mut spool = self.shared.spool.lock().unwrap_or_else(|e| e.into_inner());
        // A later upload of the same bytes may have listed its own file.
        if spool
            .get(&self.hash)
            .is_some_and(|(p, _)| p == self.file.path())
        {
            spool.remove(&self.hash);
        }
    }
}

#[derive(Serialize, Deserialize)]
pub struct Detail {
    pub hash: String,
    pub ext: String,
    pub size: u64,
    pub content_type: String,
    pub copies: Vec<String>,
}

async fn detail(State(s): St, Path(hash): Path<String>) -> ApiResult<Json<Detail>> {
    require_prism(&s)?;
    let hash = parse_hash(&hash)?;
    match ask(&s, ClientRequest::Detail { hash }).await? {
        ClientResponse::Detail(rec) => Ok(Json(Detail {
            hash: rec.hash.to_string(),
            content_type: rec.meta.content_type().to_string(),
            ext: rec.meta.ext.to_string(),
            size: rec.meta.size,
            copies: rec.stores.iter().map(|c| c.to_string()).collect(),
        })),
        other => Err(unexpected(other)),
    }
}

#[derive(Deserialize)]
struct ExistsBody {
    hashes: Vec<String>,
}

async fn exists(
    State(s): St,
    headers: HeaderMap,
    body: AxumBody,
) -> ApiResult<Json<serde_json::Value>> {
    require_prism(&s)?;
    let b: ExistsBody = read_json(&headers, body).await?;
    if b.hashes.len() > MAX_EXISTS_HASHES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_hashes",
            format!("at most {MAX_EXISTS_HASHES} hashes per query"),
        ));
    }
    let hashes = b
        .hashes
        .iter()
        .map(|h| parse_hash(h))
        .collect::<ApiResult<Vec<_>>>()?;
    match ask(&s, ClientRequest::Exists { hashes }).await? {
        ClientResponse::Exists(found) => {
            let map: serde_json::Map<String, serde_json::Value> = b
                .hashes
                .into_iter()
                .zip(found)
                .map(|(h, f)| (h.to_ascii_lowercase(), f.into()))
                .collect();
            Ok(Json(serde_json::json!({ "exists": map })))
        }
        other => Err(unexpected(other)),
    }
}

async fn delete_content(
    State(s): St,
    Path(hash): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    require_key(&s, &headers)?;
    require_prism(&s)?;
    let hash = parse_hash(&hash)?;
    match ask(&s, ClientRequest::Delete { hash }).await? {
        ClientResponse::Deleted => Ok(Json(serde_json::json!({ "deleted": hash.to_string() }))),
        other => Err(unexpected(other)),
    }
}

// ---- prism: purchases ---------------------------------------------------

#[derive(Deserialize)]
struct PurchaseBody {
    hash: String,
    ext: String,
    /// Seconds, or a string like "90s", "30m", "2h", "7d".
    life: serde_json::Value,
    #[serde(default)]
    referrers: Vec<String>,
}

#[derive(Serialize, Deserialize)]
pub struct PurchaseView {
    pub token: String,
    pub hash: String,
    pub ext: String,
    /// Unix seconds.
    pub expires: u64,
    pub referrers: Vec<String>,
    pub url: String,
}

fn parse_life(v: &serde_json::Value) -> ApiResult<Duration> {
    let secs = match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => {
            let s = s.trim();
            let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
            let mult = match unit {
                "" | "s" => Some(1),
                "m" => Some(60),
                "h" => Some(3600),
                "d" => Some(86_400),
                _ => None,
            };
            num.parse::<u64>()
                .ok()
                .zip(mult)
                .and_then(|(n, m)| n.checked_mul(m))
        }
        _ => None,
    };
    // Core's bounds, checked here too so no larger number is ever made a
    // `Duration` (whose microseconds would overflow).
    let whole_secs = |d: Duration| u64::try_from(d.as_micros() / 1_000_000).unwrap_or(u64::MAX);
    let (min, max) = (whole_secs(MIN_LIFE), whole_secs(MAX_LIFE));
    match secs {
        Some(s) if (min..=max).contains(&s) => Ok(Duration::from_secs(s)),
        _ => Err(ApiError::bad(format!(
            "life must be {min} to {max} seconds, as a number or like \"30m\", \"2h\", \"7d\""
        ))),
    }
}

/// Where clients reach this prism: the configured public URL, else its
/// listen address. Never the request's `Host`, which the client chooses.
fn public_base(s: &Shared) -> String {
    match &s.cfg.public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => format!("http://{}", s.cfg.listen),
    }
}

fn purchase_view(p: &Purchase, base: &str) -> PurchaseView {
    PurchaseView {
        token: p.token.to_string(),
        hash: p.hash.to_string(),
        ext: p.ext.to_string(),
        expires: p.expires.as_micros() / 1_000_000,
        referrers: p.referrers.clone(),
        url: format!("{base}/p/{}/{}.{}", p.token, p.hash, p.ext),
    }
}

async fn create_purchase(State(s): St, headers: HeaderMap, body: AxumBody) -> ApiResult<Response> {
    // The key before the body: without it, nothing is read.
    require_key(&s, &headers)?;
    require_prism(&s)?;
    let b: PurchaseBody = read_json(&headers, body).await?;
    let request = ClientRequest::Purchase {
        hash: parse_hash(&b.hash)?,
        ext: parse_ext(&b.ext)?.to_string(),
        life: parse_life(&b.life)?,
        referrers: b.referrers,
    };
    match ask(&s, request).await? {
        ClientResponse::Purchase(p) => {
            let view = purchase_view(&p, &public_base(&s));
            Ok((StatusCode::CREATED, Json(view)).into_response())
        }
        other => Err(unexpected(other)),
    }
}

fn parse_token(t: &str) -> ApiResult<Token> {
    Token::parse(t)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such purchase"))
}

async fn get_purchase(State(s): St, Path(token): Path<String>) -> ApiResult<Json<PurchaseView>> {
    require_prism(&s)?;
    let token = parse_token(&token)?;
    match ask(&s, ClientRequest::GetPurchase { token }).await? {
        ClientResponse::Purchase(p) => Ok(Json(purchase_view(&p, &public_base(&s)))),
        other => Err(unexpected(other)),
    }
}

async fn remove_purchase(
    State(s): St,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    require_key(&s, &headers)?;
    require_prism(&s)?;
    let token = parse_token(&token)?;
    match ask(&s, ClientRequest::RemovePurchase { token }).await? {
        ClientResponse::Removed => Ok(Json(serde_json::json!({ "removed": token.to_string() }))),
        other => Err(unexpected(other)),
    }
}

/// The delivery URL a store accepts for `hash.ext` for `url_ttl_secs`.
/// Signatures are reused for up to a second per store and content: the
/// HMAC is most of a redirect's cost, and a URL that stays the same for
/// a moment also caches better downstream.
pub fn signed_url(
    s: &Shared,
    store: stretchfs_core::NodeId,
    addr: std::net::SocketAddr,
    hash: &ContentHash,
    ext: &str,
) -> String {
    let now = s.cluster_unix_secs();
    // Checked at load to be at most `MAX_URL_TTL_SECS`: no wrap.
    let ttl = i64::try_from(s.cfg.url_ttl_secs).unwrap_or(i64::MAX);
    {
        let cache = s.signed_urls.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((expires, cached_ext, url)) = cache.get(&(store, addr, *hash)) {
            if *expires - now >= ttl - 1 && cached_ext == ext {
                return url.clone();
            }
        }
    }
    let path = format!("/c/{hash}.{ext}");
    let expires = now.saturating_add(ttl);
    let sig = s.signer.sign_url(&path, &store.to_string(), expires);
    let url = format!("http://{addr}{path}?n={store}&e={expires}&s={sig}");
    let mut cache = s.signed_urls.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= 10_000 {
        cache.clear();
    }
    cache.insert(
        (store, addr, *hash),
        (expires, ext.to_string(), url.clone()),
    );
    url
}

async fn deliver(
    State(s): St,
    Path((token, _filename)): Path<(String, String)>,
    req: axum::extract::Request,
) -> Response {
    deliver_token(&s, &token, req.headers()).await
}

/// `GET /p/{token}/{filename}` without the router: the hottest path, served
/// straight from the connection (see `server::serve`).
pub async fn deliver_direct<B>(s: &Arc<Shared>, req: &axum::http::Request<B>) -> Option<Response> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return None;
    }
    let rest = req.uri().path().strip_prefix("/p/")?;
    let (token, file) = rest.split_once('/')?;
    if file.is_empty() || file.contains('/') {
        return None;
    }
    Some(deliver_token(s, token, req.headers()).await)
}

async fn deliver_token(s: &Arc<Shared>, token: &str, headers: &HeaderMap) -> Response {
    let answer = async {
        require_prism(s)?;
        let token = parse_token(token)?;
        let referrer = header_str(headers, "referer").map(str::to_string);
        let (store, addr, hash, ext) =
            match ask(s, ClientRequest::Deliver { token, referrer }).await? {
                ClientResponse::Deliver {
                    store,
                    addr,
                    hash,
                    ext,
                } => (store, addr, hash, ext),
                other => return Err(unexpected(other)),
            };
        let url = signed_url(s, store, addr, &hash, &ext);
        if !s.cfg.proxy {
            return Ok((StatusCode::FOUND, [(header::LOCATION, url)]).into_response());
        }
        proxy(headers, &url).await
    };
    answer.await.unwrap_or_else(|e| e.into_response())
}

/// Proxy mode: the prism fetches from the store and streams the bytes.
async fn proxy(headers: &HeaderMap, url: &str) -> ApiResult<Response> {
    let mut req = hyper::Request::get(url);
    for name in [header::RANGE, header::IF_RANGE, header::IF_NONE_MATCH] {
        if let Some(v) = headers.get(&name) {
            req = req.header(name, v);
        }
    }
    let req = req
        .body(crate::client::empty())
        .map_err(|e| ApiError::bad(e.to_string()))?;
    let resp = crate::client::shared()
        .request(req)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "store_unreachable", e.to_string()))?;
    let (parts, body) = resp.into_parts();
    let mut out = Response::builder().status(parts.status);
    for name in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::CONTENT_RANGE,
        header::ETAG,
        header::ACCEPT_RANGES,
        header::X_CONTENT_TYPE_OPTIONS,
        header::CONTENT_SECURITY_POLICY,
        header::CONTENT_DISPOSITION,
    ] {
        if let Some(v) = parts.headers.get(&name) {
            out = out.header(name, v);
        }
    }
    out.body(AxumBody::new(body))
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "proxy", e.to_string()))
}

// ---- health -------------------------------------------------------------

async fn readyz(State(s): St) -> Response {
    if s.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no snapshot yet or catching up\n",
        )
            .into_response()
    }
}

async fn status(State(s): St, headers: HeaderMap) -> ApiResult<Json<crate::status::NodeStatus>> {
    require_key(&s, &headers)?;
    Ok(Json(s.status()))
}

/// A random API key or secret (32 hex digits).
pub fn random_key() -> String {
    hex(&rand::random::<[u8; 16]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_range_honours_only_a_matching_strong_tag() {
        let tag = "\"abc\"";
        let r = Some("bytes=0-3");
        assert_eq!(effective_range(r, None, tag), r);
        assert_eq!(effective_range(r, Some(tag), tag), r);
        assert_eq!(effective_range(r, Some("\"other\""), tag), None);
        assert_eq!(effective_range(r, Some("W/\"abc\""), tag), None);
        assert_eq!(
            effective_range(r, Some("Tue, 01 Dec 2026 10:00:00 GMT"), tag),
            None
        );
        assert_eq!(effective_range(None, Some("\"other\""), tag), None);
    }

    #[test]
    fn active_types_are_downloads() {
        for ext in ["html", "svg", "js", "xml", "htm", "xhtml", "css"] {
            assert!(is_active_type(ext), "{ext}");
        }
        for ext in ["jpg", "png", "mp4", "bin", "txt", "json"] {
            assert!(!is_active_type(ext), "{ext}");
        }
    }

    #[test]
    fn ranges() {
        // Overflowing numbers are not satisfiable, never a panic.
        assert_eq!(
            parse_range(Some("bytes=0-99999999999999999999"), 10),
            Err(())
        );
        assert_eq!(
            parse_range(Some("bytes=-99999999999999999999"), 10),
            Err(())
        );
        assert_eq!(
            parse_range(Some("bytes=18446744073709551615-"), 10),
            Err(())
        );
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Ok(Some((0, 3))));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Ok(Some((5, 9))));
        assert_eq!(parse_range(Some("bytes=-4"), 10), Ok(Some((6, 9))));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), Ok(Some((8, 9))));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=4-2"), 10), Err(()));
        assert_eq!(parse_range(Some("items=0-1"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Ok(None));
    }

    #[test]
    fn lives() {
        use serde_json::json;
        assert_eq!(parse_life(&json!(90)).unwrap(), Duration::from_secs(90));
        assert_eq!(parse_life(&json!("2h")).unwrap(), Duration::from_secs(7200));
        assert_eq!(
            parse_life(&json!("7d")).unwrap(),
            Duration::from_secs(604_800)
        );
        assert!(parse_life(&json!(0)).is_err());
        assert!(parse_life(&json!("2 weeks")).is_err());
        assert!(parse_life(&json!(-5)).is_err());
        // Overflowing multiplications and lives past core's maximum.
        for big in [
            "213503982334602d",
            "18446744073709551615d",
            "99999999999999999999",
        ] {
            assert!(parse_life(&json!(big)).is_err(), "{big}");
        }
        assert!(parse_life(&json!(u64::MAX)).is_err());
        let max = (MAX_LIFE.as_micros() / 1_000_000) as u64;
        assert_eq!(parse_life(&json!(max)).unwrap(), MAX_LIFE);
        assert!(parse_life(&json!(max + 1)).is_err());
        assert!(parse_life(&json!("367d")).is_err());
    }
}
