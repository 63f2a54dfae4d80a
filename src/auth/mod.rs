//! Authentication and permissions (`-auth`), as rqlite does them.
//!
//! Owns: the `-auth` file format (a JSON array of `{"username", "password", "perms"}`), the
//! permission names, parsing `Authorization: Basic` headers, and the one check every endpoint
//! and every cluster-service request makes ([`AuthStore::check`]).
//! Does not: pick HTTP status codes (`http/error.rs`), read the file on its own (`node.rs`
//! calls [`AuthStore::load`] at start), or authenticate Raft RPCs (node TLS protects those).
//!
//! # Check order (rqlite's)
//!
//! 1. The user `"*"` (everyone, anonymous requests included) has the permission, or `all`:
//!    allow.
//! 2. Otherwise the request must carry a username and password of a user in the file whose
//!    password matches and who has the permission, or `all`.
//!
//! # Passwords
//!
//! Plaintext, compared in constant time; or a bcrypt hash (`$2a$`, `$2b$`, `$2y$`), which
//! rqlite 7 accepted and rqlite 8 dropped. As in rqlite 7, a password matches if it equals
//! the file's string *or* verifies against it as a bcrypt hash. So a node whose `-join-as`
//! user has a hashed password sends the hash itself, which other nodes accept when their file
//! holds the same hash.
//!
//! bcrypt is slow by design and every request is checked, so a successful bcrypt
//! verification is remembered per user for [`BCRYPT_CACHE_TTL`] (the password that verified,
//! in memory only, compared in constant time). Failures are never cached: each wrong
//! password costs a full bcrypt round.
//!
//! No password, hash or Authorization header is ever logged: [`Credentials`]'s `Debug`
//! redacts the password.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// How long a successful bcrypt verification is remembered.
pub const BCRYPT_CACHE_TTL: Duration = Duration::from_secs(60);

/// The username that stands for everyone, anonymous requests included.
pub const EVERYONE: &str = "*";

/// A permission, as named in the `-auth` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Perm {
    All,
    Execute,
    Query,
    Load,
    Backup,
    Status,
    Ready,
    Join,
    /// Join as a non-voter (read-only node); `join-read-replica` is an alias.
    JoinReadOnly,
    Remove,
    Snapshot,
    LeaderOps,
    Ui,
}

impl Perm {
    pub const EVERY: [Perm; 13] = [
        Perm::All,
        Perm::Execute,
        Perm::Query,
        Perm::Load,
        Perm::Backup,
        Perm::Status,
        Perm::Ready,
        Perm::Join,
        Perm::JoinReadOnly,
        Perm::Remove,
        Perm::Snapshot,
        Perm::LeaderOps,
        Perm::Ui,
    ];

    /// The name in the `-auth` file.
    pub fn as_str(self) -> &'static str {
        match self {
            Perm::All => "all",
            Perm::Execute => "execute",
            Perm::Query => "query",
            Perm::Load => "load",
            Perm::Backup => "backup",
            Perm::Status => "status",
            Perm::Ready => "ready",
            Perm::Join => "join",
            Perm::JoinReadOnly => "join-read-only",
            Perm::Remove => "remove",
            Perm::Snapshot => "snapshot",
            Perm::LeaderOps => "leader-ops",
            Perm::Ui => "ui",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Perm {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        if s == "join-read-replica" {
            return Ok(Perm::JoinReadOnly);
        }
        Perm::EVERY.into_iter().find(|p| p.as_str() == s).ok_or(())
    }
}

/// A set of permissions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Perms(u16);

impl Perms {
    /// Has `perm`, or `all`.
    fn allows(self, perm: Perm) -> bool {
        self.0 & (perm.bit() | Perm::All.bit()) != 0
    }
}

/// Basic-auth credentials: a client's, forwarded with its request, or a node's (`-join-as`).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// Parses an `Authorization` header value. Anything but well-formed `Basic` credentials
    /// (bad base64, no `:`, not UTF-8) is "no credentials".
    pub fn from_basic_header(value: &str) -> Option<Credentials> {
        let (scheme, rest) = value.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (username, password) = text.split_once(':')?;
        Some(Credentials {
            username: username.to_string(),
            password: password.to_string(),
        })
    }

    /// The `Authorization` header value that carries these credentials.
    pub fn to_basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// Why an `-auth` file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read auth file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid auth file {path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
}

/// One entry of the file, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    perms: Vec<String>,
}

struct User {
    password: String,
    /// The password looks like a bcrypt hash: it may also be verified as one.
    bcrypt: bool,
    perms: Perms,
}

/// The users and permissions of one `-auth` file.
pub struct AuthStore {
    users: HashMap<String, User>,
    /// The permissions of `"*"`.
    everyone: Perms,
    /// user -> (the password that last passed bcrypt verification, when).
    verified: Mutex<HashMap<String, (String, Instant)>>,
}

impl fmt::Debug for AuthStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut users: Vec<&String> = self.users.keys().collect();
        users.sort();
        f.debug_struct("AuthStore").field("users", &users).finish()
    }
}

fn is_bcrypt(s: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"].iter().any(|p| s.starts_with(p))
}

impl AuthStore {
    /// Reads and validates an `-auth` file.
    pub fn load(path: &Path) -> Result<AuthStore, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|msg| AuthError::Invalid {
            path: path.to_path_buf(),
            msg,
        })
    }

    /// Parses the file's contents; the error says what is wrong (never a password).
    pub fn parse(text: &str) -> Result<AuthStore, String> {
        // serde_json's own message may quote a value (a password): only its kind and place.
        let entries: Vec<Entry> = serde_json::from_str(text).map_err(|e| {
            format!(
                "expected a JSON array of {{\"username\", \"password\", \"perms\"}} \
                 ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            )
        })?;
        let mut users = HashMap::new();
        let mut everyone = Perms::default();
        for (i, e) in entries.into_iter().enumerate() {
            if e.username.is_empty() {
                return Err(format!("entry {i}: empty username"));
            }
            let mut perms = Perms::default();
            for name in &e.perms {
                let perm = Perm::from_str(name).map_err(|()| {
                    let valid: Vec<&str> = Perm::EVERY.iter().map(|p| p.as_str()).collect();
                    format!(
                        "user {:?}: unknown permission {:?} (valid: {}, join-read-replica)",
                        e.username,
                        name,
                        valid.join(", ")
                    )
                })?;
                perms.0 |= perm.bit();
            }
            if e.username == EVERYONE {
                everyone.0 |= perms.0;
                continue;
            }
            if users.contains_key(&e.username) {
                return Err(format!("user {:?} appears more than once", e.username));
            }
            let bcrypt = is_bcrypt(&e.password);
            users.insert(
                e.username,
                User {
                    password: e.password,
                    bcrypt,
                    perms,
                },
            );
        }
        Ok(AuthStore {
            users,
            everyone,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// May a request carrying `creds` (or none) do what needs `perm`? rqlite's check order:
    /// `"*"` first, then the named user (password and permission).
    pub fn check(&self, creds: Option<&Credentials>, perm: Perm) -> bool {
        if self.everyone.allows(perm) {
            return true;
        }
        let Some(c) = creds else {
            return false;
        };
        match self.users.get(&c.username) {
            Some(u) if u.perms.allows(perm) => self.password_ok(&c.username, u, &c.password),
            _ => false,
        }
    }

    /// [`AuthStore::check_all`] off the async runtime: a bcrypt verification takes tens of
    /// milliseconds and verifications are serialised, so a flood of wrong passwords must not
    /// occupy the runtime's worker threads (it would stall every other request).
    pub async fn allowed(
        self: &Arc<Self>,
        creds: Option<Credentials>,
        perms: &'static [Perm],
    ) -> bool {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.check_all(creds.as_ref(), perms))
            .await
            .unwrap_or(false)
    }

    /// Every one of `perms` (e.g. `/db/request`: execute and query).
    pub fn check_all(&self, creds: Option<&Credentials>, perms: &[Perm]) -> bool {
        perms.iter().all(|p| self.check(creds, *p))
    }

    /// The credentials of `user` as the file holds them (`-join-as`).
    pub fn creds_for(&self, user: &str) -> Option<Credentials> {
        self.users.get(user).map(|u| Credentials {
            username: user.to_string(),
            password: u.password.clone(),
        })
    }

    fn password_ok(&self, name: &str, u: &User, given: &str) -> bool {
        if bool::from(u.password.as_bytes().ct_eq(given.as_bytes())) {
            return true;
        }
        if !u.bcrypt {
            return false;
        }
        let mut cache = self
            .verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((pw, at)) = cache.get(name) {
            if at.elapsed() < BCRYPT_CACHE_TTL && bool::from(pw.as_bytes().ct_eq(given.as_bytes()))
            {
                return true;
            }
        }
        // Not holding the lock during bcrypt would let two requests verify at once; holding
        // it serialises verifications, which also bounds the CPU a flood of guesses takes.
        let ok = bcrypt::verify(given, &u.password).unwrap_or(false);
        if ok {
            cache.insert(name.to_string(), (given.to_string(), Instant::now()));
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(u: &str, p: &str) -> Credentials {
        Credentials {
            username: u.into(),
            password: p.into(),
        }
    }

    #[test]
    fn every_perm_name_round_trips_and_the_alias_parses() {
        for p in Perm::EVERY {
            assert_eq!(Perm::from_str(p.as_str()), Ok(p));
        }
        assert_eq!(Perm::from_str("join-read-replica"), Ok(Perm::JoinReadOnly));
        assert!(Perm::from_str("Execute").is_err());
    }

    #[test]
    fn unknown_permission_is_a_clear_load_error() {
        let e =
            AuthStore::parse(r#"[{"username":"a","password":"p","perms":["exec"]}]"#).unwrap_err();
        assert!(e.contains("unknown permission \"exec\""), "{e}");
        assert!(AuthStore::parse("{}").is_err());
        assert!(AuthStore::parse(r#"[{"username":"a","pass":"p"}]"#).is_err());
    }

    #[test]
    fn check_order_star_then_user_with_perm_or_all() {
        let s = AuthStore::parse(
            r#"[{"username":"*","perms":["status"]},
                {"username":"bob","password":"pw","perms":["query"]},
                {"username":"root","password":"rpw","perms":["all"]}]"#,
        )
        .unwrap();
        assert!(s.check(None, Perm::Status));
        assert!(s.check(Some(&creds("x", "y")), Perm::Status));
        assert!(!s.check(None, Perm::Query));
        assert!(s.check(Some(&creds("bob", "pw")), Perm::Query));
        assert!(!s.check(Some(&creds("bob", "pw")), Perm::Execute));
        assert!(!s.check(Some(&creds("bob", "wrong")), Perm::Query));
        assert!(s.check(Some(&creds("root", "rpw")), Perm::Remove));
        assert!(!s.check(Some(&creds("root", "")), Perm::Remove));
        assert!(s.check_all(Some(&creds("root", "rpw")), &[Perm::Execute, Perm::Query]));
        assert!(!s.check_all(Some(&creds("bob", "pw")), &[Perm::Execute, Perm::Query]));
    }

    #[test]
    fn bcrypt_hashes_verify_and_the_hash_itself_matches() {
        let hash = bcrypt::hash("secret", 4).unwrap();
        let y = hash.replacen("$2b$", "$2y$", 1);
        let s = AuthStore::parse(&format!(
            r#"[{{"username":"h","password":"{hash}","perms":["query"]}},
                {{"username":"y","password":"{y}","perms":["query"]}}]"#
        ))
        .unwrap();
        for _ in 0..2 {
            assert!(s.check(Some(&creds("h", "secret")), Perm::Query));
        }
        assert!(s.check(Some(&creds("y", "secret")), Perm::Query));
        assert!(!s.check(Some(&creds("h", "Secret")), Perm::Query));
        assert!(s.check(Some(&creds("h", &hash)), Perm::Query));
        assert_eq!(s.creds_for("h").unwrap().password, hash);
        assert!(s.creds_for("nobody").is_none());
    }

    #[test]
    fn basic_header_parsing() {
        let c = creds("user", "pa:ss");
        assert_eq!(
            Credentials::from_basic_header(&c.to_basic_header()),
            Some(c)
        );
        assert_eq!(Credentials::from_basic_header("Basic !!!"), None);
        assert_eq!(Credentials::from_basic_header("Bearer abc"), None);
        assert_eq!(Credentials::from_basic_header("Basic dXNlcg=="), None); // "user", no colon
    }

    #[test]
    fn debug_never_shows_a_password() {
        let c = creds("u", "hunter2");
        assert!(!format!("{c:?}").contains("hunter2"));
        let s = AuthStore::parse(r#"[{"username":"u","password":"hunter2"}]"#).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
