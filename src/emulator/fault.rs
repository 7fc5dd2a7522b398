//! Injected faults: the ways a real case system misbehaves (error statuses, slowness,
//! dropped connections, bodies that are not what they claim), their text form for the
//! command line, and the answers they turn a normal answer into. Which requests a fault
//! touches is decided in `server.rs`: uploads and reads (lists, gets, downloads, deletes),
//! and for `comment-status` and `comment-delay` the second calls only.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::StatusCode;
use http_body_util::BodyExt as _;

use super::wire::{self, Dropped, Resp, Served};

/// A misbehaviour injected into the answers to uploads and reads (and, for
/// [`Fault::CommentStatus`] and [`Fault::CommentDelay`], into the second calls that carry
/// a comment: Kibana comments and Thalamus notes). "Serve" below is what the request does
/// when all is well: store an upload, read or delete a file.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// `status=N`: read the request, serve nothing, answer status N in the dialect's error
    /// form.
    Status(u16),
    /// `delay=SECS`: serve normally, then wait before answering.
    Delay(Duration),
    /// `failed`: read the request, serve nothing, answer 200 `FAILED` (Thalamus's logical
    /// failure).
    Failed,
    /// `reset-before-answer`: read the request, serve nothing, close the connection without
    /// answering.
    ResetBeforeAnswer,
    /// `reset-mid-body`: an upload: read about half of it, then drop the connection, nothing
    /// stored. A download: send the head (with the full `Content-Length`) and about half
    /// the bytes, then drop the connection. Another read: drop it without answering.
    ResetMidBody,
    /// `headers-then-hang`: serve, send the answer's headers, then never send its body.
    HeadersThenHang,
    /// `html`: serve, answer 200 with an HTML page instead of the dialect's answer.
    Html,
    /// `html-error`: serve nothing, answer 502 with a proxy's HTML error page.
    HtmlError,
    /// `truncated-json`: serve, answer 200 with the first half of the normal answer.
    TruncatedJson,
    /// `empty-body`: serve, answer 200 JSON with an empty body.
    EmptyBody,
    /// `trickle`: serve, send the normal answer slowly: one byte every 200 ms, a download
    /// 1 KiB every 100 ms.
    Trickle,
    /// `huge-body`: serve, answer with a 64 MiB JSON body (the answer after 64 MiB of padding).
    HugeBody,
    /// `comment-status=N`: uploads and reads are normal; comment and note calls answer
    /// status N.
    CommentStatus(u16),
    /// `comment-delay=SECS`: uploads and reads are normal; comment and note calls wait
    /// SECS, then are served.
    CommentDelay(Duration),
    /// `flaky=P`: P uploads and reads in every hundred (evenly spread, counted together)
    /// answer 500 and serve nothing; the others are normal.
    Flaky(u8),
}

const FORMS: &str = "status=N, delay=SECS, failed, reset-before-answer, reset-mid-body, \
headers-then-hang, html, html-error, truncated-json, empty-body, trickle, huge-body, comment-status=N, \
comment-delay=SECS, flaky=PERCENT";

fn parse_status(text: &str, s: &str) -> Result<u16, String> {
    text.parse::<u16>()
        .ok()
        .filter(|&n| StatusCode::from_u16(n).is_ok())
        .ok_or_else(|| format!("fault \"{s}\": \"{text}\" is not an HTTP status (100-999)"))
}

/// A number of seconds (`2.5`) or a duration (`250ms`).
fn parse_secs(text: &str, s: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .and_then(|f| Duration::try_from_secs_f64(f).ok())
        .or_else(|| humantime::parse_duration(text).ok())
        .ok_or_else(|| format!("fault \"{s}\": \"{text}\" is not a number of seconds"))
}

impl std::str::FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Fault, String> {
        let (name, arg) = match s.split_once('=') {
            Some((name, arg)) => (name, Some(arg)),
            None => (s, None),
        };
        let fault = match (name, arg) {
            ("status", Some(n)) => Fault::Status(parse_status(n, s)?),
            ("comment-status", Some(n)) => Fault::CommentStatus(parse_status(n, s)?),
            ("delay", Some(secs)) => Fault::Delay(parse_secs(secs, s)?),
            ("comment-delay", Some(secs)) => Fault::CommentDelay(parse_secs(secs, s)?),
            ("flaky", Some(p)) => Fault::Flaky(
                p.parse::<u8>()
                    .ok()
                    .filter(|p| *p <= 100)
                    .ok_or_else(|| format!("fault \"{s}\": \"{p}\" is not a percentage (0-100)"))?,
            ),
            ("failed", None) => Fault::Failed,
            ("reset-before-answer", None) => Fault::ResetBeforeAnswer,
            ("reset-mid-body", None) => Fault::ResetMidBody,
            ("headers-then-hang", None) => Fault::HeadersThenHang,
            ("html", None) => Fault::Html,
            ("html-error", None) => Fault::HtmlError,
            ("truncated-json", None) => Fault::TruncatedJson,
            ("empty-body", None) => Fault::EmptyBody,
            ("trickle", None) => Fault::Trickle,
            ("huge-body", None) => Fault::HugeBody,
            _ => return Err(format!("unknown fault \"{s}\"; expected one of: {FORMS}")),
        };
        Ok(fault)
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Status(n) => write!(f, "status={n}"),
            Fault::Delay(d) => write!(f, "delay={}", d.as_secs_f64()),
            Fault::Failed => f.write_str("failed"),
            Fault::ResetBeforeAnswer => f.write_str("reset-before-answer"),
            Fault::ResetMidBody => f.write_str("reset-mid-body"),
            Fault::HeadersThenHang => f.write_str("headers-then-hang"),
            Fault::Html => f.write_str("html"),
            Fault::HtmlError => f.write_str("html-error"),
            Fault::TruncatedJson => f.write_str("truncated-json"),
            Fault::EmptyBody => f.write_str("empty-body"),
            Fault::Trickle => f.write_str("trickle"),
            Fault::HugeBody => f.write_str("huge-body"),
            Fault::CommentStatus(n) => write!(f, "comment-status={n}"),
            Fault::CommentDelay(d) => write!(f, "comment-delay={}", d.as_secs_f64()),
            Fault::Flaky(p) => write!(f, "flaky={p}"),
        }
    }
}

/// The status of a `status=N` fault (500 if N is not a status at all).
pub(super) fn status(n: u16) -> StatusCode {
    StatusCode::from_u16(n).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The 200 `FAILED` answer of the `failed` fault.
pub(super) fn failed() -> Resp {
    wire::respond(StatusCode::OK, "text/plain", "FAILED")
}

/// The answer of the `html-error` fault: what nginx says when its upstream is gone.
pub(super) fn nginx_502() -> Resp {
    wire::respond(
        StatusCode::BAD_GATEWAY,
        "text/html",
        "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
         <center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.25.3</center>\r\n\
         </body>\r\n</html>\r\n",
    )
}

const HUGE_BODY: usize = 64 << 20;
const CHUNK: usize = 64 << 10;
const TRICKLE_EVERY: Duration = Duration::from_millis(200);
/// A download trickles this much ...
const DOWNLOAD_TRICKLE: usize = 1 << 10;
/// ... this often.
const DOWNLOAD_TRICKLE_EVERY: Duration = Duration::from_millis(100);
/// How long a cut-off download waits after its last bytes before dropping the connection,
/// so they leave the server's buffers first.
const CUT_OFF_AFTER: Duration = Duration::from_millis(100);

/// `bytes` as slices of at most `size` (sharing the buffer).
fn slices(bytes: Bytes, size: usize) -> impl Iterator<Item = Bytes> {
    let len = bytes.len();
    (0..len)
        .step_by(size)
        .map(move |at| bytes.slice(at..len.min(at + size)))
}

/// `chunks` sent one every `every`.
fn paced(chunks: impl Iterator<Item = Bytes> + Send + 'static, every: Duration) -> wire::Body {
    wire::streamed(
        futures_util::stream::iter(chunks).then(move |b| async move {
            tokio::time::sleep(every).await;
            b
        }),
    )
}

/// A successful download answer cut off by `reset-mid-body`: its head as it was (the full
/// `Content-Length` included), about half its bytes, then the connection dropped. `None`
/// for any other answer, or a download of fewer than 2 bytes: the caller then drops the
/// connection without answering.
pub(super) fn cut_off(normal: Resp) -> Option<Resp> {
    let Served(bytes) = normal.extensions().get::<Served>()?.clone();
    if !normal.status().is_success() || bytes.len() < 2 {
        return None;
    }
    let (head, _) = normal.into_parts();
    let half = bytes.slice(..bytes.len() / 2);
    let sent = futures_util::stream::iter(slices(half, wire::DOWNLOAD_CHUNK).map(Ok));
    let dropped = futures_util::stream::once(async {
        tokio::time::sleep(CUT_OFF_AFTER).await;
        Err(Dropped)
    });
    Some(Resp::from_parts(
        head,
        wire::streamed_fallible(sent.chain(dropped)),
    ))
}

/// Turns the normal (successful) answer into what a fault that serves the request sends
/// instead: the faults `headers-then-hang`, `html`, `truncated-json`, `empty-body`,
/// `trickle` and `huge-body`. Answers that are not 2xx pass unchanged: nothing was served,
/// and the fault only spoils confirmations. A download that hangs or trickles keeps its
/// head, `Content-Length` included.
pub(super) async fn spoil(fault: &Fault, normal: Resp) -> Result<Resp, Dropped> {
    if !normal.status().is_success() {
        return Ok(normal);
    }
    let served = normal.extensions().get::<Served>().cloned();
    let (mut head, body) = normal.into_parts();
    let body: Bytes = match served {
        Some(Served(bytes)) => match fault {
            Fault::HeadersThenHang => {
                let hang = wire::streamed(futures_util::stream::pending());
                return Ok(Resp::from_parts(head, hang));
            }
            Fault::Trickle => {
                let chunks = slices(bytes, DOWNLOAD_TRICKLE);
                let body = paced(chunks, DOWNLOAD_TRICKLE_EVERY);
                return Ok(Resp::from_parts(head, body));
            }
            _ => bytes,
        },
        None => body.collect().await?.to_bytes(),
    };
    head.headers.remove(CONTENT_LENGTH);
    head.status = StatusCode::OK;
    let json = HeaderValue::from_static("application/json");
    let body = match fault {
        Fault::HeadersThenHang => wire::streamed(futures_util::stream::pending()),
        Fault::Html => {
            head.headers
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
            wire::full(
                "<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\n\
                 <body><h1>Please sign in</h1><form method=\"post\" action=\"/login\">\
                 </form></body></html>\n",
            )
        }
        Fault::TruncatedJson => {
            head.headers.insert(CONTENT_TYPE, json);
            wire::full(body.slice(..body.len() / 2))
        }
        Fault::EmptyBody => {
            head.headers.insert(CONTENT_TYPE, json);
            wire::full(Bytes::new())
        }
        Fault::Trickle => paced(slices(body, 1), TRICKLE_EVERY),
        Fault::HugeBody => {
            head.headers.insert(CONTENT_TYPE, json);
            let padding = HUGE_BODY.saturating_sub(body.len());
            let spaces = Bytes::from(vec![b' '; CHUNK]);
            let mut chunks: Vec<Bytes> = vec![spaces.clone(); padding / CHUNK];
            chunks.push(spaces.slice(..padding % CHUNK));
            chunks.push(body);
            wire::streamed(futures_util::stream::iter(chunks))
        }
        _ => wire::full(body),
    };
    Ok(Resp::from_parts(head, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip() {
        let all = [
            Fault::Status(404),
            Fault::Delay(Duration::from_millis(2500)),
            Fault::Failed,
            Fault::ResetBeforeAnswer,
            Fault::ResetMidBody,
            Fault::HeadersThenHang,
            Fault::Html,
            Fault::HtmlError,
            Fault::TruncatedJson,
            Fault::EmptyBody,
            Fault::Trickle,
            Fault::HugeBody,
            Fault::CommentStatus(500),
            Fault::CommentDelay(Duration::from_millis(1500)),
            Fault::Flaky(10),
        ];
        for fault in all {
            let text = fault.to_string();
            assert_eq!(text.parse::<Fault>(), Ok(fault), "{text}");
        }
        assert_eq!(
            "delay=2.5".parse(),
            Ok(Fault::Delay(Duration::from_millis(2500)))
        );
        assert_eq!(
            "delay=250ms".parse(),
            Ok(Fault::Delay(Duration::from_millis(250)))
        );
        assert_eq!(Fault::Delay(Duration::from_secs(2)).to_string(), "delay=2");
    }

    #[test]
    fn bad_forms_are_refused() {
        for bad in [
            "",
            "status",
            "status=abc",
            "status=42",
            "delay=-1",
            "delay=soon",
            "comment-delay=later",
            "html=1",
            "boom",
        ] {
            let err = bad.parse::<Fault>().expect_err(bad);
            assert!(err.contains(bad), "{err}");
        }
        let err = "boom".parse::<Fault>().expect_err("boom");
        assert!(
            err.contains("reset-mid-body") && err.contains("comment-status=N"),
            "{err}"
        );
    }
}
