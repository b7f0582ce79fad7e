//! The one pagination convention of every list: `?limit=` (1 to 100, default 20) and
//! `?cursor=` (opaque, from the previous page), answered `{"items": [...], "next_cursor": ...}`
//! with `next_cursor` null on the last page.
//!
//! Pages are keyset pages on the row id. Every id is a UUIDv7 (time-ordered and unique), so
//! "the rows after this id, in id order" is one index range scan whatever the depth: page
//! 1,000 costs what page 1 costs, and rows inserted while a client walks the list never make
//! it see a row twice or skip one that existed when it started.
//!
//! Repos write the cursor as `id > coalesce($n, <the nil uuid>)` (or `<` the max uuid for
//! newest-first lists): a plain range that the index serves under the generic plan of a
//! prepared statement. `($n is null or id > $n)` would not be; measured, it turned a deep
//! feed page into a scan of other tenants' rows.
//!
//! The cursor is the last id of the page with a check value, hex-encoded: a client cannot
//! read meaning into it, and a cursor that was edited, cut or garbled is refused (422 naming
//! `cursor`) instead of silently starting somewhere else. The check is unkeyed (a client
//! could build a well-formed cursor), which grants nothing: every list query
//! is still scoped by the caller and the organization.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::error::ApiError;

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

/// Bytes of the check value: enough to refuse any edit a client might try.
const CHECK_BYTES: usize = 8;
/// Domain separation of the check value, and its version.
const CHECK_CONTEXT: &[u8] = b"scaleout/cursor/v1";

/// `?limit=&cursor=` of a plain list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Page size, 1 to 100 (default 20). Read as text, so a value that is not a number is a
    /// 422 naming `limit` like one out of range.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page; absent for the first page.
    #[param(pattern = "^[0-9a-f]{48}$")]
    pub cursor: Option<String>,
}

impl PageQuery {
    pub fn page(&self) -> Result<Page, ApiError> {
        Page::parse(self.limit.as_deref(), self.cursor.as_deref())
    }
}

/// A validated page request: how many rows, after which id.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: i64,
    pub after: Option<Uuid>,
}

impl Page {
    pub fn parse(limit: Option<&str>, cursor: Option<&str>) -> Result<Self, ApiError> {
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(text) => text
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid("limit", "must be a whole number from 1 to 100")
                })?,
        };
        let after = cursor
            .map(|c| {
                decode(c).ok_or_else(|| {
                    ApiError::invalid("cursor", "is not a cursor from a previous page")
                })
            })
            .transpose()?;
        Ok(Self { limit, after })
    }

    /// What to ask the repo for: one more row than the page, whose presence says whether
    /// there is a next page (no count query).
    pub fn fetch(&self) -> i64 {
        self.limit + 1
    }

    /// The page out of the `fetch()` rows read.
    pub fn finish<T>(&self, mut rows: Vec<T>, id: impl Fn(&T) -> Uuid) -> (Vec<T>, Option<String>) {
        let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
        if rows.len() > limit {
            rows.truncate(limit);
            let next = rows.last().map(|r| encode(id(r)));
            (rows, next)
        } else {
            (rows, None)
        }
    }
}

/// A query string that cannot be read as the list's parameters (an unknown or repeated one):
/// 422 naming `query`, like any other parameter the list refuses (the parameters themselves
/// are read as text and checked one by one, so a bad value is a 422 naming it). An unknown
/// parameter is refused rather than ignored: `?before=` from an older client must not
/// silently answer the first page.
pub fn query_rejection(e: &axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::invalid("query", &e.body_text())
}

fn check(id: &Uuid) -> [u8; CHECK_BYTES] {
    let digest = Sha256::new()
        .chain_update(CHECK_CONTEXT)
        .chain_update(id.as_bytes())
        .finalize();
    let mut out = [0; CHECK_BYTES];
    out.copy_from_slice(&digest[..CHECK_BYTES]);
    out
}

pub fn encode(id: Uuid) -> String {
    let mut bytes = Vec::with_capacity(16 + CHECK_BYTES);
    bytes.extend_from_slice(id.as_bytes());
    bytes.extend_from_slice(&check(&id));
    hex::encode(bytes)
}

pub fn decode(cursor: &str) -> Option<Uuid> {
    // Lower-case only: one spelling per cursor.
    if cursor.len() != 2 * (16 + CHECK_BYTES) || cursor.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let bytes = hex::decode(cursor).ok()?;
    let id = Uuid::from_slice(&bytes[..16]).ok()?;
    (bytes[16..] == check(&id)).then_some(id)
}

/// A page type per item type, for the OpenAPI document (one concrete schema each).
#[macro_export]
macro_rules! page_of {
    ($name:ident, $item:ty, $about:literal) => {
        #[doc = $about]
        #[derive(Debug, serde::Serialize, utoipa::ToSchema)]
        pub struct $name {
            pub items: Vec<$item>,
            /// Pass as `cursor` for the next page; null on the last page.
            pub next_cursor: Option<String>,
        }

        impl $name {
            pub fn new(items: Vec<$item>, next_cursor: Option<String>) -> Self {
                Self { items, next_cursor }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_edits() {
        let id = Uuid::now_v7();
        let c = encode(id);
        assert_eq!(decode(&c), Some(id));
        // Every single-character edit is refused.
        for i in 0..c.len() {
            let mut edited = c.clone().into_bytes();
            edited[i] = if edited[i] == b'0' { b'1' } else { b'0' };
            let edited = String::from_utf8(edited).expect("ascii");
            assert_eq!(decode(&edited), None, "{edited}");
        }
        for bad in [
            "",
            "x",
            &c[..46],
            &format!("{c}00"),
            &c.to_uppercase(),
            &id.to_string(),
        ] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(Page::parse(None, None).map(|p| p.limit).ok(), Some(20));
        assert_eq!(
            Page::parse(Some("100"), None).map(|p| p.limit).ok(),
            Some(100)
        );
        for bad in ["0", "-1", "101", "ten", "", "1.5"] {
            assert!(Page::parse(Some(bad), None).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_page_says_whether_more_follow() {
        let page = Page::parse(Some("2"), None).expect("valid");
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let (items, next) = page.finish(ids.clone(), |u| *u);
        assert_eq!(items, ids[..2]);
        assert_eq!(next.as_deref().and_then(decode), Some(ids[1]));
        let (items, next) = page.finish(ids[..2].to_vec(), |u| *u);
        assert_eq!((items.len(), next), (2, None));
    }
}
