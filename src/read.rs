//! Reading back (SPEC 7): list, get, info, download and delete, and Kibana's comment
//! pages, for any front over any back.
//!
//! Every operation flows through the same steps: the front's request names a case and a
//! file in the front's form; [`resolve`] finds the back's ids (the ledger where the route
//! maps ids or the back cannot be asked by the id alone; the case map where the route has
//! one); the back dialect builds its call and reads the answer into canonical types; the
//! ledger fills what the back does not say; [`view`] turns the result into the front's
//! ids and links; the front renders. Downloads stream both ways: the upstream's body is
//! handed to the client chunk by chunk, each wait bounded by the upstream timeout, and a
//! body that breaks off ends the client's response with an error (never a short file
//! passed off as whole).

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;

use crate::codec::disposition;
use crate::dialect::{respond, upstream_error, BackCtx, Call, Op, Request};
use crate::error::{Body, BoxError, Error};
use crate::forward::Settings;
use crate::ledger::{LedgerError, Row};
use crate::pool::UpstreamBody;
use crate::router::RouteRuntime;
use crate::upload::{
    guess_type, Attachment, CommentsPage, FileRef, FileView, Links, Listed, Listing, Page, Person,
};
use crate::upstream::SendError;

/// Most pages fetched from a back whose pages are smaller than the front asked for
/// (Tines' 500) to fill one front page.
const MAX_BACK_PAGES: u64 = 20;
/// A download whose declared length is at most this is read first to tell a logical
/// failure (Thalamus `FAILED`) from a file; uploads this small keep their hashes in the
/// ledger, so that a file of those very bytes can be told from the failure.
pub const PEEK_BYTES: usize = 64;

/// Serves a read operation; every outcome is a response in the front's dialect.
pub async fn serve(
    rt: &RouteRuntime,
    settings: &Settings,
    parts: Parts,
    req: Request,
) -> Response<Body> {
    let empty = |id: &Option<String>| id.as_deref() == Some("");
    if empty(&req.case_id) || empty(&req.file_id) {
        return respond(rt.front, &Error::not_found("Not Found"));
    }
    let links = links(rt, settings, &parts);
    let result = match req.op {
        Op::List => list(rt, settings, &parts, &req, &links).await,
        Op::Get | Op::Info => record(rt, settings, &req, &links).await,
        Op::Download => download(rt, settings, &parts, &req).await,
        Op::Delete => delete(rt, settings, &req).await,
        Op::Comments => comments(rt, &parts, &req).await,
        Op::Upload | Op::Token => Err(Error::internal("not a read operation")),
    };
    result.unwrap_or_else(|e| respond(rt.front, &e))
}

/// A ledger failure as the client sees it (503 `ledger_unavailable`).
pub fn ledger_down(e: LedgerError) -> Error {
    tracing::warn!(error = %e, "the ledger is unavailable");
    Error::ledger_unavailable()
}

/// An uploader as the ledger keeps it (JSON text).
pub fn uploader_text(p: Option<&Person>) -> Option<String> {
    p.map(Person::to_json)
}

fn uploader_of(text: Option<&str>) -> Option<Person> {
    serde_json::from_str(text?).ok()
}

/// Where links in answers point: the route's `public_url`, else the top-level one, else
/// the request's own scheme and Host; under the route's prefix.
pub fn links(rt: &RouteRuntime, settings: &Settings, parts: &Parts) -> Links {
    let base = rt
        .cfg
        .public_url
        .clone()
        .or_else(|| settings.public_url.clone())
        .unwrap_or_else(|| {
            let host = parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| valid_host(h))
                .or_else(|| parts.uri.authority().map(|a| a.as_str()))
                .unwrap_or("localhost");
            // Joined rather than through `format!`: this runs for every answer.
            [settings.scheme, "://", host].concat()
        });
    Links {
        base,
        prefix: rt.prefix.clone(),
    }
}

/// True when `host` is a URI authority as http reads one. The usual forms (`name` and
/// `name:port`, the name of letters, digits, `.` and `-`) are read here byte by byte;
/// anything else by http's parser, which copies the text first (about 600 instructions
/// an answer).
fn valid_host(host: &str) -> bool {
    let b = host.as_bytes();
    let name_end = b.iter().position(|&c| c == b':').unwrap_or(b.len());
    let plain = name_end > 0
        && b[..name_end]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-'))
        && b[name_end..].iter().skip(1).all(u8::is_ascii_digit);
    plain || host.parse::<http::uri::Authority>().is_ok()
}

/// A file in the front's terms: what the upstream said (`a`), filled in from the ledger
/// (`row`), under its front id and case, with the front's link. Both are taken by value:
/// a field the upstream did not say is moved out of the row, not copied.
pub fn view(
    rt: &RouteRuntime,
    links: &Links,
    front_id: String,
    front_case: String,
    a: Attachment,
    row: Option<Row>,
) -> FileView {
    let Row {
        back_comment_id,
        name,
        content_type,
        size,
        created_at,
        uploader,
        guid,
        md5,
        sha256,
        ..
    } = row.unwrap_or_default();
    let name = a.name.or(name).unwrap_or_else(|| front_id.clone());
    let content_type = a
        .content_type
        .or(content_type)
        .unwrap_or_else(|| guess_type(&name).into_owned());
    let same = rt.front.id() == rt.back.id();
    let comment_id = a
        .comment_id
        .or(back_comment_id)
        .filter(|_| rt.ids.is_none())
        .unwrap_or_else(|| front_id.clone());
    FileView {
        link: rt.front.link(links, &front_case, &front_id),
        id: front_id,
        comment_id,
        case_id: front_case,
        size: a.size.or(size),
        created_at: a.created_at.or(created_at),
        uploader: a.uploader.or_else(|| uploader_of(uploader.as_deref())),
        comment: a.comment,
        block_id: a.block_id,
        encoding: a.encoding,
        guid: a.guid.or(guid),
        md5: a.md5.or(md5),
        sha256: a.sha256.or(sha256),
        owner: "cases".into(),
        raw: a.raw.filter(|_| same),
        name,
        content_type,
    }
}

/// A file the ledger knows, as the front renders it.
pub fn view_of_row(rt: &RouteRuntime, links: &Links, mut row: Row) -> FileView {
    let front_id = std::mem::take(&mut row.front_id);
    let case = row.front_case.take().unwrap_or_default();
    view(rt, links, front_id, case, Attachment::default(), Some(row))
}

/// The error of a call that got no answer.
fn unreachable(rt: &RouteRuntime, e: SendError) -> Error {
    let err = e.into_error();
    tracing::warn!(route = %rt.cfg.name, code = err.code.as_str(), "upstream request failed");
    err
}

/// A non-2xx answer as the client's error (a 401 drops a cached token).
async fn refused(rt: &RouteRuntime, status: StatusCode, body: &[u8]) -> Error {
    if status == StatusCode::UNAUTHORIZED {
        rt.upstream.forget_token().await;
    }
    upstream_error(rt.back, status, body)
}

/// A 2xx answer casegate cannot read.
fn unreadable(rt: &RouteRuntime, why: impl std::fmt::Display) -> Error {
    tracing::warn!(route = %rt.cfg.name, why = %why, "the upstream's answer cannot be read");
    Error::upstream_failed("The case system's answer cannot be read.")
}

fn not_known() -> Error {
    Error::not_found("The file is not known.")
}

/// Sends a call and reads its whole 2xx answer.
async fn fetch(rt: &RouteRuntime, call: &Call) -> Result<Bytes, Error> {
    let (status, answer) = rt
        .upstream
        .call(call)
        .await
        .map_err(|e| unreachable(rt, e))?;
    if !status.is_success() {
        return Err(refused(rt, status, &answer.bytes).await);
    }
    if rt.back.failed_answer(&answer.bytes) {
        return Err(Error::upstream_failed("The case system answered FAILED."));
    }
    if !answer.complete {
        return Err(unreadable(
            rt,
            "the answer broke off, was too slow or too long",
        ));
    }
    Ok(answer.bytes)
}

async fn list(
    rt: &RouteRuntime,
    settings: &Settings,
    parts: &Parts,
    req: &Request,
    links: &Links,
) -> Result<Response<Body>, Error> {
    let front_case = match &req.case_id {
        Some(c) => c.clone(),
        None => rt.front.list_case(parts)?,
    };
    let page = rt.front.page(req, parts)?;
    let back_case = rt.back_case(&front_case)?;
    let ctx = rt.ctx(req.space.as_deref());
    let route = rt.cfg.name.as_str();
    let listing = if rt.back.list_call(&back_case, page, &ctx).is_some() {
        let listed = fetch_list(rt, &back_case, page, &ctx).await?;
        let mut rows = rows_for(rt, settings, &front_case, &back_case, &listed.files).await?;
        if rt.front.needs_size() {
            fill_sizes(rt, settings, &listed.files, &mut rows, req, &ctx).await;
        }
        let total = listed.total;
        let files: Vec<FileView> = listed
            .files
            .into_iter()
            .zip(rows)
            .filter_map(|(mut a, mut row)| {
                let front_id = match row.as_mut() {
                    Some(r) => std::mem::take(&mut r.front_id),
                    None => a.id.take()?,
                };
                Some(view(rt, links, front_id, front_case.clone(), a, row))
            })
            .collect();
        Listing {
            total: total.unwrap_or(files.len() as u64),
            case_id: front_case,
            files,
            page,
            case: listed.case.filter(|_| rt.front.id() == rt.back.id()),
            links: links.clone(),
        }
    } else {
        let (rows, total) = settings
            .ledger
            .list_case(route, &front_case, page.offset(), page.size)
            .await
            .map_err(ledger_down)?;
        Listing {
            files: rows
                .into_iter()
                .map(|r| view_of_row(rt, links, r))
                .collect(),
            total,
            case_id: front_case,
            page,
            case: None,
            links: links.clone(),
        }
    };
    Ok(rt.front.render_list(&listing))
}

/// One front page of a back's list: one call when the back pages as asked; more when its
/// pages are smaller (Tines' 500); sliced here when the back lists the whole case.
async fn fetch_list(
    rt: &RouteRuntime,
    back_case: &str,
    page: Page,
    ctx: &BackCtx<'_>,
) -> Result<Listed, Error> {
    let read = |bytes: Bytes| {
        rt.back
            .read_list(&bytes, ctx)
            .map_err(|why| unreadable(rt, why))
    };
    let Some(call) = rt.back.list_call(back_case, page, ctx) else {
        return Ok(Listed::default());
    };
    let mut listed = read(fetch(rt, &call).await?)?;
    if listed.whole {
        let total = listed.files.len() as u64;
        listed.total = Some(listed.total.unwrap_or(total));
        let skip = usize::try_from(page.offset()).unwrap_or(usize::MAX);
        let take = usize::try_from(page.size).unwrap_or(usize::MAX);
        listed.files = listed.files.into_iter().skip(skip).take(take).collect();
        return Ok(listed);
    }
    let per_call = listed.files.len() as u64;
    let wanted = page.size.min(listed.total.unwrap_or(0));
    let mut number = page.number;
    while page.number == 1
        && per_call > 0
        && (listed.files.len() as u64) < wanted
        && number < MAX_BACK_PAGES
    {
        number += 1;
        let Some(call) = rt.back.list_call(back_case, Page { number, ..page }, ctx) else {
            break;
        };
        let more = read(fetch(rt, &call).await?)?;
        if more.files.is_empty() {
            break;
        }
        listed.files.extend(more.files);
    }
    listed
        .files
        .truncate(usize::try_from(page.size).unwrap_or(usize::MAX));
    Ok(listed)
}

/// The ledger's rows for listed files. On a route that maps ids, a file first seen here
/// gets its front id now (the first record of a file wins, so a racing upload or list
/// ends with the same id).
async fn rows_for(
    rt: &RouteRuntime,
    settings: &Settings,
    front_case: &str,
    back_case: &str,
    files: &[Attachment],
) -> Result<Vec<Option<Row>>, Error> {
    let route = rt.cfg.name.as_str();
    let ids: Vec<String> = files.iter().filter_map(|a| a.id.clone()).collect();
    if ids.is_empty() {
        return Ok(vec![None; files.len()]);
    }
    let known = match settings.ledger.by_back(route, ids).await {
        Ok(rows) => rows,
        Err(e) if rt.ids.is_some() => return Err(ledger_down(e)),
        Err(e) => {
            tracing::warn!(route, error = %e, "the ledger cannot fill in the list");
            Vec::new()
        }
    };
    let mut by_id: HashMap<String, Row> =
        known.into_iter().map(|r| (r.back_id.clone(), r)).collect();
    if let Some(form) = rt.ids {
        let mut new = Vec::new();
        for a in files {
            let Some(id) = a.id.as_ref().filter(|id| !by_id.contains_key(*id)) else {
                continue;
            };
            if new.iter().any(|r: &Row| &r.back_id == id) {
                continue;
            }
            new.push(Row {
                route: route.to_string(),
                front_id: settings
                    .ledger
                    .reserve(route, form)
                    .await
                    .map_err(ledger_down)?,
                front_case: Some(front_case.to_string()),
                back_case: Some(back_case.to_string()),
                back_id: id.clone(),
                back_comment_id: a.comment_id.clone(),
                name: a.name.clone(),
                content_type: a.content_type.clone(),
                size: a.size,
                created_at: a.created_at.clone(),
                uploader: uploader_text(a.uploader.as_ref()),
                ..Default::default()
            });
        }
        if !new.is_empty() {
            for r in settings.ledger.record(new).await.map_err(ledger_down)? {
                by_id.insert(r.back_id.clone(), r);
            }
        }
    }
    Ok(files
        .iter()
        .map(|a| a.id.as_ref().and_then(|id| by_id.get(id).cloned()))
        .collect())
}

/// A file named by a front request, in the back's terms.
struct Resolved {
    file: FileRef,
    row: Option<Row>,
    front_id: String,
    front_case: Option<String>,
}

/// Finds the back's ids of the file a request names; `None` when it is not known: an
/// id the ledger does not know on a route that maps ids or whose back cannot be asked by
/// the id alone, a file of another case, or a back that needs a case nobody knows (SPEC
/// 7.2). An unmapped case is 404.
async fn resolve(
    rt: &RouteRuntime,
    settings: &Settings,
    req: &Request,
) -> Result<Option<Resolved>, Error> {
    let front_id = req.file_id.clone().unwrap_or_default();
    let row = settings
        .ledger
        .by_front(&rt.cfg.name, &front_id)
        .await
        .map_err(ledger_down)?;
    if let (Some(row), Some(case)) = (&row, &req.case_id) {
        if row.front_case.as_deref().is_some_and(|c| c != case) {
            return Ok(None);
        }
    }
    if (rt.ids.is_some() || !rt.back.asked_by_id_alone()) && row.is_none() {
        return Ok(None);
    }
    let back_case = match (row.as_ref().and_then(|r| r.back_case.clone()), &req.case_id) {
        (Some(c), _) => Some(c),
        (None, Some(c)) => Some(rt.back_case(c)?),
        (None, None) => None,
    };
    if back_case.is_none() && rt.back.needs_case(req.op) {
        return Ok(None);
    }
    let file = FileRef {
        case_id: back_case,
        id: row
            .as_ref()
            .map_or_else(|| front_id.clone(), |r| r.back_id.clone()),
        comment_id: row
            .as_ref()
            .and_then(|r| r.back_comment_id.clone())
            .or_else(|| rt.ids.is_none().then(|| front_id.clone())),
        owner: req.owner.clone(),
    };
    let front_case = req
        .case_id
        .clone()
        .or_else(|| row.as_ref().and_then(|r| r.front_case.clone()));
    Ok(Some(Resolved {
        file,
        row,
        front_id,
        front_case,
    }))
}

/// Get and info.
async fn record(
    rt: &RouteRuntime,
    settings: &Settings,
    req: &Request,
    links: &Links,
) -> Result<Response<Body>, Error> {
    let ctx = rt.ctx(req.space.as_deref());
    let r = resolve(rt, settings, req).await?.ok_or_else(not_known)?;
    let mut a = match rt.back.record_call(&r.file, &ctx) {
        Some(call) => rt
            .back
            .read_record(&fetch(rt, &call).await?, &ctx)
            .map_err(|why| unreadable(rt, why))?,
        None if r.row.is_some() => Attachment::default(),
        None => return Err(not_known()),
    };
    // A back asked by the id alone (Case IQ) answers for a file of any case: one of
    // another case than the request's is not known there.
    if !rt.back.needs_case(req.op) {
        if let (Some(want), Some(got)) = (&r.file.case_id, &a.case_id) {
            if want != got {
                return Err(not_known());
            }
        }
    }
    if req.op == Op::Info {
        info(rt, settings, &r, &mut a, &ctx).await?;
    }
    if rt.front.needs_size() && a.size.is_none() && r.row.as_ref().is_none_or(|w| w.size.is_none())
    {
        a.size = learn_size(rt, settings, &r, &ctx).await;
    }
    let front_case = r
        .front_case
        .clone()
        .or_else(|| a.case_id.as_deref().map(|c| rt.front_case(c)))
        .unwrap_or_default();
    let file = view(rt, links, r.front_id, front_case, a, r.row);
    Ok(match req.op {
        Op::Info => rt.front.render_info(&file),
        _ => rt.front.render_record(&file),
    })
}

/// Fills name, type, size and hashes: the back's `info` where it has one, else the
/// ledger's, else computed once by reading the file from the upstream and then kept.
async fn info(
    rt: &RouteRuntime,
    settings: &Settings,
    r: &Resolved,
    a: &mut Attachment,
    ctx: &BackCtx<'_>,
) -> Result<(), Error> {
    if let Some(call) = rt.back.info_call(&r.file, ctx) {
        let i = rt
            .back
            .read_info(&fetch(rt, &call).await?)
            .map_err(|why| unreadable(rt, why))?;
        a.name = i.name.or(a.name.take());
        a.content_type = i.content_type.or(a.content_type.take());
        a.size = i.size.or(a.size);
        a.guid = i.guid;
        a.md5 = i.md5;
        a.sha256 = i.sha256;
        return Ok(());
    }
    if let Some(row) = r
        .row
        .as_ref()
        .filter(|r| r.md5.is_some() && r.sha256.is_some())
    {
        a.md5 = row.md5.clone();
        a.sha256 = row.sha256.clone();
        return Ok(());
    }
    let (md5, sha256, size) = hash_file(rt, r, ctx).await?;
    if let Some(row) = &r.row {
        if let Err(e) = settings
            .ledger
            .set_hashes(&rt.cfg.name, &row.front_id, &md5, &sha256)
            .await
        {
            tracing::warn!(route = %rt.cfg.name, error = %e, "the file's hashes could not be kept");
        }
    }
    a.md5 = Some(md5);
    a.sha256 = Some(sha256);
    a.size = a.size.or(Some(size));
    Ok(())
}

/// How many files' sizes one list asks the back for at once.
const SIZE_LOOKUPS: usize = 8;

/// Gives every listed file that has no size, in the back's answer or its ledger row, the
/// size [`learn_size`] finds (rows without one are left as they are).
async fn fill_sizes(
    rt: &RouteRuntime,
    settings: &Settings,
    files: &[Attachment],
    rows: &mut [Option<Row>],
    req: &Request,
    ctx: &BackCtx<'_>,
) {
    use futures_util::stream::{self, StreamExt};
    let missing: Vec<(usize, Resolved)> = files
        .iter()
        .zip(rows.iter())
        .enumerate()
        .filter_map(|(i, (a, row))| {
            let row = row
                .as_ref()
                .filter(|r| a.size.is_none() && r.size.is_none())?;
            let file = FileRef {
                case_id: row.back_case.clone(),
                id: row.back_id.clone(),
                comment_id: row.back_comment_id.clone(),
                owner: req.owner.clone(),
            };
            Some((
                i,
                Resolved {
                    file,
                    row: Some(row.clone()),
                    front_id: row.front_id.clone(),
                    front_case: row.front_case.clone(),
                },
            ))
        })
        .collect();
    let learnt: Vec<(usize, Option<u64>)> = stream::iter(missing)
        .map(|(i, r)| async move { (i, learn_size(rt, settings, &r, ctx).await) })
        .buffer_unordered(SIZE_LOOKUPS)
        .collect()
        .await;
    for (i, size) in learnt {
        if let Some(row) = rows.get_mut(i).and_then(Option::as_mut) {
            row.size = size;
        }
    }
}

/// A file's size from the back (its `info` where it has one, else the download's
/// `Content-Length`, else by reading the file through, which gives its hashes too), kept
/// in the ledger row so it is asked once. `None` (logged) when the back cannot say.
async fn learn_size(
    rt: &RouteRuntime,
    settings: &Settings,
    r: &Resolved,
    ctx: &BackCtx<'_>,
) -> Option<u64> {
    let size = match ask_size(rt, r, ctx).await {
        Ok(size) => size,
        Err(e) => {
            tracing::warn!(route = %rt.cfg.name, back_id = %r.file.id, error = %e.message, "the file's size could not be learnt");
            return None;
        }
    };
    if let Some(row) = &r.row {
        // A record fills only the fields the held row lacks.
        let filled = Row {
            size: Some(size),
            ..row.clone()
        };
        if let Err(e) = settings.ledger.record(vec![filled]).await {
            tracing::warn!(route = %rt.cfg.name, error = %e, "the file's size could not be kept");
        }
    }
    Some(size)
}

async fn ask_size(rt: &RouteRuntime, r: &Resolved, ctx: &BackCtx<'_>) -> Result<u64, Error> {
    if let Some(call) = rt.back.info_call(&r.file, ctx) {
        let i = rt
            .back
            .read_info(&fetch(rt, &call).await?)
            .map_err(|why| unreadable(rt, why))?;
        if let Some(size) = i.size {
            return Ok(size);
        }
    }
    let (head, body) = open_download(rt, r, ctx, None).await?;
    let declared = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(size) = declared.filter(|_| head.status == StatusCode::OK) {
        // Not read: dropping the body closes that upstream connection.
        drop(body);
        return Ok(size);
    }
    drop(body);
    hash_file(rt, r, ctx).await.map(|(_, _, size)| size)
}

/// Reads a file from the upstream into MD5 and SHA-256 (hex) and its size.
async fn hash_file(
    rt: &RouteRuntime,
    r: &Resolved,
    ctx: &BackCtx<'_>,
) -> Result<(String, String, u64), Error> {
    use md5::Digest;
    let (_, mut body) = open_download(rt, r, ctx, None).await?;
    let mut md5 = md5::Md5::new();
    let mut sha = sha2::Sha256::new();
    let mut size = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            tracing::warn!(route = %rt.cfg.name, error = %e, "reading the file to hash it failed");
            Error::upstream_failed("The case system stopped sending the file.")
        })?;
        if let Ok(data) = frame.into_data() {
            md5.update(&data);
            sha.update(&data);
            size += data.len() as u64;
        }
    }
    Ok((
        crate::codec::hex(&md5.finalize()),
        crate::codec::hex(&sha.finalize()),
        size,
    ))
}

/// Asks the upstream for a file's bytes: the answer's head and its body, after a logical
/// failure (Thalamus `FAILED`) was told apart from a file of those bytes.
async fn open_download(
    rt: &RouteRuntime,
    r: &Resolved,
    ctx: &BackCtx<'_>,
    range: Option<HeaderValue>,
) -> Result<(http::response::Parts, DownloadBody), Error> {
    let call = rt.back.download_call(&r.file, ctx);
    let extra = range.map(|v| (header::RANGE, v)).into_iter().collect();
    let resp = rt
        .upstream
        .open(&call, extra)
        .await
        .map_err(|e| unreachable(rt, e))?;
    let status = resp.status();
    if !status.is_success() {
        let answer = rt.upstream.read_answer(resp).await;
        return Err(refused(rt, status, &answer.bytes).await);
    }
    let (head, incoming) = resp.into_parts();
    let mut body = DownloadBody::new(incoming, rt.upstream.timeout());
    let declared = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if rt.back.fails_with_200() && declared.is_none_or(|n| n <= PEEK_BYTES as u64) {
        let (peeked, ended) = body.peek(PEEK_BYTES).await.map_err(|e| {
            tracing::warn!(route = %rt.cfg.name, error = %crate::error::Chain(&*e), "the download broke off");
            Error::upstream_failed("The case system stopped sending the file.")
        })?;
        if ended && rt.back.failed_answer(&peeked) && !is_the_file(r.row.as_ref(), &peeked) {
            return Err(Error::upstream_failed("The case system answered FAILED."));
        }
    }
    Ok((head, body))
}

/// Whether the ledger says the file is exactly `bytes` (a file whose content is `FAILED`):
/// its size and its SHA-256 both match. A size alone says nothing of the bytes.
fn is_the_file(row: Option<&Row>, bytes: &[u8]) -> bool {
    let Some(row) = row else { return false };
    row.size == Some(bytes.len() as u64) && row.sha256.as_deref() == Some(&hashes(bytes).1)
}

/// MD5 and SHA-256 of `bytes`, in lowercase hex.
pub fn hashes(bytes: &[u8]) -> (String, String) {
    use md5::Digest;
    (
        crate::codec::hex(&md5::Md5::digest(bytes)),
        crate::codec::hex(&sha2::Sha256::digest(bytes)),
    )
}

async fn download(
    rt: &RouteRuntime,
    settings: &Settings,
    parts: &Parts,
    req: &Request,
) -> Result<Response<Body>, Error> {
    let ctx = rt.ctx(req.space.as_deref());
    let r = resolve(rt, settings, req).await?.ok_or_else(not_known)?;
    let range = parts.headers.get(header::RANGE).cloned();
    let (head, body) = open_download(rt, &r, &ctx, range).await?;
    let row = r.row.as_ref();
    let name = head
        .headers
        .get(header::CONTENT_DISPOSITION)
        .and_then(|v| disposition::parse(v.as_bytes()).ok())
        .and_then(|d| d.filename)
        .or_else(|| row.and_then(|r| r.name.clone()))
        .unwrap_or_else(|| r.front_id.clone());
    let content_type = head
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| row.and_then(|r| r.content_type.clone()))
        .unwrap_or_else(|| guess_type(&name).into_owned());
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let same = rt.front.id() == rt.back.id();
    // Kibana answers an empty file with 204; only its own clients expect that.
    let status = match head.status {
        StatusCode::NO_CONTENT if same => StatusCode::NO_CONTENT,
        StatusCode::PARTIAL_CONTENT => StatusCode::PARTIAL_CONTENT,
        _ => StatusCode::OK,
    };
    let mut resp = Response::new(body.boxed_unsync());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    let disposition = disposition::download_header(rt.front.inline(essence), &name);
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    copy(&head.headers, h, &[header::ETAG, header::LAST_MODIFIED]);
    match status {
        StatusCode::NO_CONTENT => {}
        _ if head.status == StatusCode::NO_CONTENT => {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        _ => copy(
            &head.headers,
            h,
            &[
                header::CONTENT_LENGTH,
                header::CONTENT_RANGE,
                header::ACCEPT_RANGES,
            ],
        ),
    }
    Ok(resp)
}

fn copy(from: &HeaderMap, to: &mut HeaderMap, names: &[header::HeaderName]) {
    for name in names {
        if let Some(v) = from.get(name) {
            to.insert(name.clone(), v.clone());
        }
    }
}

async fn delete(
    rt: &RouteRuntime,
    settings: &Settings,
    req: &Request,
) -> Result<Response<Body>, Error> {
    let ctx = rt.ctx(req.space.as_deref());
    if rt.back.delete_call(&FileRef::default(), &ctx).is_none() {
        return Err(Error::not_supported(format!(
            "The upstream of this route ({}) cannot delete files.",
            rt.back.id()
        )));
    }
    let Some(r) = resolve(rt, settings, req).await? else {
        return Ok(rt.front.render_deleted(false));
    };
    let Some(call) = rt.back.delete_call(&r.file, &ctx) else {
        return Err(Error::internal("the upstream cannot delete"));
    };
    let (status, answer) = rt
        .upstream
        .call(&call)
        .await
        .map_err(|e| unreachable(rt, e))?;
    let deleted = if status.is_success() {
        if rt.back.failed_answer(&answer.bytes) {
            return Err(Error::upstream_failed("The case system answered FAILED."));
        }
        rt.back.read_deleted(&answer.bytes)
    } else if status == StatusCode::NOT_FOUND {
        false
    } else {
        return Err(refused(rt, status, &answer.bytes).await);
    };
    if deleted {
        let route = rt.cfg.name.as_str();
        let front_id = r.row.as_ref().map_or(r.front_id.as_str(), |r| &r.front_id);
        let front_case = r.front_case.as_deref();
        if let Err(e) = settings.ledger.remove(route, front_id, front_case).await {
            tracing::warn!(route, error = %e, "the deleted file's ledger row could not be removed");
        }
    }
    Ok(rt.front.render_deleted(deleted))
}

/// Kibana's `comments/_find`: the back's own page when it is Kibana, else an empty one.
async fn comments(
    rt: &RouteRuntime,
    parts: &Parts,
    req: &Request,
) -> Result<Response<Body>, Error> {
    let front_case = req.case_id.clone().unwrap_or_default();
    let page = rt.front.page(req, parts)?;
    let back_case = rt.back_case(&front_case)?;
    let ctx = rt.ctx(req.space.as_deref());
    let raw = match rt.back.comments_call(&back_case, page, &ctx) {
        Some(call) if rt.front.id() == rt.back.id() => {
            let bytes = fetch(rt, &call).await?;
            Some(serde_json::from_slice(&bytes).map_err(|e| unreadable(rt, e))?)
        }
        _ => None,
    };
    Ok(rt.front.render_comments(&CommentsPage { page, raw }))
}

/// A download's body: the bytes already read (to tell `FAILED` from a file), then the
/// upstream's, each wait for the next chunk bounded by the upstream timeout (silence, not
/// total time: a slow client is not the upstream's silence, because the body is only
/// polled when the client takes more).
pub struct DownloadBody {
    prefix: Option<Bytes>,
    inner: UpstreamBody,
    idle: crate::service::Idle,
}

/// The upstream stopped sending a body.
#[derive(Debug, thiserror::Error)]
#[error("the upstream stopped sending for longer than its timeout")]
pub struct Silent;

impl DownloadBody {
    /// Relays `inner`, failing when it stays silent for `timeout`.
    pub fn new(inner: UpstreamBody, timeout: Duration) -> Self {
        DownloadBody {
            prefix: None,
            inner,
            idle: crate::service::Idle::new(timeout),
        }
    }

    /// Reads up to `n` bytes ahead (kept, and sent first); true when the body ended.
    async fn peek(&mut self, n: usize) -> Result<(Bytes, bool), BoxError> {
        let mut buf = BytesMut::from(self.prefix.take().unwrap_or_default().as_ref());
        let mut ended = false;
        while buf.len() <= n {
            match self.frame().await {
                None => {
                    ended = true;
                    break;
                }
                Some(Err(e)) => return Err(e),
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        buf.extend_from_slice(&d);
                    }
                }
            }
        }
        let bytes = buf.freeze();
        self.prefix = Some(bytes.clone());
        Ok((bytes, ended))
    }
}

impl http_body::Body for DownloadBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(p) = this.prefix.take().filter(|p| !p.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(p))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.idle.moved();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                std::task::ready!(this.idle.poll_wait(cx));
                Poll::Ready(Some(Err(Box::new(Silent))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.as_ref().is_none_or(Bytes::is_empty) && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let extra = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + extra);
        if let Some(u) = inner.upper() {
            hint.set_upper(u + extra);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_host_is_valid_exactly_when_http_reads_it_as_an_authority() {
        // Every text of up to four characters from an alphabet of what an authority may
        // and may not hold: the byte path must never accept what http refuses.
        let alphabet = [
            "a", "Z", "1", ".", "-", ":", "@", "[", "]", "%", "/", " ", "é", "_",
        ];
        let mut texts = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = texts
                .iter()
                .filter(|t| t.chars().count() == texts.last().map_or(0, |l| l.chars().count()))
                .flat_map(|t| alphabet.iter().map(move |c| format!("{t}{c}")))
                .collect();
            texts.extend(longer);
        }
        assert!(texts.len() > 40_000);
        for host in texts.iter().map(String::as_str).chain([
            "127.0.0.1:8080",
            "cases.example:443",
            "[::1]:9",
            "user@h:1",
            "h:99999",
            "h:",
        ]) {
            let http = host.parse::<http::uri::Authority>().is_ok();
            assert_eq!(super::valid_host(host), http, "{host:?}");
        }
    }
}
