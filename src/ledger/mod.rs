//! The ledger: casegate's id and record store (SPEC section 7.3).
//!
//! Where an upstream's id does not fit the client's dialect form, casegate gives the file a
//! front id of that form and remembers the pair here, with the file's metadata some
//! upstreams never return. This part holds the record type, the `ledger` key's URL and the
//! `casegate ledger` output.

mod render;
mod url;

pub use render::{render_json, render_table};
pub use url::LedgerUrl;

/// One attachment casegate attached or listed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Row {
    pub route: String,
    pub front_id: String,
    pub front_case: Option<String>,
    pub back_case: Option<String>,
    /// The upstream's id for the file (Kibana: the file id).
    pub back_id: String,
    /// Kibana: the id of the case comment holding the file.
    pub back_comment_id: Option<String>,
    pub name: Option<String>,
    pub content_type: Option<String>,
    pub size: Option<u64>,
    /// RFC 3339.
    pub created_at: Option<String>,
    /// Opaque JSON text describing who uploaded it.
    pub uploader: Option<String>,
    /// A UUID the ledger gives the row when it is first inserted if none is given (Tines
    /// `info.guid`).
    pub guid: Option<String>,
    pub md5: Option<String>,
    pub sha256: Option<String>,
}
