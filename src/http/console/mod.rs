//! The web console: a page served by the node itself at `/console/` (rqlite 10's place for it).
//!
//! Owns: the console's assets, embedded in the binary at build time (plain HTML, CSS and a
//! JavaScript module, no build step, nothing fetched from elsewhere, so it works offline and
//! always matches the node that serves it), and how they are served: the `/` and `/console`
//! redirects, content types, caching by ETag, and a Content-Security-Policy that lets the page
//! talk only to this node.
//! Does not: check the `ui` permission (the router does, as for every endpoint) or answer any
//! data request itself: the page calls the public API (`/db/request`, `/db/query`, `/nodes`,
//! `/status`, `/db/backup`, `/db/load`) like any other client, with the same permissions.
//!
//! Why no framework: see `docs/design/console.md`.

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;

use super::error::{self, ApiError};
use super::Call;

/// Where the console lives.
pub const PATH: &str = "/console/";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
    /// A strong validator computed at build time, so a browser revalidates cheaply and never
    /// keeps a page older than the binary serving it.
    etag: &'static str,
}

/// FNV-1a (64-bit), usable in a `const`: an ETag only has to change when the bytes do.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

/// `"` + 16 hex digits + `"`, built at compile time.
const fn etag_bytes(bytes: &[u8]) -> [u8; 18] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let h = fnv1a(bytes);
    let mut out = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = HEX[((h >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

macro_rules! asset {
    ($name:literal, $ct:literal) => {{
        const BYTES: &[u8] = include_bytes!(concat!("assets/", $name));
        const TAG: [u8; 18] = etag_bytes(BYTES);
        Asset {
            name: $name,
            content_type: $ct,
            bytes: BYTES,
            // Hex digits and quotes only: always valid UTF-8.
            etag: match std::str::from_utf8(&TAG) {
                Ok(s) => s,
                Err(_) => "\"0\"",
            },
        }
    }};
}

/// Every file the console has; `/console/` is `index.html`.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("console.css", "text/css; charset=utf-8"),
    asset!("console.js", "text/javascript; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
];

/// The total size of the embedded assets, in bytes (documented in the README).
pub fn assets_size() -> usize {
    ASSETS.iter().map(|a| a.bytes.len()).sum()
}

/// The page may load its own files, call this node's API, and show `data:` images (none
/// today); no inline script, no other origin, no framing (clickjacking), no form posts.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A redirect as Go's `http.Redirect` writes it for a GET (rqlite 10 answers `/` with a 302
/// and `/console` with a 301, both to `/console/`).
pub fn redirect(status: StatusCode) -> Response {
    let reason = status.canonical_reason().unwrap_or("Found");
    let mut r = error::with_body(
        status,
        "text/html; charset=utf-8",
        format!("<a href=\"{PATH}\">{reason}</a>.\n\n"),
    );
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(PATH));
    r
}

/// `GET|HEAD /console/<file>`.
pub fn serve(call: &Call) -> Result<Response, ApiError> {
    super::require_method(call, &[Method::GET, Method::HEAD], false)?;
    let name = call.path.strip_prefix(PATH).unwrap_or_default();
    let name = if name.is_empty() { "index.html" } else { name };
    let asset = ASSETS
        .iter()
        .find(|a| a.name == name)
        .ok_or(ApiError::NotFound)?;
    let fresh = call
        .headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == asset.etag));
    let mut r = if fresh {
        error::empty(StatusCode::NOT_MODIFIED, None)
    } else {
        // hyper sends no body for HEAD but keeps the length.
        error::with_body(StatusCode::OK, asset.content_type, Body::from(asset.bytes))
    };
    let h = r.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    // Revalidate every time: a node upgraded in place serves its own console at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_quoted_hex_and_differ_per_file() {
        let tags: Vec<&str> = ASSETS.iter().map(|a| a.etag).collect();
        for t in &tags {
            assert_eq!(t.len(), 18, "{t}");
            assert!(t.starts_with('"') && t.ends_with('"'), "{t}");
            assert!(t[1..17].bytes().all(|b| b.is_ascii_hexdigit()), "{t}");
        }
        let mut unique = tags.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), tags.len());
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    /// The page's markup never runs inline script or style (the CSP would block it), and
    /// every file it names is one we serve.
    #[test]
    fn index_references_only_embedded_files_and_no_inline_code() {
        let index = std::str::from_utf8(ASSETS[0].bytes).unwrap_or_default();
        assert!(!index.contains("<script>"), "inline script");
        assert!(!index.contains("style="), "inline style");
        assert!(!index.contains("<style"), "inline style sheet");
        for attr in ["src=\"", "href=\""] {
            for part in index.split(attr).skip(1) {
                let target = part.split('"').next().unwrap_or_default();
                if target.starts_with('/') || target.starts_with('#') {
                    continue; // the API, or an anchor
                }
                assert!(
                    ASSETS.iter().any(|a| a.name == target),
                    "index.html names {target:?}, which is not embedded"
                );
            }
        }
    }
}
