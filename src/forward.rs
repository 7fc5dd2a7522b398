//! One upload, from client to upstream and back (SPEC sections 2, 4 and 5).
//!
//! The front dialect's reader yields the fields that precede the file; at the file's
//! first byte casegate decides whether it can start the upstream request now (the back
//! dialect has everything it needs before the file) or must spool the file to an
//! unlinked temporary file until the fields that come after it are known. The outbound
//! body ([`OutboundBody`]) then pulls the file through the back dialect's encoder as the
//! upstream connection accepts it, so memory stays at a few buffers and a slow upstream
//! slows the client. What of the body has already arrived when the request starts is
//! translated at once ([`OutboundBody::settle`]): when that is the whole upload (a small
//! one usually arrives with its head), the request carries its exact `Content-Length`
//! instead of going out chunked, and a bad form is refused before anything is sent.
//! Any failure on the way in aborts the upstream request, so the
//! upstream never stores a shortened file. Success is answered only after the upstream
//! confirmed; the comment, when the back stores it by a second call, follows.

use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::HeaderValue;
use http::request::Parts;
use http::{Method, Response};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use smallvec::SmallVec;

use crate::codec::b64;
use crate::dialect::{respond, upstream_error, Answer, BodyEncoder, Dialect, Request};
use crate::error::{Body, BoxError, Error};
use crate::inbound::{body_stream, Event, EventStream, Limits};
use crate::ledger::{CaseFiles, Ledger, Row};
use crate::read::{self, ledger_down};
use crate::router::RouteRuntime;
use crate::spool::{SpoolReader, SpoolWriter};
use crate::upload::{now_rfc3339_millis, Field, Kind, Kinds, Outcome, UploadMeta, UploadResult};
use crate::upstream::{Progress, SendError};

/// What every request shares: the limits, where to spool, the ledger, where links point.
#[derive(Clone)]
pub struct Settings {
    pub limits: Limits,
    pub spool_dir: std::path::PathBuf,
    pub ledger: Ledger,
    /// The top-level `public_url`.
    pub public_url: Option<String>,
    /// The scheme clients reach casegate with (`http`, or `https` behind TLS).
    pub scheme: &'static str,
}

/// How an upload ended, for the access log.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub file_bytes: u64,
    pub spooled: bool,
    pub dropped: Vec<&'static str>,
}

/// Serves one upload request; every outcome is a response in the front's dialect.
pub async fn upload<B>(
    rt: &RouteRuntime,
    settings: &Settings,
    parts: Parts,
    body: B,
    req: Request,
) -> (Response<Body>, Report)
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<crate::error::BoxError>,
{
    let mut report = Report::default();
    // Boxed, and built in its box: the upload's future is several KiB (see
    // `Gateway::handle` and [`crate::boxed`]).
    match crate::boxed(|| run(rt, settings, parts, body, req, &mut report)).await {
        Ok(resp) => (resp, report),
        Err(e) => (respond(rt.front, &e), report),
    }
}

async fn run<B>(
    rt: &RouteRuntime,
    settings: &Settings,
    parts: Parts,
    body: B,
    req: Request,
    report: &mut Report,
) -> Result<Response<Body>, Error>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<crate::error::BoxError>,
{
    let (front, back) = (rt.front, rt.back);
    let limits = &settings.limits;
    let max_body = front.max_body_bytes(limits);
    let stream = body_stream(body, max_body);
    if declared_length(&parts).is_some_and(|n| n > max_body) {
        return Err(Error::too_large(limits.max_file_bytes));
    }
    // The front id is reserved before anything is sent (SPEC 7.3); a ledger that cannot
    // be reached refuses the upload now.
    // An id no row or answer took goes back to the ledger (see `Reserved`).
    let mut reserved = Reserved {
        ledger: &settings.ledger,
        route: &rt.cfg.name,
        id: match rt.ids {
            Some(form) => Some(
                settings
                    .ledger
                    .reserve(&rt.cfg.name, form)
                    .await
                    .map_err(ledger_down)?,
            ),
            None => {
                settings.ledger.check().map_err(ledger_down)?;
                None
            }
        },
    };
    // A back that sends base64 takes the client's own where it can (not kept past here:
    // the future holds what lives across its awaits).
    let inbound = {
        let reading = Limits {
            keep_base64: back.sends_base64(),
            ..*limits
        };
        front.read_upload(&parts, &req, stream, &reading)?
    };
    let mut meta = inbound.meta;
    let mut events = inbound.events;

    // The fields before the file.
    loop {
        match events.next().await.transpose()? {
            Some(Event::Field(f)) => meta.apply(f)?,
            Some(Event::Absent(k)) => meta.mark_seen(k),
            Some(Event::FileStart {
                filename,
                content_type,
            }) => {
                if let Some(name) = filename.filter(|n| !n.is_empty()) {
                    meta.apply(Field::FileName(name))?;
                } else if !front.late_fields().contains(Kind::FileName)
                    && !meta.seen().contains(Kind::FileName)
                {
                    let fallback = meta.display_name.clone().unwrap_or_else(|| "file".into());
                    meta.apply(Field::FileName(fallback))?;
                }
                meta.part_content_type = content_type;
                break;
            }
            Some(Event::Data(_) | Event::Coded(_) | Event::FileEnd) => {
                return Err(Error::internal("The upload's events are out of order."))
            }
            None => return Err(Error::bad_request("The upload has no file.")),
        }
    }
    if meta.case_id.as_deref().is_none_or(str::is_empty) {
        let name = front.field_name(Kind::CaseId);
        return Err(Error::bad_request(if meta.seen().contains(Kind::CaseId) {
            format!("{name} is required.")
        } else {
            format!("{name} is required, before the file part.")
        }));
    }
    // The case as the client named it; the upstream gets its own (mapped) id.
    let front_case = meta.case_id.clone().unwrap_or_default();
    meta.case_id = Some(rt.back_case(&front_case)?);

    // Start now, or spool until the fields after the file are known?
    let pending = front.late_fields().minus(meta.seen());
    let droppable = Kind::DROPPABLE.minus(back.carries());
    let mut needed = back.needs_before_file();
    if rt.cfg.strict {
        needed = needed.union(droppable);
    }
    let spool = !pending.intersect(needed).is_empty();
    let source = if spool {
        report.spooled = true;
        Source::Spool(spool_file(&mut events, &mut meta, &settings.spool_dir).await?)
    } else {
        Source::Events(events)
    };
    if meta.file_name.is_none() && (spool || !pending.contains(Kind::FileName)) {
        return Err(Error::bad_request(format!(
            "{} is required.",
            front.field_name(Kind::FileName)
        )));
    }
    if rt.cfg.strict {
        let refused = names(front, meta.present().intersect(droppable));
        if !refused.is_empty() {
            return Err(Error::strict(&refused));
        }
    }

    // The upstream request, its body pulled from the client as the upstream takes it.
    let client_space = meta.space.clone();
    let ctx = rt.ctx(client_space.as_deref());
    let out = back.build_upload(&meta, &ctx)?;
    let exact_len = match &source {
        Source::Spool(spool) => Some(out.body.len(spool.size())),
        Source::Events(_) => None,
    };
    let shared = Arc::new(Shared::default());
    let progress = Progress::new();
    let mut body = OutboundBody {
        stage: Stage::Head,
        enc: out.body,
        source,
        late: UploadMeta::default(),
        name_required_late: meta
            .file_name
            .is_none()
            .then(|| format!("{} is required.", front.field_name(Kind::FileName))),
        shared: shared.clone(),
        progress: progress.clone(),
        exact_len,
        count: 0,
        small: Vec::new(),
        ahead: SmallVec::new(),
    };
    if matches!(body.source, Source::Events(_)) {
        body.settle()?;
    }
    let sent = rt
        .upstream
        .send(
            Method::POST,
            &out.path,
            out.headers,
            body.boxed_unsync(),
            progress,
            // Its status and body are all the upload reads of the answer.
            crate::upstream::AnswerHeaders::Skipped,
        )
        .await;
    let mut resp = match sent {
        // A failure of the body itself (the client's side) was recorded before hyper saw it.
        Err(e) => return Err(shared.error().unwrap_or_else(|| send_error(rt, e))),
        Ok(resp) => resp,
    };
    let status = resp.status();
    if status.is_success() && !shared.is_done() {
        // Answered before the body was all sent: the rest still goes (the connection
        // driven here); wait for it.
        let limit = rt.upstream.timeout();
        resp.body_mut().drive_while(shared.wait_done(limit)).await;
    }
    if let Some(e) = shared.error() {
        tracing::warn!(route = %rt.cfg.name, status = status.as_u16(), "the upstream answered an upload whose body failed");
        return Err(e);
    }
    let answer = rt.upstream.read_answer(resp).await;
    if !status.is_success() {
        if status == http::StatusCode::UNAUTHORIZED {
            rt.upstream.forget_token().await;
        }
        return Err(upstream_error(back, status, &answer.bytes));
    }
    let (late, size) = shared.finished();
    let small_hashes = shared.small_file().map(|bytes| read::hashes(&bytes));
    report.file_bytes = size;
    meta.merge_late(late);

    // The upstream confirmed: from here on the answer is a success.
    // Kept in the box the back made it in (several hundred bytes, not moved again).
    let mut result = match back.read_stored(&answer.bytes, &meta, &ctx) {
        Answer::Stored(r) => r,
        Answer::StoredUnreadable(why) => {
            tracing::warn!(
                route = %rt.cfg.name,
                why = %why,
                complete = answer.complete,
                "the upstream confirmed the upload but its answer cannot be read; answering from what casegate knows"
            );
            Box::<UploadResult>::default()
        }
        Answer::Failed(e) => return Err(e),
    };
    // The back's own case goes back only to a client of the same dialect; dropped now, it
    // is not read again from the comment call's answer either.
    let same = front.id() == back.id();
    if !same {
        result.case = None;
    }
    let mut dropped = names(front, meta.present().intersect(droppable));
    // The call carrying the comment, made from the answer before its file is taken out.
    let mut comment_call = None;
    if let Some(comment) = meta.comment.as_deref() {
        if !back.carries().contains(Kind::Comment) {
            dropped.push(front.field_name(Kind::Comment));
        } else {
            comment_call = back.comment_call(comment, &meta, &result, &ctx);
        }
    }

    // The ledger keeps the file under the front id the client will see.
    let mut a = std::mem::take(&mut result.attachment);
    a.uploader = a.uploader.or_else(|| result.uploader.take());
    a.size = a.size.or(Some(size));
    a.name = a.name.or_else(|| meta.file_name.clone());
    a.content_type = a
        .content_type
        .or_else(|| Some(meta.content_type().into_owned()));
    a.created_at = a.created_at.or_else(|| Some(now_rfc3339_millis()));
    let back_case = meta.case_id.clone().unwrap_or_default();
    // The row takes what the answer's view does not read (the back id, the hashes, a
    // reserved front id); the view takes the row's fields back by value.
    let (md5, sha256) = small_hashes.unzip();
    // The reserved id as a number, to tell whether the row recorded kept it.
    let mut offered = None;
    let row = a.id.take().map(|back_id| Row {
        route: rt.cfg.name.clone(),
        front_id: match reserved.id.take() {
            Some(id) => {
                offered = id.parse::<u64>().ok();
                id
            }
            None => back_id.clone(),
        },
        front_case: Some(front_case.clone()),
        back_case: Some(back_case),
        back_id,
        back_comment_id: a.comment_id.clone(),
        name: a.name.clone(),
        content_type: a.content_type.clone(),
        size: Some(size),
        created_at: a.created_at.clone(),
        uploader: read::uploader_text(a.uploader.as_ref()),
        md5,
        sha256,
        ..Default::default()
    });
    // The file is stored: its row and the call carrying its comment go out together, as
    // neither needs the other, so the upload waits for the longer of the two, not both.
    let (mut row, comment_sent) = match (row, comment_call) {
        (Some(row), None) => (Some(settings.ledger.record_confirmed(row).await), None),
        (Some(row), Some(call)) => {
            let (row, stored) = futures_util::future::join(
                settings.ledger.record_confirmed(row),
                second_call(rt, call, &mut result),
            )
            .await;
            (Some(row), Some(stored))
        }
        (None, call) => {
            tracing::warn!(route = %rt.cfg.name, "the upstream stored a file without saying its id; casegate cannot record it");
            let stored = match call {
                Some(call) => Some(second_call(rt, call, &mut result).await),
                None => None,
            };
            (None, stored)
        }
    };
    // A file the ledger holds already keeps its front id: the one reserved was not used.
    if let (Some(n), Some(row)) = (offered, &row) {
        if row.front_id.parse::<u64>().ok() != Some(n) {
            settings.ledger.give_back(&rt.cfg.name, n);
        }
    }
    let comment_stored = comment_sent.unwrap_or(result.comment_stored);
    if comment_sent == Some(false) {
        dropped.push(front.field_name(Kind::Comment));
    }
    if !dropped.is_empty() {
        tracing::info!(route = %rt.cfg.name, dropped = %dropped.join(", "), "fields the upstream cannot store were dropped");
    }
    a.comment = meta.comment.take().filter(|_| comment_stored);
    let links = read::links(rt, settings, &parts);
    let front_id = row
        .as_mut()
        .map(|r| std::mem::take(&mut r.front_id))
        .or_else(|| reserved.id.take())
        .unwrap_or_default();
    let mut file = read::view(rt, &links, front_id, front_case, a, row);
    if let Some(owner) = result.owner.take() {
        file.owner = owner.into();
    }
    let case_files = if front.upload_lists_case() {
        case_files(rt, settings, &file.case_id, &file).await
    } else {
        CaseFiles::default()
    };
    let outcome = Outcome {
        file,
        case_files,
        links,
        case: result.case.take(),
    };
    let mut resp = front.render_upload(&outcome);
    if !dropped.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&dropped.join(", ")) {
            resp.headers_mut().insert("casegate-dropped", v);
        }
    }
    report.dropped = dropped;
    Ok(resp)
}

/// A front id reserved for an upload (SPEC 7.3), given back to the ledger when the upload
/// ends without a row or an answer taking it: it failed (the id was never shown), or the
/// future was dropped (the client went away). See [`Ledger::give_back`].
struct Reserved<'a> {
    ledger: &'a Ledger,
    route: &'a str,
    id: Option<String>,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.id.take().and_then(|id| id.parse::<u64>().ok()) {
            self.ledger.give_back(self.route, n);
        }
    }
}

/// The files of the case the ledger knows (the first
/// [`CASE_FILES_MAX`](crate::upload::CASE_FILES_MAX)), the new one included (it is added
/// when its row could not be written yet, or the case holds more). The front builds
/// their links as it writes its answer.
async fn case_files(
    rt: &RouteRuntime,
    settings: &Settings,
    front_case: &str,
    new: &crate::upload::FileView,
) -> CaseFiles {
    match settings
        .ledger
        .case_files(
            &rt.cfg.name,
            front_case,
            crate::upload::CASE_FILES_MAX,
            &new.id,
        )
        .await
    {
        Ok(files) => files,
        Err(e) => {
            tracing::warn!(route = %rt.cfg.name, error = %e, "the ledger cannot list the case; answering with the new file alone");
            CaseFiles::only(new.id.clone())
        }
    }
}

fn declared_length(parts: &Parts) -> Option<u64> {
    parts
        .headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The client's names for `kinds`.
fn names(front: &dyn Dialect, kinds: Kinds) -> Vec<&'static str> {
    kinds.iter().map(|k| front.field_name(k)).collect()
}

fn send_error(rt: &RouteRuntime, e: SendError) -> Error {
    let err = e.into_error();
    tracing::warn!(route = %rt.cfg.name, code = err.code.as_str(), "upstream request failed");
    err
}

/// Sends the comment by the back's second call; true when the upstream stored it.
async fn second_call(
    rt: &RouteRuntime,
    call: crate::dialect::Call,
    result: &mut UploadResult,
) -> bool {
    match rt.upstream.call(&call).await {
        Ok((status, answer)) if status.is_success() => {
            let stored = rt.back.read_comment_answer(&answer.bytes, result);
            if !stored {
                tracing::warn!(route = %rt.cfg.name, "the upstream stored the file but refused its comment");
            }
            stored
        }
        Ok((status, _)) => {
            tracing::warn!(route = %rt.cfg.name, status = status.as_u16(), "the upstream stored the file but refused its comment");
            false
        }
        Err(e) => {
            let err = e.into_error();
            tracing::warn!(route = %rt.cfg.name, code = err.code.as_str(), "the upstream stored the file but the comment call failed");
            false
        }
    }
}

/// Reads the rest of the upload into an unlinked temporary file: the file's bytes, and
/// the fields after it into `meta`. The file disappears when dropped, however the
/// request ends.
async fn spool_file(
    events: &mut EventStream,
    meta: &mut UploadMeta,
    dir: &Path,
) -> Result<SpoolReader, Error> {
    let spool_failed = |e: std::io::Error| {
        tracing::error!(dir = %dir.display(), error = %e, "cannot spool an upload");
        Error::internal("casegate could not spool the upload.")
    };
    let mut file = SpoolWriter::new(dir);
    let mut in_file = true;
    while let Some(ev) = events.next().await {
        match ev? {
            Event::Data(d) if in_file => file.write(d).await.map_err(spool_failed)?,
            Event::Coded(text) if in_file => {
                let d = Event::coded_bytes(&text)?;
                file.write(d).await.map_err(spool_failed)?
            }
            Event::FileEnd => in_file = false,
            Event::Field(f) => meta.apply(f)?,
            Event::Absent(k) => meta.mark_seen(k),
            Event::FileStart { .. } => {
                return Err(Error::bad_request("The upload has more than one file."))
            }
            Event::Data(_) | Event::Coded(_) => {
                return Err(Error::internal("The upload's events are out of order."))
            }
        }
    }
    if in_file {
        return Err(Error::bad_request("The upload ended inside the file."));
    }
    file.finish().await.map_err(spool_failed)
}

/// The most bytes of the upstream body [`OutboundBody::settle`] encodes before the
/// request starts: what the upstream connection holds unsent before it asks the body for
/// more (`pool::raw`'s `FLUSH_AT`), so a connection holds no more than it would have.
const SETTLE_MAX: usize = 64 * 1024;

/// Where the outbound body's file bytes come from.
enum Source {
    Events(EventStream),
    Spool(SpoolReader),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Head,
    File,
    Late,
    Tail,
    Done,
}

/// What the outbound body tells the request that owns it.
#[derive(Default)]
struct Shared {
    state: Mutex<SharedState>,
    done: tokio::sync::Notify,
}

#[derive(Default)]
struct SharedState {
    error: Option<Error>,
    late: Option<UploadMeta>,
    size: u64,
    /// The file's bytes, when it has at most [`read::PEEK_BYTES`].
    small: Option<Vec<u8>>,
    finished: bool,
    abandoned: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, SharedState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn error(&self) -> Option<Error> {
        self.lock().error.clone()
    }

    fn is_done(&self) -> bool {
        let s = self.lock();
        s.finished || s.error.is_some() || s.abandoned
    }

    /// The body was dropped before its end (the request was abandoned).
    fn abandon(&self) {
        self.lock().abandoned = true;
        self.done.notify_waiters();
    }

    fn finished(&self) -> (UploadMeta, u64) {
        let mut s = self.lock();
        (s.late.take().unwrap_or_default(), s.size)
    }

    fn fail(&self, e: Error) {
        self.lock().error.get_or_insert(e);
        self.done.notify_waiters();
    }

    fn finish(&self, late: UploadMeta, size: u64, small: Option<Vec<u8>>) {
        {
            let mut s = self.lock();
            s.late = Some(late);
            s.size = size;
            s.small = small;
            s.finished = true;
        }
        self.done.notify_waiters();
    }

    /// The whole file, when it was small (see [`read::PEEK_BYTES`]).
    fn small_file(&self) -> Option<Vec<u8>> {
        self.lock().small.take()
    }

    /// Waits (at most `limit`) until the body finished or failed.
    async fn wait_done(&self, limit: std::time::Duration) {
        let wait = async {
            loop {
                let notified = self.done.notified();
                if self.is_done() {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    }
}

/// The upstream request's body: the back's encoder around the file's bytes, pulled from
/// the client (or the spool file) only as fast as the upstream takes them.
struct OutboundBody {
    stage: Stage,
    enc: Box<dyn BodyEncoder>,
    source: Source,
    late: UploadMeta,
    /// The message to fail with when the file name never arrives.
    name_required_late: Option<String>,
    shared: Arc<Shared>,
    progress: Arc<Progress>,
    exact_len: Option<u64>,
    count: u64,
    /// The file's bytes so far, while there are at most [`read::PEEK_BYTES`].
    small: Vec<u8>,
    /// What [`OutboundBody::settle`] encoded before the request started, last piece
    /// first: sent before anything else.
    ahead: SmallVec<[Bytes; 4]>,
}

impl OutboundBody {
    /// Encodes what the client has already sent, without waiting for more, up to
    /// [`SETTLE_MAX`] bytes of the upstream body. When that reaches the upload's end (a
    /// small upload usually arrives whole with its head), the body's length is exact, so
    /// it goes out with a `Content-Length`, as the client's own did, rather than chunked
    /// (which the upstream must decode piece by piece), and a bad upload is refused
    /// before anything is sent. Otherwise what was encoded goes first and the rest
    /// streams, as it would have. A client's failure found here is the upload's.
    fn settle(&mut self) -> Result<(), Error> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut held = 0;
        while held < SETTLE_MAX {
            match self.poll_piece(&mut cx) {
                Poll::Ready(Some(Ok(piece))) => {
                    held += piece.len();
                    self.ahead.push(piece);
                }
                Poll::Ready(Some(Err(e))) => {
                    return Err(self
                        .shared
                        .error()
                        .unwrap_or_else(|| Error::internal(e.to_string())));
                }
                Poll::Ready(None) => {
                    self.exact_len = Some(held as u64);
                    break;
                }
                Poll::Pending => break,
            }
        }
        self.ahead.reverse();
        Ok(())
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<Bytes, BoxError>>> {
        self.stage = Stage::Done;
        self.shared.fail(e.clone());
        Poll::Ready(Some(Err(Box::new(e))))
    }

    fn poll_late(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let Source::Events(events) = &mut self.source else {
            return Poll::Ready(Ok(()));
        };
        loop {
            match events.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(Some(Ok(ev))) => match ev {
                    Event::Field(f) => self.late.apply(f)?,
                    Event::Absent(k) => self.late.mark_seen(k),
                    Event::FileStart { .. } => {
                        return Poll::Ready(Err(Error::bad_request(
                            "The upload has more than one file.",
                        )))
                    }
                    Event::Data(_) | Event::Coded(_) | Event::FileEnd => {
                        return Poll::Ready(Err(Error::internal(
                            "The upload's events are out of order.",
                        )))
                    }
                },
            }
        }
    }

    /// The body's next piece, encoded from the client's (or the spool's) next bytes.
    fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        loop {
            match self.stage {
                Stage::Head => {
                    self.stage = Stage::File;
                    let head = self.enc.head();
                    if !head.is_empty() {
                        self.progress.touch();
                        return Poll::Ready(Some(Ok(head)));
                    }
                }
                Stage::File => {
                    let (chunk, base64) = match &mut self.source {
                        Source::Events(events) => match events.as_mut().poll_next(cx) {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(Some(Ok(Event::Data(d)))) => (d, None),
                            Poll::Ready(Some(Ok(Event::Coded(text)))) => (Bytes::new(), Some(text)),
                            Poll::Ready(Some(Ok(Event::FileEnd))) => {
                                self.stage = Stage::Late;
                                continue;
                            }
                            Poll::Ready(Some(Ok(_))) => {
                                return self
                                    .fail(Error::internal("The upload's events are out of order."))
                            }
                            Poll::Ready(Some(Err(e))) => return self.fail(e),
                            Poll::Ready(None) => {
                                return self
                                    .fail(Error::bad_request("The upload ended inside the file."))
                            }
                        },
                        Source::Spool(spool) => match spool.poll_chunk(cx) {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(Err(e)) => {
                                tracing::error!(error = %e, "reading a spooled upload failed");
                                return self.fail(Error::internal(
                                    "casegate could not read back a spooled upload.",
                                ));
                            }
                            Poll::Ready(Ok(None)) => {
                                self.stage = Stage::Tail;
                                continue;
                            }
                            Poll::Ready(Ok(Some(chunk))) => (chunk, None),
                        },
                    };
                    // Coded text is decoded only where its bytes are needed: kept for a
                    // small file, or encoded again after bytes the body holds back.
                    let mut chunk = chunk;
                    let len = match &base64 {
                        Some(text) => b64::whole_decoded_len(text.len()),
                        None => chunk.len(),
                    };
                    self.count += len as u64;
                    if self.count <= read::PEEK_BYTES as u64 {
                        if let Some(text) = &base64 {
                            chunk = match Event::coded_bytes(text) {
                                Ok(bytes) => bytes,
                                Err(e) => return self.fail(e),
                            };
                        }
                        self.small.extend_from_slice(&chunk);
                    } else if !self.small.is_empty() {
                        self.small = Vec::new();
                    }
                    self.progress.touch();
                    // Given back, the text's bytes go after those the body holds: decoded
                    // now unless they were above (`chunk` is empty until then, and a coded
                    // run never decodes to nothing).
                    let wire = match base64.map(|text| self.enc.data_coded(text)) {
                        Some(Ok(wire)) => wire,
                        Some(Err(text)) if chunk.is_empty() => match Event::coded_bytes(&text) {
                            Ok(bytes) => self.enc.data(bytes),
                            Err(e) => return self.fail(e),
                        },
                        Some(Err(_)) | None => self.enc.data(chunk),
                    };
                    if !wire.is_empty() {
                        return Poll::Ready(Some(Ok(wire)));
                    }
                }
                Stage::Late => match self.poll_late(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return self.fail(e),
                    Poll::Ready(Ok(())) => self.stage = Stage::Tail,
                },
                Stage::Tail => {
                    if let Some(msg) = self.name_required_late.take() {
                        if self.late.file_name.is_none() {
                            return self.fail(Error::bad_request(msg));
                        }
                    }
                    let tail = self.enc.tail(&self.late);
                    self.stage = Stage::Done;
                    self.progress.touch();
                    let small = (self.count <= read::PEEK_BYTES as u64)
                        .then(|| std::mem::take(&mut self.small));
                    self.shared
                        .finish(std::mem::take(&mut self.late), self.count, small);
                    return Poll::Ready(Some(Ok(tail)));
                }
                Stage::Done => return Poll::Ready(None),
            }
        }
    }
}

impl Drop for OutboundBody {
    fn drop(&mut self) {
        if self.stage != Stage::Done {
            self.shared.abandon();
        }
    }
}

impl http_body::Body for OutboundBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(piece) = this.ahead.pop() {
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        this.poll_piece(cx)
            .map(|piece| piece.map(|piece| piece.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.stage == Stage::Done && self.ahead.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact_len {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
