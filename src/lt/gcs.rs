//! The LT store on Cloud Storage.
//!
//! Uploads and downloads go through the official `google-cloud-storage` client (resumable
//! uploads, checksums, its own retry policy). Existence checks, deletes and listings do not:
//! in that crate they live on the gRPC `StorageControl` client, and fake-gcs-server (the
//! emulator) speaks only the JSON API. Those three calls therefore use the JSON API
//! directly, with the same credentials the client uses. The JSON API is a first-class GCS
//! interface, so one code path serves the emulator and production alike, and the emulator
//! tests exercise exactly what runs in production.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use google_cloud_auth::credentials::{self, CacheableResource, Credentials};
use google_cloud_storage::client::Storage;
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use tracing::Instrument;

use super::{
    BlobInfo, ByteStream, CONTENT_TYPE_KEY, EXPIRES_AT_KEY, ListPage, ListedBlob, LtAccess,
    LtStore, NameRange,
};
use crate::error::{ErrorKind, StoreError, StoreKind, StoreResult};
use crate::iam::{Method as Call, Resource};
use crate::model::{ObjectMeta, Revision, Timestamp};

const GCS: &str = "https://storage.googleapis.com";

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
/// Where the LT bucket is and how to reach it.
pub struct GcsConfig {
    /// The bucket's name.
    pub bucket: String,
    /// Base URL of an emulator (`http://host:port`); unset means Cloud Storage with
    /// Application Default Credentials. Defaults to `STORAGE_EMULATOR_HOST`.
    pub emulator_url: Option<String>,
    /// Deadline for one JSON API call, for opening a read and for each chunk read; an
    /// upload of `n` bytes gets this plus a second per MiB, and a streamed upload fails
    /// after this long without progress.
    #[serde(with = "crate::duration")]
    pub timeout: Duration,
}

impl Default for GcsConfig {
    fn default() -> Self {
        Self {
            bucket: "tiersweep-lt".into(),
            emulator_url: std::env::var("STORAGE_EMULATOR_HOST").ok().map(|h| {
                if h.contains("://") {
                    h
                } else {
                    format!("http://{h}")
                }
            }),
            timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
/// LT on Cloud Storage, through the official client (uploads, downloads) and its JSON API
/// (existence checks, deletes, listings).
pub struct GcsLt {
    storage: Storage,
    http: reqwest::Client,
    credentials: Credentials,
    /// `…/storage/v1/b/{bucket}/o`, the JSON API's object collection.
    objects: Url,
    bucket: String,
    /// `projects/_/buckets/{bucket}`, as the official client names buckets.
    bucket_path: String,
    /// Talking to fake-gcs-server, which has no IAM API.
    emulated: bool,
    /// [`GcsConfig::timeout`], applied here to the official client's calls too.
    timeout: Duration,
}

/// The slowest transfer an upload's deadline allows for: `n` bytes get
/// [`GcsConfig::timeout`] plus one second per MiB.
const MIN_UPLOAD_BYTES_PER_S: u64 = 1 << 20;

/// The memory a streamed upload holds: the client buffers this much until GCS has
/// persisted it (a source without `Seek` cannot be rewound). Below it an upload is one
/// request; above it, a resumable upload in chunks of this size (a multiple of 256 KiB,
/// as resumable uploads require).
pub const UPLOAD_BUFFER: usize = 8 * 1024 * 1024;

/// A [`ByteStream`] as the client's `StreamingSource`, counting what it hands over.
struct Source {
    /// The client requires `Sync`; the mutex is never contended (`next` takes `&mut`).
    body: std::sync::Mutex<Option<ByteStream>>,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Source {
    /// The source, and the count of bytes the client has taken from it.
    fn new(body: ByteStream) -> (Self, std::sync::Arc<std::sync::atomic::AtomicU64>) {
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let source = Self {
            body: std::sync::Mutex::new(Some(body)),
            sent: sent.clone(),
        };
        (source, sent)
    }
}

/// A [`Source`] whose size is known: the client sends one below its resumable threshold
/// in a single request, streaming the body as it comes. The client rewinds a source to 0
/// before each attempt; this one can be only before its first byte is taken (the writer
/// makes no second attempt of a stream).
struct SizedSource {
    source: Source,
    size: u64,
}

impl google_cloud_storage::streaming_source::StreamingSource for SizedSource {
    type Error = std::io::Error;

    async fn next(&mut self) -> Option<Result<Bytes, Self::Error>> {
        self.source.next().await
    }

    async fn size_hint(
        &self,
    ) -> Result<google_cloud_storage::streaming_source::SizeHint, Self::Error> {
        Ok(google_cloud_storage::streaming_source::SizeHint::with_exact(self.size))
    }
}

impl google_cloud_storage::streaming_source::Seek for SizedSource {
    type Error = std::io::Error;

    async fn seek(&mut self, offset: u64) -> Result<(), Self::Error> {
        let taken = self.source.sent.load(std::sync::atomic::Ordering::Relaxed);
        if offset == taken {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "a streamed upload cannot be rewound (to byte {offset} of {taken} sent)"
            )))
        }
    }
}

impl google_cloud_storage::streaming_source::StreamingSource for Source {
    type Error = std::io::Error;

    async fn next(&mut self) -> Option<Result<Bytes, Self::Error>> {
        use futures::StreamExt as _;
        let body = self.body.get_mut().unwrap_or_else(|e| e.into_inner());
        let item = body.as_mut()?.next().await;
        match &item {
            Some(Ok(chunk)) => {
                self.sent
                    .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            // The client may ask again after the end or an error; a stream need not
            // answer that, so this source remembers it is done.
            _ => *body = None,
        }
        item
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Listing {
    #[serde(default)]
    items: Vec<Item>,
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Item {
    name: String,
    time_created: String,
}

/// The fields of an object resource that [`LtStore::stat`] reads.
#[derive(Deserialize)]
struct Stat {
    /// The JSON API sends sizes as decimal strings.
    size: String,
    #[serde(default)]
    metadata: std::collections::BTreeMap<String, String>,
}

/// `builder` with `meta` on the object: user metadata as custom metadata, the content
/// type and expiry under reserved custom keys (read back from there), and the content type
/// as GCS's own field too, which is what GCS serves.
fn with_meta<T>(
    mut builder: google_cloud_storage::builder::storage::WriteObject<T>,
    meta: &ObjectMeta,
) -> google_cloud_storage::builder::storage::WriteObject<T> {
    if let Some(ct) = meta.content_type() {
        builder = builder.set_content_type(ct);
    }
    let expiry = meta
        .expires_at()
        .map(|at| (EXPIRES_AT_KEY.to_owned(), at.millis().to_string()));
    let content_type = meta
        .content_type()
        .map(|ct| (CONTENT_TYPE_KEY.to_owned(), ct.to_owned()));
    let custom: Vec<(String, String)> = meta
        .user()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .chain(expiry)
        .chain(content_type)
        .collect();
    if !custom.is_empty() {
        builder = builder.set_metadata(custom);
    }
    builder
}

/// The metadata as [`with_meta`] stored it, checked like any input.
fn meta_of(stat: Stat) -> Result<ObjectMeta, String> {
    let mut meta = ObjectMeta::default();
    for (k, v) in stat.metadata {
        if k == CONTENT_TYPE_KEY {
            meta = meta.with_content_type(v).map_err(|e| e.to_string())?;
        } else if k == EXPIRES_AT_KEY {
            let at = v
                .parse::<i64>()
                .map_err(|_| format!("{EXPIRES_AT_KEY} is not a number: {v:?}"))?;
            meta = meta.with_expiry(Timestamp(at));
        } else if !k.starts_with(crate::model::meta::RESERVED_PREFIX) {
            meta = meta.with_user(k, v).map_err(|e| e.to_string())?;
        }
    }
    Ok(meta)
}

impl GcsLt {
    /// Builds the clients and checks that the bucket exists and grants what `access` needs
    /// (`check_access`), so that a wrong bucket name or a missing grant fails here,
    /// by name, instead of as deletes that quietly find nothing.
    pub async fn connect(config: &GcsConfig, access: LtAccess) -> StoreResult<Self> {
        let bucket = &config.bucket;
        let fail = |kind, message: String| {
            StoreError::new(
                StoreKind::Lt,
                "connect",
                format!("bucket {bucket}"),
                kind,
                message,
            )
        };
        let (base, credentials) = match &config.emulator_url {
            Some(url) => (
                url.trim_end_matches('/').to_owned(),
                credentials::anonymous::Builder::new().build(),
            ),
            None => {
                let creds = credentials::Builder::default().build().map_err(|e| {
                    fail(
                        ErrorKind::Permanent,
                        format!("no Application Default Credentials: {e}"),
                    )
                })?;
                (GCS.to_owned(), creds)
            }
        };
        let storage = Storage::builder()
            .with_endpoint(base.clone())
            .with_credentials(credentials.clone())
            .build()
            .await
            .map_err(|e| {
                fail(
                    ErrorKind::Permanent,
                    format!("building the storage client: {e}"),
                )
            })?;
        let mut objects = Url::parse(&base)
            .map_err(|e| fail(ErrorKind::Permanent, format!("bad endpoint {base:?}: {e}")))?;
        objects
            .path_segments_mut()
            .map_err(|()| fail(ErrorKind::Permanent, format!("bad endpoint {base:?}")))?
            .pop_if_empty()
            .extend(["storage", "v1", "b", bucket.as_str(), "o"]);
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| {
                fail(
                    ErrorKind::Permanent,
                    format!("building the HTTP client: {e}"),
                )
            })?;
        let lt = Self {
            storage,
            http,
            credentials,
            objects,
            bucket: bucket.clone(),
            bucket_path: format!("projects/_/buckets/{bucket}"),
            emulated: config.emulator_url.is_some(),
            timeout: config.timeout,
        };
        lt.check_access(access).await?;
        Ok(lt)
    }

    /// Checks that the bucket exists and that the caller holds the permissions `access`
    /// needs, through `testIamPermissions`, which itself needs no permission: a cleaner
    /// granted only object get and delete can check its bucket at start, and a missing
    /// grant stops it there, by name, instead of failing every job.
    ///
    /// fake-gcs-server has no IAM API (and enforces no permissions), so against an
    /// emulator the check reads the bucket instead.
    async fn check_access(&self, access: LtAccess) -> StoreResult<()> {
        let mut url = self.objects.clone();
        let emulated = self.emulated;
        {
            let mut segments = url.path_segments_mut().map_err(|()| {
                self.err("check_access", "", ErrorKind::Permanent, "bad URL".into())
            })?;
            segments.pop();
            if !emulated {
                segments.extend(["iam", "testPermissions"]);
            }
        }
        if !emulated {
            let mut q = url.query_pairs_mut();
            for p in access.permissions() {
                q.append_pair("permissions", p);
            }
        }
        let response = self
            .send(
                Method::GET,
                url,
                Call::GcsBucketsTestIamPermissions,
                "check_access",
                "",
            )
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Err(self.err(
                "check_access",
                "",
                ErrorKind::Permanent,
                "bucket does not exist; create it (infra/local/provision.sh, infra/terraform) or fix gcs.bucket".into(),
            )),
            s if s.is_success() && emulated => Ok(()),
            s if s.is_success() => {
                #[derive(Deserialize)]
                struct Held {
                    #[serde(default)]
                    permissions: Vec<String>,
                }
                let held: Held = response.json().await.map_err(|e| {
                    self.err(
                        "check_access",
                        "",
                        ErrorKind::Malformed,
                        format!("unreadable testIamPermissions answer: {e}"),
                    )
                })?;
                let missing: Vec<&str> = access
                    .permissions()
                    .iter()
                    .copied()
                    .filter(|p| !held.permissions.iter().any(|h| h == p))
                    .collect();
                if missing.is_empty() {
                    Ok(())
                } else {
                    Err(self.err(
                        "check_access",
                        "",
                        ErrorKind::Permanent,
                        format!(
                            "the service account lacks {} on the bucket, which {} needs \
                             (see docs/deploy.md, IAM)",
                            missing.join(", "),
                            access.who()
                        ),
                    ))
                }
            }
            s => Err(self.status_error("check_access", "", s, response).await),
        }
    }

    fn object_url(&self, name: &str) -> Url {
        let mut url = self.objects.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.push(name);
        }
        url
    }
    /// Awaits a streamed upload under a deadline on progress (a stream's size is unknown,
    /// or a gated one may wait for its record): it fails once a whole `timeout` passes
    /// without the client taking a byte from the source (which it does only as the
    /// request goes out, or as GCS persists what it holds), or, after the last byte,
    /// without GCS answering. Returns the bytes sent.
    async fn watch_upload(
        &self,
        span: &tracing::Span,
        rev: &Revision,
        sent: &std::sync::atomic::AtomicU64,
        upload: impl std::future::Future<
            Output = Result<google_cloud_storage::model::Object, google_cloud_storage::Error>,
        >,
    ) -> StoreResult<u64> {
        tokio::pin!(upload);
        let mut seen = 0;
        let result = loop {
            tokio::select! {
                result = &mut upload => break result,
                () = tokio::time::sleep(self.timeout) => {
                    let now = sent.load(std::sync::atomic::Ordering::Relaxed);
                    if now == seen {
                        record_error(span, "timeout");
                        return Err(self.deadline_passed("write_object", rev.as_str(), self.timeout));
                    }
                    seen = now;
                }
            }
        };
        let size = sent.load(std::sync::atomic::Ordering::Relaxed);
        if let Err(e) = &result
            && e.http_status_code() == Some(412)
        {
            return Ok(size);
        }
        result.map_err(|e| {
            let kind = e
                .http_status_code()
                .map_or("error".into(), |c| c.to_string());
            record_error(span, &kind);
            self.client_error("write_object", rev.as_str(), e)
        })?;
        Ok(size)
    }

    /// `call`, or a transient error once `deadline` has passed. The official client sets
    /// no deadline on uploads and downloads (its TODO #2044), so a call on a connection
    /// that stalls — a peer gone silent, a proxy that keeps the socket — would wait
    /// forever, and with it the writer's request. A call given up on may still take
    /// effect: an upload landing after its error is what recovery already cleans.
    async fn within<T>(
        &self,
        op: &'static str,
        object: &str,
        deadline: Duration,
        call: impl std::future::Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        match tokio::time::timeout(deadline, call).await {
            Ok(result) => result,
            Err(_) => Err(self.deadline_passed(op, object, deadline)),
        }
    }

    fn deadline_passed(&self, op: &'static str, object: &str, deadline: Duration) -> StoreError {
        self.err(
            op,
            object,
            ErrorKind::Transient,
            format!(
                "no answer within {deadline:?} (gcs.timeout; the client library sets no \
                 deadline of its own); the call may still take effect"
            ),
        )
    }

    fn err(&self, op: &'static str, object: &str, kind: ErrorKind, message: String) -> StoreError {
        StoreError::new(
            StoreKind::Lt,
            op,
            format!("gs://{}/{object}", self.bucket),
            kind,
            message,
        )
    }

    async fn status_error(
        &self,
        op: &'static str,
        object: &str,
        status: StatusCode,
        response: reqwest::Response,
    ) -> StoreError {
        let kind = if status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
        {
            ErrorKind::Transient
        } else {
            ErrorKind::Permanent
        };
        let body = response.text().await.unwrap_or_default();
        let body: String = body.chars().take(300).collect();
        self.err(op, object, kind, format!("HTTP {status}: {body}"))
    }

    /// One authenticated JSON API request.
    async fn send(
        &self,
        method: Method,
        url: Url,
        call: Call,
        op: &'static str,
        object: &str,
    ) -> StoreResult<reqwest::Response> {
        crate::iam::record(call, Resource::Bucket);
        let headers = match self.credentials.headers(http::Extensions::new()).await {
            Ok(CacheableResource::New { data, .. }) => data,
            Ok(CacheableResource::NotModified) => http::HeaderMap::new(),
            Err(e) => {
                let kind = if e.is_transient() {
                    ErrorKind::Transient
                } else {
                    ErrorKind::Permanent
                };
                return Err(self.err(op, object, kind, format!("credentials: {e}")));
            }
        };
        let span = self.span(op);
        let result = self
            .http
            .request(method, url)
            .headers(headers)
            .send()
            .instrument(span.clone())
            .await;
        match &result {
            Ok(r) => {
                let status = r.status();
                span.record("http.response.status_code", status.as_u16());
                // A 404 is an answer (gone, absent), not a failure.
                if !status.is_success() && status != StatusCode::NOT_FOUND {
                    record_error(&span, status.as_str());
                }
            }
            Err(e) if e.is_timeout() => record_error(&span, "timeout"),
            Err(_) => record_error(&span, "transport"),
        }
        result.map_err(|e| {
            let kind = if e.is_timeout() || e.is_connect() || e.is_request() {
                ErrorKind::Transient
            } else {
                ErrorKind::Permanent
            };
            self.err(op, object, kind, e.to_string()).with_source(e)
        })
    }

    /// A CLIENT span for one call, named `{op} {bucket}`.
    fn span(&self, op: &'static str) -> tracing::Span {
        tracing::info_span!("gcs",
            otel.name = %format!("{op} {}", self.bucket),
            otel.kind = "client",
            "gcp.gcs.bucket" = %self.bucket,
            "tiersweep.lt.operation" = op,
            "http.response.status_code" = tracing::field::Empty,
            error.type = tracing::field::Empty,
            otel.status_code = tracing::field::Empty)
    }

    fn client_error(
        &self,
        op: &'static str,
        object: &str,
        e: google_cloud_storage::Error,
    ) -> StoreError {
        let code = e.http_status_code();
        let kind = if e.is_timeout()
            || e.is_io()
            || e.is_connect()
            || e.is_exhausted()
            || code.is_some_and(|c| c >= 500 || c == 429 || c == 408)
        {
            ErrorKind::Transient
        } else {
            ErrorKind::Permanent
        };
        self.err(op, object, kind, e.to_string()).with_source(e)
    }
}

fn record_error(span: &tracing::Span, kind: &str) {
    span.record("error.type", kind);
    span.record("otel.status_code", "ERROR");
}

fn is_not_found(e: &google_cloud_storage::Error) -> bool {
    e.http_status_code() == Some(404)
        || e.status()
            .is_some_and(|s| s.code == google_cloud_gax::error::rpc::Code::NotFound)
}

impl GcsLt {
    /// Opens a download of `name`: `None` when the object does not exist.
    async fn open_read(
        &self,
        name: &str,
    ) -> StoreResult<Option<google_cloud_storage::read_object::ReadObjectResponse>> {
        crate::iam::record(Call::GcsObjectsGet, Resource::Bucket);
        let open = async {
            match self
                .storage
                .read_object(&self.bucket_path, name)
                .send()
                .await
            {
                Ok(r) => Ok(Some(r)),
                Err(e) if is_not_found(&e) => Ok(None),
                Err(e) => Err(self.client_error("read_object", name, e)),
            }
        };
        self.within("read_object", name, self.timeout, open).await
    }
}

#[async_trait]
impl LtStore for GcsLt {
    async fn put_with_meta(
        &self,
        rev: &Revision,
        bytes: Bytes,
        meta: &ObjectMeta,
    ) -> StoreResult<()> {
        crate::iam::record(Call::GcsObjectsInsert, Resource::Bucket);
        let span = self.span("write_object");
        // Create-only: revision names are minted per write, so "already exists" means an
        // earlier attempt of this upload landed, and nothing may overwrite a blob. The
        // precondition would make the client retry on its own; it must not, since only the
        // writer knows whether its guard still allows another attempt.
        let deadline =
            self.timeout + Duration::from_secs(bytes.len() as u64 / MIN_UPLOAD_BYTES_PER_S);
        let upload = with_meta(
            self.storage
                .write_object(&self.bucket_path, rev.as_str(), bytes),
            meta,
        )
        .set_if_generation_match(0)
        .with_idempotency(false)
        .send_buffered()
        .instrument(span.clone());
        let Ok(result) = tokio::time::timeout(deadline, upload).await else {
            record_error(&span, "timeout");
            return Err(self.deadline_passed("write_object", rev.as_str(), deadline));
        };
        if let Err(e) = &result
            && e.http_status_code() == Some(412)
        {
            return Ok(());
        }
        result.map_err(|e| {
            let kind = e
                .http_status_code()
                .map_or("error".into(), |c| c.to_string());
            record_error(&span, &kind);
            self.client_error("write_object", rev.as_str(), e)
        })?;
        Ok(())
    }

    async fn put_stream(
        &self,
        rev: &Revision,
        body: ByteStream,
        meta: &ObjectMeta,
    ) -> StoreResult<u64> {
        crate::iam::record(Call::GcsObjectsInsert, Resource::Bucket);
        let span = self.span("write_object");
        let (source, sent) = Source::new(body);
        // As `put`: create-only, and no retries the writer did not decide on. Within a
        // resumable upload the client re-sends only what it still buffers.
        let upload = with_meta(
            self.storage
                .write_object(&self.bucket_path, rev.as_str(), source),
            meta,
        )
        .set_if_generation_match(0)
        .with_idempotency(false)
        .with_resumable_upload_threshold(UPLOAD_BUFFER)
        .with_resumable_upload_buffer_size(UPLOAD_BUFFER)
        .send_buffered()
        .instrument(span.clone());
        self.watch_upload(&span, rev, &sent, upload).await
    }

    async fn put_stream_sized(
        &self,
        rev: &Revision,
        body: ByteStream,
        declared: super::Declared,
        meta: &ObjectMeta,
    ) -> StoreResult<u64> {
        let body = super::exactly(body, declared);
        if declared.size >= UPLOAD_BUFFER as u64 {
            return self.put_stream(rev, body, meta).await;
        }
        crate::iam::record(Call::GcsObjectsInsert, Resource::Bucket);
        let span = self.span("write_object");
        let (source, sent) = Source::new(body);
        // One multipart request whose body is sent as the stream yields it (the buffered
        // single-shot upload would wait for the whole stream before sending a byte). The
        // checksum goes in the request's metadata: left to the client, it would follow the
        // media as a third part, which fake-gcs-server takes for the object's bytes.
        let upload = with_meta(
            self.storage.write_object(
                &self.bucket_path,
                rev.as_str(),
                SizedSource {
                    source,
                    size: declared.size,
                },
            ),
            meta,
        )
        .with_known_crc32c(declared.crc32c)
        .set_if_generation_match(0)
        .with_idempotency(false)
        .with_resumable_upload_threshold(UPLOAD_BUFFER)
        .send_unbuffered()
        .instrument(span.clone());
        self.watch_upload(&span, rev, &sent, upload).await
    }

    async fn get(&self, rev: &Revision) -> StoreResult<Option<Bytes>> {
        let name = rev.as_str();
        let Some(mut response) = self.open_read(name).await? else {
            return Ok(None);
        };
        let mut contents = Vec::new();
        while let Some(chunk) = tokio::time::timeout(self.timeout, response.next())
            .await
            .map_err(|_| self.deadline_passed("read_object", name, self.timeout))?
        {
            let chunk = chunk.map_err(|e| self.client_error("read_object", name, e))?;
            contents.extend_from_slice(&chunk);
        }
        Ok(Some(Bytes::from(contents)))
    }

    async fn get_stream(&self, rev: &Revision) -> StoreResult<Option<ByteStream>> {
        let name = rev.as_str();
        let Some(response) = self.open_read(name).await? else {
            return Ok(None);
        };
        // The client resumes an interrupted download itself, pinned to the generation it
        // opened; an error it gives up on ends the stream.
        let what = format!("gs://{}/{name}", self.bucket);
        let timeout = self.timeout;
        let stream = futures::stream::unfold(Some(response), move |response| {
            let what = what.clone();
            async move {
                let mut response = response?;
                let Ok(next) = tokio::time::timeout(timeout, response.next()).await else {
                    return Some((
                        Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("reading {what}: no data within {timeout:?} (gcs.timeout)"),
                        )),
                        None,
                    ));
                };
                match next? {
                    Ok(chunk) => Some((Ok(chunk), Some(response))),
                    Err(e) => Some((
                        Err(std::io::Error::other(format!("reading {what}: {e}"))),
                        None,
                    )),
                }
            }
        });
        Ok(Some(Box::pin(stream)))
    }

    async fn stat(&self, rev: &Revision) -> StoreResult<Option<BlobInfo>> {
        let name = rev.as_str();
        let mut url = self.object_url(name);
        url.query_pairs_mut().append_pair("fields", "size,metadata");
        let response = self
            .send(Method::GET, url, Call::GcsObjectsGet, "stat", name)
            .await?;
        match response.status() {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND => return Ok(None),
            s => return Err(self.status_error("stat", name, s, response).await),
        }
        let malformed = |reason: String| self.err("stat", name, ErrorKind::Malformed, reason);
        let stat: Stat = response
            .json()
            .await
            .map_err(|e| malformed(format!("unreadable object resource: {e}")))?;
        let size = stat
            .size
            .parse::<u64>()
            .map_err(|_| malformed(format!("size is not a number: {:?}", stat.size)))?;
        let meta = meta_of(stat).map_err(|e| malformed(format!("object metadata: {e}")))?;
        Ok(Some(BlobInfo { size, meta }))
    }

    async fn delete(&self, rev: &Revision) -> StoreResult<()> {
        let name = rev.as_str();
        let response = self
            .send(
                Method::DELETE,
                self.object_url(name),
                Call::GcsObjectsDelete,
                "delete",
                name,
            )
            .await?;
        match response.status() {
            // 404: already gone, which is what a delete wants. The bucket itself was
            // checked at connect, so this is the object.
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            s => Err(self.status_error("delete", name, s, response).await),
        }
    }

    async fn list(&self, range: &NameRange, page_token: Option<String>) -> StoreResult<ListPage> {
        let prefix = range.prefix.as_str();
        let mut url = self.objects.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("prefix", prefix)
                .append_pair("maxResults", "1000")
                .append_pair("fields", "items(name,timeCreated),nextPageToken");
            if let Some(start) = &range.start {
                q.append_pair("startOffset", start);
            }
            if let Some(end) = &range.end {
                q.append_pair("endOffset", end);
            }
            if let Some(token) = &page_token {
                q.append_pair("pageToken", token);
            }
        }
        let response = self
            .send(Method::GET, url, Call::GcsObjectsList, "list", prefix)
            .await?;
        let status = response.status();
        if !status.is_success() {
            return Err(self.status_error("list", prefix, status, response).await);
        }
        let malformed = |reason: String| self.err("list", prefix, ErrorKind::Malformed, reason);
        let listing: Listing = response
            .json()
            .await
            .map_err(|e| malformed(format!("unreadable listing: {e}")))?;
        let blobs = listing
            .items
            .into_iter()
            .map(|i| {
                let created = Timestamp::parse_rfc3339(&i.time_created)
                    .map_err(|e| malformed(format!("object {}: {e}", i.name)))?;
                Ok(ListedBlob {
                    name: i.name,
                    created,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(ListPage {
            blobs,
            next: listing.next_page_token,
        })
    }
}
