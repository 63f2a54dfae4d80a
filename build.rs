//! Tells the integration tests where the bundled SQLite's headers are (`sqlite3ext.h`), so
//! that `tests/it/extensions.rs` can compile a loadable extension against the very SQLite
//! this binary links, without a system package.

fn main() {
    // Set by libsqlite3-sys (`links = "sqlite3"`) for the crates that depend on it directly.
    if let Ok(dir) = std::env::var("DEP_SQLITE3_INCLUDE") {
        println!("cargo:rustc-env=SQLRAFT_SQLITE3_INCLUDE={dir}");
    }
    println!("cargo:rerun-if-env-changed=DEP_SQLITE3_INCLUDE");
    println!("cargo:rerun-if-changed=build.rs");
}
