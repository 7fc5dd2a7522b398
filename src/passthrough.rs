//! Passthrough (SPEC 7.5): on a route whose front and back speak the same dialect and
//! that sets `passthrough = true`, every request that is none of casegate's own
//! operations (creating cases, notes, searches: any path, method, query and body of that
//! API) is forwarded unchanged, streaming both ways, after the client's credential was
//! checked and replaced by the route's upstream credential. Hop-by-hop headers are
//! dropped both ways; nothing is retried once sent.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::request::Parts;
use http::Response;
use http_body_util::BodyExt;

use crate::dialect::{respond, wire};
use crate::error::Body;
use crate::forward::Settings;
use crate::inbound::body_stream;
use crate::read::DownloadBody;
use crate::router::RouteRuntime;
use crate::upstream::Progress;

/// Headers that belong to one connection, never forwarded (RFC 9110 section 7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Forwards a request of the route's API to its upstream; `rest` is the path without the
/// route's prefix.
pub async fn forward<B>(
    rt: &RouteRuntime,
    settings: &Settings,
    mut parts: Parts,
    body: B,
    rest: &str,
) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<crate::error::BoxError>,
{
    if !rt.auth.tokens.is_empty() {
        if let Err(e) = rt.front.authenticate(&parts, &rt.auth) {
            drop(body);
            return respond(rt.front, &e);
        }
    }
    rt.front.strip_credentials(&mut parts);
    let mut path = rest.to_string();
    if let Some(q) = parts.uri.query() {
        let q = wire::query_without(q, rt.front.credential_query_keys());
        if !q.is_empty() {
            path.push('?');
            path.push_str(&q);
        }
    }
    let headers: Vec<(HeaderName, http::HeaderValue)> = end_to_end(&parts.headers)
        .filter(|(k, _)| *k != header::HOST && *k != header::CONTENT_LENGTH)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let limits = &settings.limits;
    let stream = body_stream(body, limits.multipart_body());
    let out = http_body_util::StreamBody::new(futures_util::StreamExt::map(stream, |r| {
        r.map(http_body::Frame::data)
            .map_err(|e| Box::new(e) as crate::error::BoxError)
    }))
    .boxed_unsync();
    let resp = match rt
        .upstream
        .send(
            parts.method.clone(),
            &path,
            headers,
            out,
            Progress::new(),
            crate::upstream::AnswerHeaders::Read,
        )
        .await
    {
        Ok(resp) => resp,
        Err(e) => {
            let err = e.into_error();
            tracing::warn!(route = %rt.cfg.name, code = err.code.as_str(), "passthrough request failed");
            return respond(rt.front, &err);
        }
    };
    let (head, incoming) = resp.into_parts();
    let body = DownloadBody::new(incoming, rt.upstream.timeout()).boxed_unsync();
    let mut out = Response::new(body);
    *out.status_mut() = head.status;
    for (k, v) in end_to_end(&head.headers) {
        out.headers_mut().append(k.clone(), v.clone());
    }
    out
}

/// The headers of a message minus the hop-by-hop ones (and those its `Connection`
/// header names).
fn end_to_end(headers: &HeaderMap) -> impl Iterator<Item = (&HeaderName, &http::HeaderValue)> {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    headers.iter().filter(move |(k, _)| {
        let k = k.as_str();
        !HOP_BY_HOP.contains(&k) && !named.iter().any(|n| n == k)
    })
}
