//! The canonical upload and result (SPEC section 2): dialect-neutral types every inbound
//! request is parsed into and every outbound request is built from.

use std::borrow::Cow;
use std::fmt;

use serde_json::Value;

use crate::error::Error;

/// A canonical field of an upload, as a dialect's parser reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    CaseId(String),
    /// The file's name: a multipart part's filename, or Tines' `filename`.
    FileName(String),
    /// Kibana's `filename` form field: the display name, with or without extension.
    DisplayName(String),
    /// Tines `value`, Case IQ `description`.
    Comment(String),
    AuthorEmail(String),
    /// Tines `team_case_block_id`, kept as text (numbers as their digits).
    BlockId(String),
    /// One Case IQ `bulkTags[]` value.
    Tag(String),
    /// Case IQ `templateLocale`.
    Locale(String),
}

impl Field {
    pub fn kind(&self) -> Kind {
        match self {
            Field::CaseId(_) => Kind::CaseId,
            Field::FileName(_) => Kind::FileName,
            Field::DisplayName(_) => Kind::DisplayName,
            Field::Comment(_) => Kind::Comment,
            Field::AuthorEmail(_) => Kind::AuthorEmail,
            Field::BlockId(_) => Kind::BlockId,
            Field::Tag(_) => Kind::Tags,
            Field::Locale(_) => Kind::Locale,
        }
    }
}

/// The kinds of canonical fields, for sets of them ([`Kinds`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Kind {
    CaseId = 1,
    FileName = 1 << 1,
    DisplayName = 1 << 2,
    Comment = 1 << 3,
    AuthorEmail = 1 << 4,
    BlockId = 1 << 5,
    Tags = 1 << 6,
    Locale = 1 << 7,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::CaseId,
        Kind::FileName,
        Kind::DisplayName,
        Kind::Comment,
        Kind::AuthorEmail,
        Kind::BlockId,
        Kind::Tags,
        Kind::Locale,
    ];

    /// Fields an upstream may be unable to carry: SPEC section 2 drops (or, on a strict
    /// route, refuses) them rather than failing.
    pub const DROPPABLE: Kinds =
        Kinds::of(&[Kind::AuthorEmail, Kind::BlockId, Kind::Tags, Kind::Locale]);
}

/// A set of [`Kind`]s.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Kinds(u16);

impl Kinds {
    pub const NONE: Kinds = Kinds(0);

    pub const fn of(kinds: &[Kind]) -> Kinds {
        let mut bits = 0u16;
        let mut i = 0;
        while i < kinds.len() {
            bits |= kinds[i] as u16;
            i += 1;
        }
        Kinds(bits)
    }

    pub fn contains(self, k: Kind) -> bool {
        self.0 & k as u16 != 0
    }

    pub fn insert(&mut self, k: Kind) {
        self.0 |= k as u16;
    }

    pub const fn union(self, o: Kinds) -> Kinds {
        Kinds(self.0 | o.0)
    }

    pub const fn minus(self, o: Kinds) -> Kinds {
        Kinds(self.0 & !o.0)
    }

    pub const fn intersect(self, o: Kinds) -> Kinds {
        Kinds(self.0 & o.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Kind> {
        Kind::ALL.into_iter().filter(move |k| self.contains(*k))
    }
}

impl fmt::Debug for Kinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// Largest file name casegate passes on, in bytes (the common file-system limit).
pub const MAX_FILE_NAME_BYTES: usize = 255;

/// The metadata of an upload: everything but the file's bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadMeta {
    pub case_id: Option<String>,
    pub file_name: Option<String>,
    /// The file part's own Content-Type, if it had one.
    pub part_content_type: Option<String>,
    pub display_name: Option<String>,
    pub comment: Option<String>,
    pub author_email: Option<String>,
    pub block_id: Option<String>,
    pub tags: Vec<String>,
    pub locale: Option<String>,
    /// Kibana space from the client's `/s/{space}` path.
    pub space: Option<String>,
    /// Fields reported so far (present or not).
    pub(crate) seen: Kinds,
}

impl UploadMeta {
    /// The fields a request's path carries.
    pub fn from_path(case_id: Option<String>, space: Option<String>) -> Self {
        let mut m = UploadMeta {
            space,
            ..Default::default()
        };
        if let Some(id) = case_id {
            m.case_id = Some(id);
            m.seen.insert(Kind::CaseId);
        }
        m
    }

    /// Records a field. A field may be given once (tags: any number of times).
    pub fn apply(&mut self, f: Field) -> Result<(), Error> {
        let kind = f.kind();
        if self.seen.contains(kind) && kind != Kind::Tags {
            return Err(Error::bad_request(format!(
                "The field {} was given twice.",
                kind_label(kind)
            )));
        }
        self.seen.insert(kind);
        match f {
            Field::CaseId(v) => self.case_id = Some(v),
            Field::FileName(v) => self.file_name = Some(sanitize_file_name(&v)?),
            Field::DisplayName(v) => self.display_name = Some(v),
            Field::Comment(v) => self.comment = Some(v),
            Field::AuthorEmail(v) => self.author_email = Some(v),
            Field::BlockId(v) => self.block_id = Some(v),
            Field::Tag(v) => self.tags.push(v),
            Field::Locale(v) => self.locale = Some(v),
        }
        Ok(())
    }

    /// Marks a field as settled without a value (a JSON `null`: absent).
    pub fn mark_seen(&mut self, k: Kind) {
        self.seen.insert(k);
    }

    pub fn seen(&self) -> Kinds {
        self.seen
    }

    /// The fields that hold a value.
    pub fn present(&self) -> Kinds {
        let mut k = Kinds::NONE;
        let pairs = [
            (Kind::CaseId, self.case_id.is_some()),
            (Kind::FileName, self.file_name.is_some()),
            (Kind::DisplayName, self.display_name.is_some()),
            (Kind::Comment, self.comment.is_some()),
            (Kind::AuthorEmail, self.author_email.is_some()),
            (Kind::BlockId, self.block_id.is_some()),
            (Kind::Tags, !self.tags.is_empty()),
            (Kind::Locale, self.locale.is_some()),
        ];
        for (kind, there) in pairs {
            if there {
                k.insert(kind);
            }
        }
        k
    }

    /// Adds what `late` learnt after the file (fields `self` does not have yet).
    pub fn merge_late(&mut self, late: UploadMeta) {
        macro_rules! take {
            ($($f:ident),*) => { $( if self.$f.is_none() { self.$f = late.$f; } )* };
        }
        take!(
            case_id,
            file_name,
            display_name,
            comment,
            author_email,
            block_id,
            locale
        );
        self.tags.extend(late.tags);
        self.seen = self.seen.union(late.seen);
    }

    /// The file's content type: the part's own when valid, else guessed from the name's
    /// extension, else `application/octet-stream`. The part's own is borrowed when it is
    /// written as the essence already.
    pub fn content_type(&self) -> Cow<'_, str> {
        if let Some(ct) = self.part_content_type.as_deref() {
            if let Some(plain) = plain_essence(ct) {
                return Cow::Borrowed(plain);
            }
            if let Ok(m) = ct.trim().parse::<mime_guess::mime::Mime>() {
                return Cow::Owned(m.essence_str().to_string());
            }
        }
        guess_type(self.file_name.as_deref().unwrap_or(""))
    }
}

/// `ct` itself when it is the essence the MIME parser would give it: `type/subtype` in
/// lowercase token characters, nothing around it (the usual `application/pdf`), read
/// byte by byte where the parser takes about 350 instructions and an allocation.
fn plain_essence(ct: &str) -> Option<&str> {
    let (kind, sub) = ct.split_once('/')?;
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$&^_.+-".contains(&b))
    };
    (token(kind) && token(sub)).then_some(ct)
}

fn kind_label(k: Kind) -> &'static str {
    match k {
        Kind::CaseId => "case id",
        Kind::FileName => "file name",
        Kind::DisplayName => "filename",
        Kind::Comment => "comment",
        Kind::AuthorEmail => "author email",
        Kind::BlockId => "block id",
        Kind::Tags => "tags",
        Kind::Locale => "locale",
    }
}

/// The MIME type guessed from a file name's extension.
pub fn guess_type(name: &str) -> Cow<'static, str> {
    extension(name)
        .and_then(table_type)
        .unwrap_or(Cow::Borrowed("application/octet-stream"))
}

/// `name`'s extension as `Path::extension` finds it (a test holds the two equal). A name
/// without a `/` (every file name a client sends, once its part's header is read) is its
/// own last component, read here directly: `Path` splits it into components first, about
/// 300 instructions an upload.
fn extension(name: &str) -> Option<&str> {
    // A name is short: byte loops, where a `char` search set up memchr for each.
    let bytes = name.as_bytes();
    if bytes.contains(&b'/') {
        return std::path::Path::new(name)
            .extension()
            .and_then(std::ffi::OsStr::to_str);
    }
    if name == ".." {
        return None;
    }
    // `.` and the empty name have no last component; `.x` is a stem without extension.
    match bytes.iter().rposition(|&b| b == b'.') {
        // After an ASCII `.`: a character boundary.
        Some(dot) if dot > 0 => name.get(dot + 1..),
        _ => None,
    }
}

/// `mime_guess`'s first type for `ext`, lowercased as a parsed `Mime`'s essence is (no
/// entry has parameters). Its own lookup (a binary search comparing case-insensitively
/// character by character, then parsing the `Mime`) cost about 1 us per upload, so the
/// table is read once into a hash map by lowercase extension, and its types are lent out
/// rather than copied. The map hashes with foldhash, not SipHash: its keys are
/// `mime_guess`'s, fixed, so a client's extensions can only look up, never flood it.
/// An extension that is not short ASCII (which Unicode case folding could still match)
/// asks `mime_guess` itself.
fn table_type(ext: &str) -> Option<Cow<'static, str>> {
    const LONGEST: usize = 24;
    type Table = std::collections::HashMap<String, String, foldhash::fast::FixedState>;
    static TABLE: std::sync::OnceLock<Table> = std::sync::OnceLock::new();
    if !ext.is_ascii() || ext.len() > LONGEST {
        return mime_guess::from_ext(ext)
            .first_raw()
            .map(|t| Cow::Owned(t.to_ascii_lowercase()));
    }
    let table = TABLE.get_or_init(|| {
        mime_guess::get_mime_extensions_str("*/*")
            .unwrap_or(&[])
            .iter()
            .filter_map(|e| {
                let raw = mime_guess::from_ext(e).first_raw()?;
                Some((e.to_ascii_lowercase(), raw.to_ascii_lowercase()))
            })
            .collect()
    });
    let mut buf = [0u8; LONGEST];
    let lower = &mut buf[..ext.len()];
    lower.copy_from_slice(ext.as_bytes());
    lower.make_ascii_lowercase();
    let lower = std::str::from_utf8(lower).ok()?;
    table.get(lower).map(|t| Cow::Borrowed(t.as_str()))
}

/// Splits `name` into stem and extension (`"a.tar.gz"` -> `("a.tar", Some("gz"))`); a
/// leading dot does not start an extension.
pub fn split_ext(name: &str) -> (&str, Option<&str>) {
    match name.rfind('.') {
        Some(i) if i > 0 && i + 1 < name.len() => (&name[..i], Some(&name[i + 1..])),
        _ => (name, None),
    }
}

/// Makes a client-supplied file name safe to pass on: only its last path segment is kept
/// (`../../etc/passwd` -> `passwd`, `C:\x\y.txt` -> `y.txt`); control characters, an empty
/// result, `.`/`..` and names over [`MAX_FILE_NAME_BYTES`] are refused.
pub fn sanitize_file_name(raw: &str) -> Result<String, Error> {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or(raw).trim();
    if base.chars().any(|c| c.is_control()) {
        return Err(Error::bad_request(
            "The file name contains control characters.",
        ));
    }
    if base.is_empty() || base == "." || base == ".." {
        return Err(Error::bad_request("The file name is empty."));
    }
    if base.len() > MAX_FILE_NAME_BYTES {
        return Err(Error::bad_request(format!(
            "The file name is longer than {MAX_FILE_NAME_BYTES} bytes."
        )));
    }
    Ok(base.to_string())
}

/// Renders an id as JSON: a number when it is all digits (and fits), else a string.
pub fn id_json(id: &str) -> Value {
    match id_number(id) {
        Some(n) => Value::from(n),
        None => Value::from(id),
    }
}

/// An id as [`id_json`] writes it, serialized in place (no JSON tree built).
#[derive(Debug, Clone, Copy)]
pub struct JsonId<'a>(pub &'a str);

impl serde::Serialize for JsonId<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match id_number(self.0) {
            Some(n) => s.serialize_u64(n),
            None => s.serialize_str(self.0),
        }
    }
}

impl JsonId<'_> {
    /// The id's JSON onto a `String`, as its `Serialize` writes it.
    pub fn push(&self, out: &mut String) {
        match id_number(self.0) {
            Some(n) => out.push_str(itoa::Buffer::new().format(n)),
            None => crate::codec::json_out::push_json_str(out, self.0),
        }
    }

    /// The id as a member of `o`, as its `Serialize` writes it.
    pub fn write(&self, o: &mut crate::codec::json_out::Object<'_>, key: &'static str) {
        match id_number(self.0) {
            Some(n) => o.u64(key, n),
            None => o.str(key, self.0),
        };
    }
}

/// The id as a JSON number, when it is one written canonically (no leading zero).
fn id_number(id: &str) -> Option<u64> {
    let canonical = !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_digit())
        && (id == "0" || !id.starts_with('0'));
    canonical.then(|| id.parse().ok()).flatten()
}

/// Reads an id from JSON: numbers as their digits, strings as they are.
pub fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One attachment as an upstream describes it; what it does not say is `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attachment {
    /// The upstream's id of the file (Kibana: the file id).
    pub id: Option<String>,
    /// Kibana: the id of the case comment that holds the file.
    pub comment_id: Option<String>,
    /// The upstream's case id, when the answer says.
    pub case_id: Option<String>,
    pub name: Option<String>,
    pub content_type: Option<String>,
    pub size: Option<u64>,
    pub created_at: Option<String>,
    /// Where the upstream serves the file's bytes (never shown to clients: links point
    /// back through casegate).
    pub url: Option<String>,
    pub uploader: Option<Person>,
    /// The comment stored with the file (Tines `value`).
    pub comment: Option<String>,
    /// Tines `block_id` as the upstream gave it.
    pub block_id: Option<Value>,
    /// Case IQ `encoding`.
    pub encoding: Option<String>,
    /// Tines `info`: the file's guid and hashes (hex).
    pub guid: Option<String>,
    pub md5: Option<String>,
    pub sha256: Option<String>,
    /// The back's own JSON for the file (a Kibana comment), for a front of the same
    /// dialect to answer with as it is.
    pub raw: Option<Value>,
}

/// The user an upstream says uploaded the file.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Person {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_service_account: Option<bool>,
}

impl Person {
    /// The person as its derived `Serialize` writes it (absent fields left out), written
    /// by hand: the ledger keeps it with every upload.
    pub fn to_json(&self) -> String {
        let texts = [
            ("id", &self.id),
            ("first_name", &self.first_name),
            ("last_name", &self.last_name),
            ("username", &self.username),
            ("full_name", &self.full_name),
            ("email", &self.email),
            ("avatar_url", &self.avatar_url),
        ];
        // Room for every key and its quotes and text unescaped (a realloc and a copy
        // otherwise, once a person is longer than a guess).
        let room: usize = texts
            .iter()
            .map(|(k, t)| t.as_ref().map_or(0, |t| k.len() + t.len() + 6))
            .sum();
        let mut out = String::with_capacity(room + 32);
        let mut o = crate::codec::json_out::Object::new(&mut out);
        for (key, text) in texts {
            if let Some(t) = text {
                o.str(key, t);
            }
        }
        if let Some(b) = self.is_service_account {
            o.bool("is_service_account", b);
        }
        o.end();
        out
    }
}

/// What the upstream said about a stored upload, dialect-neutral.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UploadResult {
    /// The new attachment (for Kibana: `id` is the file id, `comment_id` the comment's).
    pub attachment: Attachment,
    pub uploader: Option<Person>,
    /// The case object, where the upstream returns one (Kibana).
    pub case: Option<Value>,
    /// The comment was stored with the file (Tines `FILE_ATTACHED_AND_COMMENTED`).
    pub comment_stored: bool,
    /// Kibana: the case's owner.
    pub owner: Option<String>,
}

/// A file as a front renders it: its id and case in the front's form, a link back
/// through casegate, and what is known about it (from the upstream, filled in from the
/// ledger and from what casegate counted).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileView {
    /// The front id (Kibana: the file id).
    pub id: String,
    /// Kibana fronts: the comment id (the front id again when the back has one id).
    pub comment_id: String,
    /// The case id in the front's form.
    pub case_id: String,
    pub name: String,
    pub content_type: String,
    pub size: Option<u64>,
    pub created_at: Option<String>,
    /// The front's own download URL for the file, through casegate (where it has one).
    pub link: Option<String>,
    pub uploader: Option<Person>,
    /// The comment stored with the file, when it was stored.
    pub comment: Option<String>,
    pub block_id: Option<Value>,
    pub encoding: Option<String>,
    pub guid: Option<String>,
    pub md5: Option<String>,
    pub sha256: Option<String>,
    /// Kibana: the case's owner (`cases` when unknown, not copied for each file).
    pub owner: std::borrow::Cow<'static, str>,
    /// The back's own JSON for the file when the back speaks the front's dialect.
    pub raw: Option<Value>,
}

/// At most how many files of a case an upload answer lists (a Thalamus front, from the
/// ledger, oldest first; the new file is always listed): the answer's size and the memory
/// it takes stay bounded however many files a case holds.
pub const CASE_FILES_MAX: u64 = 10_000;

/// Everything a front needs to answer an upload.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The new file.
    pub file: FileView,
    /// The front ids of every file of the case casegate knows (the first
    /// [`CASE_FILES_MAX`]), the new one included (Thalamus answers with the list).
    pub case_files: crate::ledger::CaseFiles,
    /// Where the answer's links point (for the files of `case_files`).
    pub links: Links,
    /// The case, where the upstream answered with one in the front's own dialect (Kibana).
    pub case: Option<Value>,
}

/// One page of a list: 1-based page number and page size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub number: u64,
    pub size: u64,
}

impl Page {
    /// Every item (a list that does not page: Kibana's case).
    pub const ALL: Page = Page {
        number: 1,
        size: 10_000,
    };

    /// Items skipped before this page.
    pub fn offset(&self) -> u64 {
        self.number.saturating_sub(1).saturating_mul(self.size)
    }

    /// Number of pages `total` items fill (0 for none).
    pub fn pages(&self, total: u64) -> u64 {
        total.div_ceil(self.size.max(1))
    }
}

/// What a back listed for one case.
#[derive(Debug, Clone, Default)]
pub struct Listed {
    pub files: Vec<Attachment>,
    /// Every file of the case, when the back says (else the length of `files`).
    pub total: Option<u64>,
    /// The case object, where the back answered with one (Kibana).
    pub case: Option<Value>,
    /// `files` holds every file of the case, whatever page was asked (the back does not
    /// page: Kibana's case); casegate cuts the page itself.
    pub whole: bool,
}

/// A list as a front renders it.
#[derive(Debug, Clone)]
pub struct Listing {
    pub case_id: String,
    pub files: Vec<FileView>,
    pub page: Page,
    /// Files of the case in all pages.
    pub total: u64,
    /// The back's own case object, for a front of the same dialect.
    pub case: Option<Value>,
    /// Where links point.
    pub links: Links,
}

/// Where the links in answers point: casegate's public base and the route's prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Links {
    /// `scheme://host[:port]`, or the configured `public_url` (no trailing slash).
    pub base: String,
    /// The route's prefix (`""` or `/kibana`), shared with the route.
    pub prefix: std::sync::Arc<str>,
}

impl Links {
    /// The URL of `path` (which starts with `/`) through casegate.
    pub fn url(&self, path: &str) -> String {
        self.url_of(&[path])
    }

    /// The URL of the path made of `parts` (the first starts with `/`), built in one
    /// allocation: a Thalamus upload answer holds up to
    /// [`CASE_FILES_MAX`] of them.
    pub fn url_of(&self, parts: &[&str]) -> String {
        let len =
            self.base.len() + self.prefix.len() + parts.iter().map(|p| p.len()).sum::<usize>();
        let mut url = String::with_capacity(len);
        url.push_str(&self.base);
        url.push_str(&self.prefix);
        for part in parts {
            url.push_str(part);
        }
        url
    }
}

/// A file as a back must be asked for it: its ids and case in the back's own form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileRef {
    pub case_id: Option<String>,
    /// The back's file id (Kibana: the file id).
    pub id: String,
    /// Kibana: the comment id.
    pub comment_id: Option<String>,
    /// Kibana: the owner the client's blob path named.
    pub owner: Option<String>,
}

/// One page of a case's user comments (Kibana's `comments/_find`).
#[derive(Debug, Clone)]
pub struct CommentsPage {
    pub page: Page,
    /// The back's own answer, for a front of the same dialect; `None`: an empty page.
    pub raw: Option<Value>,
}

/// Current time as RFC 3339 with milliseconds (`2024-03-25T15:40:39.123Z`).
pub fn now_rfc3339_millis() -> String {
    rfc3339(std::time::SystemTime::now(), true)
}

/// Current time as RFC 3339 in whole seconds (`2024-03-25T15:40:39Z`).
pub fn now_rfc3339_seconds() -> String {
    rfc3339(std::time::SystemTime::now(), false)
}

/// The date (year, month 1-12, day 1-31) `days` after 1970-01-01: Howard Hinnant's
/// `civil_from_days`, for days since 1970 (its era arithmetic stays unsigned from there).
#[inline]
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + u64::from(month <= 2), month, day)
}

/// `t` in UTC as RFC 3339, with milliseconds (cut, not rounded) or without, as humantime's
/// `format_rfc3339_millis` and `format_rfc3339_seconds` write it (a test holds the two
/// equal). Written digit by digit into one buffer: humantime's `Display` went through the
/// formatter and a `String` that grew, about 550 instructions an upload. A time before
/// 1970 is written as 1970's first instant, one past 9999 as 9999's last (humantime
/// panics on both).
pub(crate) fn rfc3339(t: std::time::SystemTime, millis: bool) -> String {
    const LAST: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let (secs, ms) = match since.as_secs() {
        s if s > LAST => (LAST, 999),
        s => (s, since.subsec_millis()),
    };
    let (year, month, day) = civil_from_days(secs / 86_400);
    let in_day = secs % 86_400;
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut n: u64| {
        for i in (at..at + width).rev() {
            // A digit: below 10, so the cast keeps it.
            out[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, in_day / 3_600);
    put(14, 2, in_day / 60 % 60);
    put(17, 2, in_day % 60);
    let end = if millis {
        put(20, 3, u64::from(ms));
        out.len()
    } else {
        out[19] = b'Z';
        20
    };
    // Every byte written is an ASCII digit or one of `-T:.Z`.
    std::str::from_utf8(&out[..end])
        .map(str::to_owned)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_plain_content_type_is_the_essence_the_mime_parser_gives() {
        // Every text of up to three characters from an alphabet of what a type may and
        // may not hold, and usual ones: when the byte path takes one, the parser reads it
        // and gives it back as its essence.
        let alphabet = [
            "a", "Z", "7", "/", "+", "-", ".", ";", " ", "=", "\"", "é", "*",
        ];
        let mut texts: Vec<String> = vec![String::new()];
        for len in 1..=3 {
            let shorter: Vec<String> = texts
                .iter()
                .filter(|t| t.chars().count() == len - 1)
                .cloned()
                .collect();
            for t in shorter {
                texts.extend(alphabet.iter().map(|c| format!("{t}{c}")));
            }
        }
        let usual = [
            "application/pdf",
            "image/svg+xml",
            "application/vnd.ms-excel",
            "text/plain",
            "Text/Plain",
            "text/plain; charset=utf-8",
            " text/plain",
            "message/rfc822",
            "a/b/c",
            "x-/y.z!#$&^_",
        ];
        let mut taken = 0;
        for ct in texts.iter().map(String::as_str).chain(usual) {
            let parsed = ct.trim().parse::<mime_guess::mime::Mime>().ok();
            if let Some(plain) = super::plain_essence(ct) {
                taken += 1;
                assert_eq!(
                    parsed.as_ref().map(|m| m.essence_str()),
                    Some(plain),
                    "{ct:?}"
                );
            }
            let meta = super::UploadMeta {
                part_content_type: Some(ct.to_string()),
                file_name: Some("x.png".into()),
                ..Default::default()
            };
            let want =
                parsed.map_or_else(|| "image/png".to_string(), |m| m.essence_str().to_string());
            assert_eq!(meta.content_type(), want, "{ct:?}");
        }
        assert!(taken > 25, "{taken}");
    }

    #[test]
    fn a_person_written_by_hand_is_what_serde_writes() {
        let awkward = crate::codec::json_out::AWKWARD;
        for (i, text) in awkward.iter().enumerate() {
            // Each field present or absent by its own bit of `n`.
            for n in [0_u32, 0xff, 0x55, 0xaa, 1 << i] {
                let opt = |bit: u32| (n & (1 << bit) != 0).then(|| text.to_string());
                let p = Person {
                    id: opt(0),
                    first_name: opt(1),
                    last_name: opt(2),
                    username: opt(3),
                    full_name: opt(4),
                    email: opt(5),
                    avatar_url: opt(6),
                    is_service_account: opt(7).map(|_| i % 2 == 0),
                };
                assert_eq!(p.to_json(), serde_json::to_string(&p).unwrap(), "{p:?}");
            }
        }
    }

    #[test]
    fn guessed_types_are_the_parsed_essence() {
        let exts = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/mime-extensions.txt"
        ))
        .unwrap();
        let mut names: Vec<String> = exts
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|e| format!("file.{e}"))
            .collect();
        assert!(names.len() > 1000);
        names.extend(
            [
                "A.PNG",
                "x.PsC1",
                "noext",
                ".bashrc",
                "a.tar.gz",
                "dot.",
                "",
                "a.unknownext",
            ]
            .map(String::from),
        );
        for name in names {
            let parsed = mime_guess::from_path(&name)
                .first()
                .map(|m| m.essence_str().to_string())
                .unwrap_or_else(|| "application/octet-stream".to_string());
            assert_eq!(super::guess_type(&name), parsed, "{name}");
        }
        assert_eq!(super::guess_type("x.psc1"), "application/powershell");
    }

    use super::*;

    #[test]
    fn file_names_are_made_safe() {
        assert_eq!(sanitize_file_name("../../etc/passwd").unwrap(), "passwd");
        assert_eq!(sanitize_file_name("C:\\x\\y.txt").unwrap(), "y.txt");
        assert_eq!(
            sanitize_file_name("Prüfbericht ü 2026.pdf").unwrap(),
            "Prüfbericht ü 2026.pdf"
        );
        assert!(sanitize_file_name("a\r\nb").is_err());
        assert!(sanitize_file_name("a\0b").is_err());
        assert!(sanitize_file_name("dir/").is_err());
        assert!(sanitize_file_name("..").is_err());
        assert!(sanitize_file_name(&"x".repeat(256)).is_err());
    }

    #[test]
    fn ids_render_as_numbers_only_when_all_digits() {
        assert_eq!(id_json("42"), Value::from(42u64));
        assert_eq!(id_json("0"), Value::from(0u64));
        assert_eq!(id_json("042"), Value::from("042"));
        assert_eq!(id_json("a1"), Value::from("a1"));
        assert_eq!(
            id_json("99999999999999999999999"),
            Value::from("99999999999999999999999")
        );
    }

    #[test]
    fn ext_split() {
        assert_eq!(split_ext("a.tar.gz"), ("a.tar", Some("gz")));
        assert_eq!(split_ext(".bashrc"), (".bashrc", None));
        assert_eq!(split_ext("noext"), ("noext", None));
        assert_eq!(split_ext("trailing."), ("trailing.", None));
    }

    #[test]
    fn duplicate_fields_are_refused_but_tags_repeat() {
        let mut m = UploadMeta::default();
        m.apply(Field::Tag("a".into())).unwrap();
        m.apply(Field::Tag("b".into())).unwrap();
        m.apply(Field::Comment("c".into())).unwrap();
        assert!(m.apply(Field::Comment("d".into())).is_err());
        assert_eq!(m.tags, ["a", "b"]);
    }

    #[test]
    fn an_extension_is_the_one_path_finds() {
        // Every name of up to four characters from an alphabet of what matters (dots,
        // slashes, letters), and usual ones.
        let alphabet = [".", "/", "a", "B", "é", " "];
        let mut names: Vec<String> = vec![String::new()];
        let mut last = names.clone();
        for _ in 0..4 {
            last = last
                .iter()
                .flat_map(|n| alphabet.iter().map(move |c| format!("{n}{c}")))
                .collect();
            names.extend(last.iter().cloned());
        }
        names.extend(
            [
                "report.pdf",
                "archive.tar.gz",
                ".bashrc",
                "..",
                ".",
                "x.",
                "..pdf",
                "dir/x.png",
                "x.png/",
                "x.png/.",
                "a/..",
            ]
            .map(String::from),
        );
        for n in &names {
            let by_path = std::path::Path::new(n)
                .extension()
                .and_then(std::ffi::OsStr::to_str);
            assert_eq!(super::extension(n), by_path, "{n:?}");
        }
    }

    #[test]
    fn rfc3339_is_written_as_humantime_writes_it() {
        use std::time::{Duration, UNIX_EPOCH};
        // Leap days, century and 400-year boundaries, month ends, the first and last
        // instants, and a spread of times between, each with and without milliseconds.
        let mut secs: Vec<u64> = vec![
            0,
            59,
            86_399,
            951_782_400,   // 2000-02-29
            951_868_799,   // 2000-02-29T23:59:59
            4_107_542_400, // 2100-03-01
            1_709_164_800, // 2024-02-29
            1_735_689_599, // 2024-12-31T23:59:59
            253_402_300_799,
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            secs.push(x % 253_402_300_800);
        }
        for (i, s) in secs.into_iter().enumerate() {
            let nanos = [0, 999_999_999, 1_000_000, 999_999][i % 4] as u32 + (i as u32 % 997);
            let t = UNIX_EPOCH + Duration::new(s, nanos.min(999_999_999));
            assert_eq!(
                super::rfc3339(t, true),
                humantime::format_rfc3339_millis(t).to_string(),
                "{s}.{nanos}"
            );
            assert_eq!(
                super::rfc3339(t, false),
                humantime::format_rfc3339_seconds(t).to_string(),
                "{s}"
            );
        }
        // Outside humantime's range: clamped rather than a panic.
        let before = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(super::rfc3339(before, true), "1970-01-01T00:00:00.000Z");
        let after = UNIX_EPOCH + Duration::from_secs(253_402_300_800 + 86_400);
        assert_eq!(super::rfc3339(after, false), "9999-12-31T23:59:59Z");
        assert_eq!(super::rfc3339(after, true), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn content_type_from_part_or_extension() {
        let mut m = UploadMeta {
            file_name: Some("x.pdf".into()),
            ..Default::default()
        };
        assert_eq!(m.content_type(), "application/pdf");
        m.part_content_type = Some("text/plain; charset=utf-8".into());
        assert_eq!(m.content_type(), "text/plain");
        m.part_content_type = Some("not a type".into());
        assert_eq!(m.content_type(), "application/pdf");
    }
}
