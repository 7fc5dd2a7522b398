//! TEMPORARY in-memory stand-in with the ledger's API (the SQLite store replaces it).
#![allow(missing_docs)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;

use crate::secret::Secret;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerUrl {
    Sqlite(PathBuf),
    SqliteMemory,
    Postgres(Secret),
}

impl LedgerUrl {
    pub fn parse(s: &str, base_dir: &Path) -> Result<LedgerUrl, String> {
        if s == "sqlite::memory:" {
            return Ok(LedgerUrl::SqliteMemory);
        }
        if let Some(p) = s.strip_prefix("sqlite://") {
            if p.is_empty() {
                return Err("no path".into());
            }
            return Ok(LedgerUrl::Sqlite(base_dir.join(p)));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(LedgerUrl::Postgres(Secret::new(s)));
        }
        Err(format!("{s:?} is not a sqlite:// or postgres:// URL"))
    }

    pub fn describe(&self) -> String {
        match self {
            LedgerUrl::Sqlite(p) => p.display().to_string(),
            LedgerUrl::SqliteMemory => ":memory:".into(),
            LedgerUrl::Postgres(_) => "postgres://***".into(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Row {
    pub route: String,
    pub front_id: String,
    pub front_case: Option<String>,
    pub back_case: Option<String>,
    pub back_id: String,
    pub back_comment_id: Option<String>,
    pub name: Option<String>,
    pub content_type: Option<String>,
    pub size: Option<u64>,
    pub created_at: Option<String>,
    pub uploader: Option<String>,
    pub guid: Option<String>,
    pub md5: Option<String>,
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdForm {
    Integer,
    Uuid,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum LedgerError {
    #[error("the ledger is unavailable: {0}")]
    Unavailable(String),
}

pub trait Store: Send + Sync + 'static {}

#[derive(Default)]
struct Mem {
    rows: Vec<Row>,
    seq: HashMap<String, u64>,
}

#[derive(Clone, Default)]
pub struct Ledger {
    mem: Arc<Mutex<Mem>>,
    errors: Arc<AtomicU64>,
}

impl Ledger {
    pub async fn open(_url: &LedgerUrl) -> Result<Ledger, String> {
        Ok(Ledger::default())
    }

    fn m(&self) -> std::sync::MutexGuard<'_, Mem> {
        self.mem.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn healthy(&self) -> bool {
        true
    }

    pub fn check(&self) -> Result<(), LedgerError> {
        Ok(())
    }

    pub async fn reserve(&self, route: &str, form: IdForm) -> Result<String, LedgerError> {
        Ok(match form {
            IdForm::Uuid => uuid::Uuid::new_v4().to_string(),
            IdForm::Integer => {
                let mut m = self.m();
                let n = m.seq.entry(route.to_string()).or_insert(0);
                *n += 1;
                n.to_string()
            }
        })
    }

    pub async fn record(&self, rows: Vec<Row>) -> Result<Vec<Row>, LedgerError> {
        let mut m = self.m();
        let mut out = Vec::new();
        for mut r in rows {
            if let Some(held) = m
                .rows
                .iter_mut()
                .find(|h| h.route == r.route && h.back_id == r.back_id)
            {
                macro_rules! fill { ($($f:ident),*) => { $( if held.$f.is_none() { held.$f = r.$f.clone(); } )* } }
                fill!(
                    front_case,
                    back_case,
                    back_comment_id,
                    name,
                    content_type,
                    size,
                    created_at,
                    uploader,
                    guid,
                    md5,
                    sha256
                );
                out.push(held.clone());
            } else {
                if r.guid.is_none() {
                    r.guid = Some(uuid::Uuid::new_v4().to_string());
                }
                m.rows.push(r.clone());
                out.push(r);
            }
        }
        Ok(out)
    }

    pub async fn record_confirmed(&self, row: Row) -> Row {
        match self.record(vec![row.clone()]).await {
            Ok(mut v) => v.pop().unwrap_or(row),
            Err(_) => row,
        }
    }

    pub async fn by_front(&self, route: &str, front_id: &str) -> Result<Option<Row>, LedgerError> {
        Ok(self
            .m()
            .rows
            .iter()
            .find(|r| r.route == route && r.front_id == front_id)
            .cloned())
    }

    pub async fn by_back(
        &self,
        route: &str,
        back_ids: Vec<String>,
    ) -> Result<Vec<Row>, LedgerError> {
        Ok(self
            .m()
            .rows
            .iter()
            .filter(|r| r.route == route && back_ids.contains(&r.back_id))
            .cloned()
            .collect())
    }

    pub async fn list_case(
        &self,
        route: &str,
        front_case: &str,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<Row>, u64), LedgerError> {
        let m = self.m();
        let all: Vec<&Row> = m
            .rows
            .iter()
            .filter(|r| r.route == route && r.front_case.as_deref() == Some(front_case))
            .collect();
        let total = all.len() as u64;
        Ok((
            all.into_iter()
                .skip(offset as usize)
                .take(limit as usize)
                .cloned()
                .collect(),
            total,
        ))
    }

    pub async fn set_hashes(
        &self,
        route: &str,
        front_id: &str,
        md5: &str,
        sha256: &str,
    ) -> Result<(), LedgerError> {
        let mut m = self.m();
        if let Some(r) = m
            .rows
            .iter_mut()
            .find(|r| r.route == route && r.front_id == front_id)
        {
            r.md5 = Some(md5.into());
            r.sha256 = Some(sha256.into());
        }
        Ok(())
    }

    pub async fn remove(&self, route: &str, front_id: &str) -> Result<bool, LedgerError> {
        let mut m = self.m();
        let before = m.rows.len();
        m.rows
            .retain(|r| !(r.route == route && r.front_id == front_id));
        Ok(m.rows.len() < before)
    }

    pub async fn dump(&self, route: Option<&str>) -> Result<Vec<Row>, LedgerError> {
        Ok(self
            .m()
            .rows
            .iter()
            .filter(|r| route.is_none_or(|x| r.route == x))
            .cloned()
            .collect())
    }

    pub fn pending(&self) -> usize {
        0
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

pub fn render_table(rows: &[Row]) -> String {
    format!("{rows:?}")
}

pub fn render_json(rows: &[Row]) -> String {
    serde_json::to_string_pretty(rows).unwrap_or_default()
}

#[allow(dead_code)]
fn _unused(_: BoxFuture<'_, ()>) {}
