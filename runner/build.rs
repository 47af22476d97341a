//! Turns the one list of backends, `backends.toml` beside this file, into the
//! `each_backend!` macro the runner, its benchmarks and its example include: adding a backend is
//! one entry in that file (docs/porting-guide.md, "Register the backend").

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    // Read at run time, not with `env!`: a build script compiled in one checkout is reused by
    // another that shares the target directory (a worktree), and would read the first one's list.
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let list = Path::new(&dir).join("backends.toml");
    println!("cargo::rerun-if-changed={}", list.display());
    let text = std::fs::read_to_string(&list).expect("runner/backends.toml");
    let fixtures = values(&text, "fixture");
    let names = values(&text, "name");
    assert!(!fixtures.is_empty(), "backends.toml lists no `fixture`");
    assert_eq!(
        fixtures.len(),
        names.len(),
        "backends.toml: one `name` per `fixture`"
    );
    let mut arms = String::new();
    for f in &fixtures {
        writeln!(arms, "            {{ type $F = {f}; $e }},").unwrap();
    }
    let out = format!(
        "/// Evaluates `$e` once per backend of `backends.toml`, in its order, with `$F` naming that\n\
         /// backend's `Fixture` type; the results form an array.\n\
         #[allow(unused_macros)]\n\
         macro_rules! each_backend {{\n    \
             ($F:ident => $e:expr) => {{\n        [\n{arms}        ]\n    }};\n}}\n\n\
         /// The `name` of each backend of `backends.toml`, in its order.\n\
         #[allow(dead_code)]\n\
         const LISTED_BACKENDS: &[&str] = &{names:?};\n"
    );
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("backends.rs");
    std::fs::write(dest, out).unwrap();
}

/// The string values of every `key = "value"` line, in order.
fn values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(key))
        .filter_map(|rest| rest.trim_start().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"'))
        .collect()
}
