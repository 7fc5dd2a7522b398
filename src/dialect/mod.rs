//! The four APIs, each in its own file behind one trait.
//!
//! A dialect file knows its API and nothing of the others. As a *front* (what casegate
//! serves to clients) it recognizes its paths and methods as operations ([`Op`]), checks
//! its clients' credentials, reads its uploads into the canonical [`UploadMeta`] plus a
//! stream of file bytes, and renders every answer and error in its own form. As a *back*
//! (what casegate asks of an upstream) it builds its upload and the calls of every other
//! operation, and reads its upstream's answers into canonical types. Pairings are never
//! written out: any front works with any back because both sides meet in the canonical
//! types of [`crate::upload`]; the pipelines in [`crate::forward`] (uploads) and
//! [`crate::read`] (everything else) drive the same steps for every pair.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};

use crate::error::{Body, Error};
use crate::inbound::{BodyStream, Inbound, Limits};
use crate::secret::{Accepted, MacKey};
use crate::upload::{
    Attachment, CommentsPage, FileRef, FileView, Kind, Kinds, Links, Listed, Listing, Outcome,
    Page, UploadMeta, UploadResult,
};

pub mod caseiq;
pub mod kibana;
pub mod thalamus;
pub mod tines;
pub mod wire;

/// The four APIs casegate speaks. Adding a fifth means one new file in `dialect/` and one
/// line in each of `ALL`, `name` and [`get`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DialectId {
    Thalamus,
    Tines,
    Caseiq,
    Kibana,
}

impl DialectId {
    pub const ALL: [DialectId; 4] = [
        DialectId::Thalamus,
        DialectId::Tines,
        DialectId::Caseiq,
        DialectId::Kibana,
    ];

    /// The name used in routes.toml and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DialectId::Thalamus => "thalamus",
            DialectId::Tines => "tines",
            DialectId::Caseiq => "caseiq",
            DialectId::Kibana => "kibana",
        }
    }

    pub fn parse(s: &str) -> Option<DialectId> {
        Self::ALL.into_iter().find(|d| d.name() == s)
    }
}

impl std::fmt::Display for DialectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The implementation of a dialect.
pub fn get(id: DialectId) -> &'static dyn Dialect {
    match id {
        DialectId::Thalamus => &thalamus::Thalamus,
        DialectId::Tines => &tines::Tines,
        DialectId::Caseiq => &caseiq::CaseIq,
        DialectId::Kibana => &kibana::Kibana,
    }
}

/// What a request asks for, whatever the dialect (SPEC sections 1 and 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Attach a file.
    Upload,
    /// Case IQ's OAuth2 token endpoint (served by casegate itself).
    Token,
    /// List a case's files (Kibana: the case with its files).
    List,
    /// One file's record.
    Get,
    /// One file's name, type, size and hashes (Tines `info`).
    Info,
    /// A file's bytes.
    Download,
    /// Remove a file.
    Delete,
    /// A case's user comments (Kibana `comments/_find`).
    Comments,
}

impl Op {
    /// The name in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Op::Upload => "upload",
            Op::Token => "token",
            Op::List => "list",
            Op::Get => "get",
            Op::Info => "info",
            Op::Download => "download",
            Op::Delete => "delete",
            Op::Comments => "comments",
        }
    }
}

/// A recognized request: the operation and what its path named. Ids are as the client
/// gave them (percent-decoded), in the front's form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub op: Op,
    pub case_id: Option<String>,
    /// The file's front id (Kibana: the comment id for record and delete, the file id
    /// for downloads).
    pub file_id: Option<String>,
    /// Kibana's `/s/{space}`.
    pub space: Option<String>,
    /// Kibana blob paths: the owner in `{owner}FilesCases`.
    pub owner: Option<String>,
}

impl Request {
    pub fn new(op: Op) -> Self {
        Request {
            op,
            case_id: None,
            file_id: None,
            space: None,
            owner: None,
        }
    }

    pub fn case(mut self, id: &str) -> Self {
        self.case_id = Some(id.to_string());
        self
    }

    pub fn file(mut self, id: &str) -> Self {
        self.file_id = Some(id.to_string());
        self
    }
}

/// What a front makes of a method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// One of its operations.
    Op(Request),
    /// One of its operation paths, but not with this method; the methods it takes.
    Method(&'static str),
    /// Not an operation path.
    None,
}

/// Picks the operation for `method` among those a path serves.
pub fn by_method(method: &Method, ops: &[(Method, Op)], make: impl Fn(Op) -> Request) -> Match {
    match ops.iter().find(|(m, _)| m == method) {
        Some((_, op)) => Match::Op(make(*op)),
        None => Match::Method(allow_header(ops)),
    }
}

/// The `Allow` value of a set of operations (static strings for the few combinations).
fn allow_header(ops: &[(Method, Op)]) -> &'static str {
    let has = |m: Method| ops.iter().any(|(x, _)| *x == m);
    match (has(Method::GET), has(Method::POST), has(Method::DELETE)) {
        (true, true, true) => "GET, POST, DELETE",
        (true, true, false) => "GET, POST",
        (true, false, true) => "GET, DELETE",
        (false, true, true) => "POST, DELETE",
        (true, false, false) => "GET",
        (false, false, true) => "DELETE",
        _ => "POST",
    }
}

/// The form of a dialect's ids (SPEC 7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// Thalamus, Tines.
    Integer,
    /// Case IQ.
    Uuid,
    /// Kibana: any string.
    Text,
}

/// What a route knows to check its clients: the accepted credentials, and the key that
/// signs access tokens casegate issues (Case IQ fronts).
#[derive(Debug, Clone)]
pub struct FrontAuth {
    /// Empty: an open route.
    pub tokens: Accepted,
    /// The key that signs and verifies its access tokens, keyed once.
    pub signing_key: MacKey,
    /// The route's name, bound into issued tokens so one route's token opens no other.
    pub route: String,
    /// This route's check, as built: what the tokens a thread holds as verified were
    /// verified for ([`crate::secret::verified`]).
    pub check: crate::secret::CheckId,
}

/// How casegate presents itself to an upstream; config picks the kind from the keys
/// given, each dialect lists the kinds it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    /// `Authorization: Bearer T`.
    Bearer,
    /// OAuth2 client credentials exchanged for a bearer token at `{url}/auth/oauth2/token`.
    ClientCredentials,
    /// `Thalamus-Touchpoint` / `Thalamus-Token` headers.
    TouchpointToken,
    /// `Authorization: ApiKey K`.
    ApiKey,
    /// `Authorization: Basic`.
    Basic,
}

/// A route's dialect-specific upstream keys (Kibana's `space` and `owner`), as routes.toml
/// gave them; the back dialect names the keys it takes ([`Dialect::upstream_keys`]).
pub type UpstreamOptions = std::collections::BTreeMap<String, String>;

/// The upstream side of a route, as a back dialect needs it.
#[derive(Debug, Clone, Copy)]
pub struct BackCtx<'a> {
    /// The upstream's base URL without trailing slash.
    pub base_url: &'a str,
    /// The route's dialect-specific upstream keys.
    pub options: &'a UpstreamOptions,
    /// The scope the client's path named (Kibana's `/s/{space}`), for backs with scopes.
    pub client_space: Option<&'a str>,
    /// Whether the client speaks the back's dialect, so the back's own JSON (a Kibana
    /// case, its comments) is passed on as it is; otherwise a back's reader need not
    /// keep it (building it costs a tree and copies per answer).
    pub raw_wanted: bool,
}

impl BackCtx<'_> {
    /// A dialect-specific upstream key.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options.get(key).map(String::as_str)
    }
}

/// The body of an outbound upload, produced around the file's bytes.
pub trait BodyEncoder: Send {
    /// Everything before the file's bytes.
    fn head(&mut self) -> Bytes;
    /// The file's bytes as they go on the wire (for JSON: base64).
    fn data(&mut self, chunk: Bytes) -> Bytes;
    /// The wire bytes for file bytes given as the base64 the client sent them as (their
    /// padded standard encoding, whole groups: [`crate::inbound::Event::Coded`]), when
    /// this body can send that text as it is; else the text back, and the caller decodes
    /// it for [`BodyEncoder::data`]. Only a body that sends base64 can.
    fn data_coded(&mut self, base64: Bytes) -> Result<Bytes, Bytes> {
        Err(base64)
    }
    /// Everything after the file. `late` holds the fields that arrived after it.
    fn tail(&mut self, late: &UploadMeta) -> Bytes;
    /// Total body length for a file of `file_len` bytes, when no field can arrive late.
    fn len(&self, file_len: u64) -> u64;
}

/// An outbound upload request, minus credentials.
pub struct Outbound {
    /// Path and query, appended to the upstream's base URL (a fixed one not copied).
    pub path: std::borrow::Cow<'static, str>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Box<dyn BodyEncoder>,
}

/// A request to an upstream other than the upload, minus credentials (added by
/// [`crate::upstream::Upstream`]).
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    /// Path and query, appended to the upstream's base URL.
    pub path: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// A JSON body, written (the second call that carries a comment).
    pub body: Option<Bytes>,
}

impl Call {
    pub fn get(path: String) -> Self {
        Call {
            method: Method::GET,
            path,
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn delete(path: String) -> Self {
        Call {
            method: Method::DELETE,
            ..Call::get(path)
        }
    }

    /// A POST of `json`, a JSON object written by [`json_out::Object`] (the tests' calls
    /// read it back as JSON).
    ///
    /// [`json_out::Object`]: crate::codec::json_out::Object
    pub fn post_json(path: String, json: String) -> Self {
        Call {
            method: Method::POST,
            path,
            headers: vec![wire::json_content_type()],
            body: Some(Bytes::from(json)),
        }
    }

    pub fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        ));
        self
    }
}

/// How an upstream's 2xx answer to an upload reads.
#[derive(Debug)]
pub enum Answer {
    /// Stored, and the answer says what it stored.
    Stored(Box<UploadResult>),
    /// Stored, but the answer cannot be read: casegate answers from what it knows.
    StoredUnreadable(String),
    /// Not stored after all (Thalamus `FAILED`).
    Failed(Error),
}

/// A boxed future answering a request.
pub type Reply = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// One API, both as a front (served to clients) and as a back (spoken to upstreams).
/// The default methods are what a dialect without that operation does.
pub trait Dialect: Send + Sync + 'static {
    fn id(&self) -> DialectId;

    /// The form of this dialect's file ids.
    fn id_kind(&self) -> IdKind;

    // ---- front ----

    /// What `method` on `path` (the route prefix already removed, no query) asks for.
    fn recognize(&self, method: &Method, path: &str) -> Match;

    /// Whether `path` is in this dialect's namespace (`/api/v2/...` for Tines), so that a
    /// path that is none of its operations is answered in its error form (or passed
    /// through on a passthrough route).
    fn owns(&self, path: &str) -> bool;

    /// Checks the client's credential; called only on routes with `client_tokens`.
    fn authenticate(&self, parts: &Parts, auth: &FrontAuth) -> Result<(), Error>;

    /// Checks what every request of an operation must carry besides credentials
    /// (Kibana's `kbn-xsrf` on every POST and DELETE).
    fn preflight(&self, _parts: &Parts, _req: &Request) -> Result<(), Error> {
        Ok(())
    }

    /// The page a list asks for (query parameters), with the dialect's defaults and caps.
    fn page(&self, _req: &Request, _parts: &Parts) -> Result<Page, Error> {
        Ok(Page::ALL)
    }

    /// The case a list names when its path does not (Case IQ's `objectId` query).
    fn list_case(&self, _parts: &Parts) -> Result<String, Error> {
        Err(Error::not_found("Not Found"))
    }

    /// Starts reading an upload: checks the headers and returns the path's fields with
    /// the stream of the body's fields and file bytes.
    fn read_upload(
        &self,
        parts: &Parts,
        req: &Request,
        body: BodyStream,
        limits: &Limits,
    ) -> Result<Inbound, Error>;

    /// The largest raw body that can carry a file of `limits.max_file_bytes` (by default
    /// a multipart form's).
    fn max_body_bytes(&self, limits: &Limits) -> u64 {
        limits.multipart_body()
    }

    /// Fields that may still arrive after the file starts.
    fn late_fields(&self) -> Kinds;

    /// The name this dialect's clients give a canonical field (for `Casegate-Dropped`).
    fn field_name(&self, kind: Kind) -> &'static str;

    /// The front's own download URL of a file (Tines `file.url`, Thalamus `url`), through
    /// casegate; `None` for dialects whose answers carry no links.
    fn link(&self, _links: &Links, _case_id: &str, _file_id: &str) -> Option<String> {
        None
    }

    /// Whether the upload's answer lists every file of the case (Thalamus): casegate then
    /// fills [`Outcome::case_files`] from its ledger.
    fn upload_lists_case(&self) -> bool {
        false
    }

    /// Whether every file in a list or record answer states its size (Case IQ's
    /// `sizeBytes`): where neither the back's answer nor the ledger has it, casegate
    /// asks the back once and keeps it.
    fn needs_size(&self) -> bool {
        false
    }

    fn render_upload(&self, outcome: &Outcome) -> Response<Body>;

    fn render_list(&self, _listing: &Listing) -> Response<Body> {
        respond(self.as_dyn(), &Error::not_found("Not Found"))
    }

    fn render_record(&self, _file: &FileView) -> Response<Body> {
        respond(self.as_dyn(), &Error::not_found("Not Found"))
    }

    /// Tines `info`: name, type, size and hashes.
    fn render_info(&self, file: &FileView) -> Response<Body> {
        self.render_record(file)
    }

    /// A delete's answer: `deleted` is false when the upstream or the ledger does not
    /// know the file on that case (404, except for Thalamus, which answers `false`).
    fn render_deleted(&self, deleted: bool) -> Response<Body> {
        if !deleted {
            return respond(self.as_dyn(), &Error::not_found("The file is not known."));
        }
        let mut resp = Response::new(crate::error::full(Bytes::new()));
        *resp.status_mut() = StatusCode::NO_CONTENT;
        resp
    }

    fn render_comments(&self, _page: &CommentsPage) -> Response<Body> {
        respond(self.as_dyn(), &Error::not_found("Not Found"))
    }

    /// Whether a download of `content_type` is shown `inline` (Tines shows images inline).
    fn inline(&self, _content_type: &str) -> bool {
        false
    }

    /// The dialect's error form for `err` (headers common to all are added by
    /// [`respond`]).
    fn render_error(&self, err: &Error) -> Response<Body>;

    /// Serves an operation casegate answers itself (Case IQ's token endpoint).
    fn serve_own(
        &self,
        _req: Request,
        _parts: Parts,
        _body: BodyStream,
        _auth: FrontAuth,
    ) -> Reply {
        let resp = respond(self.as_dyn(), &Error::not_found("Not Found"));
        Box::pin(async move { resp })
    }

    /// Removes the client's credential from a request passed through unchanged otherwise
    /// (headers here; [`Dialect::credential_query_keys`] for the query).
    fn strip_credentials(&self, parts: &mut Parts) {
        parts.headers.remove(http::header::AUTHORIZATION);
    }

    /// Query parameters that carry the client's credential (Thalamus `token`).
    fn credential_query_keys(&self) -> &'static [&'static str] {
        &[]
    }

    /// `self` as a trait object (for default methods).
    fn as_dyn(&self) -> &dyn Dialect;

    // ---- back ----

    /// The optional fields this dialect's upstream stores.
    fn carries(&self) -> Kinds;

    /// Fields that must be known before the first byte of the file is sent.
    fn needs_before_file(&self) -> Kinds;

    /// Whether this dialect's upstream takes the file as base64, and its body passes on
    /// base64 a client sent ([`BodyEncoder::data_coded`]) rather than encoding the bytes
    /// again: a JSON front then reads with [`crate::inbound::Limits::keep_base64`].
    fn sends_base64(&self) -> bool {
        false
    }

    /// The credential kinds an upstream of this dialect accepts.
    fn auth_kinds(&self) -> &'static [AuthKind];

    /// Dialect-specific keys of `[routes.upstream]` this back takes.
    fn upstream_keys(&self) -> &'static [&'static str] {
        &[]
    }

    /// Builds the upload request from what is known when the file starts.
    fn build_upload(&self, meta: &UploadMeta, ctx: &BackCtx<'_>) -> Result<Outbound, Error>;

    /// Reads a 2xx answer to an upload.
    fn read_stored(&self, body: &[u8], meta: &UploadMeta, ctx: &BackCtx<'_>) -> Answer;

    /// True when a 2xx answer is the dialect's logical failure (Thalamus `FAILED`).
    fn failed_answer(&self, _body: &[u8]) -> bool {
        false
    }

    /// Whether the back answers logical failures with a 2xx and a short body (Thalamus),
    /// so a short download is read before it is passed on.
    fn fails_with_200(&self) -> bool {
        false
    }

    /// The message in an upstream error body, if it has one.
    fn error_message(&self, body: &[u8]) -> Option<String>;

    /// The second call carrying the comment, for dialects that store comments that way.
    fn comment_call(
        &self,
        _comment: &str,
        _meta: &UploadMeta,
        _result: &UploadResult,
        _ctx: &BackCtx<'_>,
    ) -> Option<Call> {
        None
    }

    /// Reads the second call's 2xx answer into the result (Kibana returns the case, read
    /// only when the result still holds one: the client is of the same dialect); false
    /// when the answer says the comment was not stored after all.
    fn read_comment_answer(&self, _body: &[u8], _result: &mut UploadResult) -> bool {
        true
    }

    /// Whether an operation on one file needs the back's case id (Tines paths carry it).
    fn needs_case(&self, _op: Op) -> bool {
        false
    }

    /// Whether the back can be asked for a file by its id alone (SPEC 7.2): it tells an
    /// unknown id apart from a failure, and its answer is scoped enough to trust. Where it
    /// cannot (Thalamus: no case in its download path, and `FAILED` for an unknown id as
    /// for a failure), an id the ledger does not know is 404 without an upstream call.
    fn asked_by_id_alone(&self) -> bool {
        true
    }

    /// The call listing a case's files; `None`: the back cannot list one case's files
    /// (casegate lists from its ledger).
    fn list_call(&self, _case_id: &str, _page: Page, _ctx: &BackCtx<'_>) -> Option<Call> {
        None
    }

    /// Reads a 2xx answer to [`Dialect::list_call`].
    fn read_list(&self, _body: &[u8], _ctx: &BackCtx<'_>) -> Result<Listed, String> {
        Err("this upstream does not list".into())
    }

    /// The call fetching one file's record; `None`: the back has none (the ledger
    /// answers).
    fn record_call(&self, _file: &FileRef, _ctx: &BackCtx<'_>) -> Option<Call> {
        None
    }

    /// Reads a 2xx answer to [`Dialect::record_call`].
    fn read_record(&self, _body: &[u8], _ctx: &BackCtx<'_>) -> Result<Attachment, String> {
        Err("this upstream has no records".into())
    }

    /// The call fetching name, type, size and hashes (Tines `info`); `None`: casegate
    /// computes the hashes itself.
    fn info_call(&self, _file: &FileRef, _ctx: &BackCtx<'_>) -> Option<Call> {
        None
    }

    fn read_info(&self, _body: &[u8]) -> Result<Attachment, String> {
        Err("this upstream has no info".into())
    }

    /// The call streaming a file's bytes.
    fn download_call(&self, file: &FileRef, ctx: &BackCtx<'_>) -> Call;

    /// Whether the back answers a `Range` request with 206.
    fn honours_range(&self) -> bool {
        false
    }

    /// The call deleting a file; `None`: the back cannot delete (405, nothing sent).
    fn delete_call(&self, _file: &FileRef, _ctx: &BackCtx<'_>) -> Option<Call> {
        None
    }

    /// Whether a 2xx answer to a delete says the file was deleted (Thalamus `false` when
    /// it did not know it).
    fn read_deleted(&self, _body: &[u8]) -> bool {
        true
    }

    /// The call listing a case's user comments (Kibana); `None`: the page is empty.
    fn comments_call(&self, _case_id: &str, _page: Page, _ctx: &BackCtx<'_>) -> Option<Call> {
        None
    }
}

/// Whether a route needs front ids of its own for files (SPEC 7.3): where the back's id
/// does not fit the front's form, `Some(form)` of the ids to give.
pub fn id_mapping(front: &dyn Dialect, back: &dyn Dialect) -> Option<IdKind> {
    let fits = front.id() == back.id()
        || front.id_kind() == IdKind::Text
        || (front.id_kind() == IdKind::Integer && back.id_kind() == IdKind::Integer);
    (!fits).then_some(front.id_kind())
}

/// The status and message an upstream's non-2xx answer becomes (SPEC section 4).
pub fn upstream_error(back: &dyn Dialect, status: StatusCode, body: &[u8]) -> Error {
    if status.is_server_error() {
        Error::upstream_failed(format!("The case system failed ({}).", status.as_u16()))
    } else {
        Error::upstream_rejected(status, back.error_message(body))
    }
}

/// Renders `err` in the front dialect's error form, with `Casegate-Error` (and `Allow`
/// for 405): the one place an error becomes a response.
pub fn respond(front: &dyn Dialect, err: &Error) -> Response<Body> {
    let mut resp = front.render_error(err);
    resp.headers_mut().insert(
        "casegate-error",
        HeaderValue::from_static(err.code.as_str()),
    );
    if let Some(allow) = err.allow {
        resp.headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    }
    resp
}
