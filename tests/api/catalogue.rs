//! The audit event catalogue: packaging/audit-events.md is the rendered catalogue, and every
//! event name the code can record is in it.
//!
//! The scan reads every `.rs` file under `src/` and takes its string literals (comments left
//! out). An event name is a dotted lower-case literal (`auth.login.failed`) that is either the
//! first argument of `Event::new(` or `.event(`, or any such literal whose first part is an
//! event category: that second rule also catches names chosen in a variable or passed down
//! (`let action = if .. { "user.enabled" } else { "user.disabled" }`, `revoke_sessions(..,
//! "session.logout", ..)`). What remains out of reach, a name of a new category passed through a
//! variable, is caught by the `debug_assert!` in `audit::record` when a test records it.

use crate::helpers::{files_below, repo_root};
use gatehouse::domain::audit::catalogue;
use std::collections::BTreeSet;

#[test]
fn committed_page_matches_the_catalogue() {
    let path = repo_root().join("packaging/audit-events.md");
    let rendered = catalogue::markdown();
    if std::env::var("GATEHOUSE_UPDATE_DOCS").as_deref() == Ok("1") {
        std::fs::write(&path, &rendered).unwrap();
    }
    let committed = std::fs::read_to_string(&path).expect("packaging/audit-events.md is committed");
    assert!(
        committed == rendered,
        "packaging/audit-events.md is stale: run `GATEHOUSE_UPDATE_DOCS=1 cargo test --test api catalogue` and \
         commit it"
    );
}

/// Dotted lower-case literals under `src/` that are not events, each with the reason. A name
/// here must still occur in the code and must not be in the catalogue.
const NOT_EVENTS: &[(&str, &str)] = &[
    ("audit.write_failed", "a metrics label (`Metrics::security_event`): an audit write that failed is not audited"),
    ("audit.purging", "the meta key that marks a retention purge in progress (the delete trigger reads it)"),
    ("audit.indexed_through", "the meta key of the last record the audit indexer filed (its watermark)"),
    ("auth.api_key.rejected", "a metrics label: the refusal is audited as `auth.credential.rejected`"),
    ("auth.csrf.rejected", "a metrics label: the refusal is audited as `auth.credential.rejected`"),
    ("auth.token.rejected", "a metrics label: the refusal is audited as `auth.credential.rejected`"),
    ("auth.token.revoked", "a metrics label: the refusal is audited as `auth.credential.rejected`"),
    ("sso.exchange", "the endpoint name of the sign-in rate limit (`auth.rate_limited` records it in `endpoint`)"),
    ("sso.callback", "the endpoint name of the sign-in rate limit (`auth.rate_limited` records it in `endpoint`)"),
    ("sso.acs", "the endpoint name of the sign-in rate limit (`auth.rate_limited` records it in `endpoint`)"),
    ("sso.login", "the endpoint name of the sign-in rate limit (`auth.rate_limited` records it in `endpoint`)"),
    ("server.listn", "a misspelt configuration key in a config.rs test of unknown-key rejection"),
];

/// Last parts that make a dotted literal a file name (`key.pem`), not an event.
const FILE_EXTENSIONS: &[&str] =
    &["pem", "key", "crt", "toml", "db", "sqlite", "html", "js", "css", "svg", "json", "sql", "txt", "md", "log"];

/// A string literal of a source file, with the code just before it.
#[derive(Debug)]
struct Literal {
    line: usize,
    value: String,
    /// Up to 40 characters of code before the literal, whitespace and comments left out.
    before: String,
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The string literals of Rust source `text`, comments left out; char literals and lifetimes
/// are told apart so that `'"'` opens no string.
fn literals(text: &str) -> Vec<Literal> {
    let b = text.as_bytes();
    let (mut i, mut line, mut code, mut out) = (0, 1, String::new(), Vec::new());
    let mut push = |value: &str, line: usize, code: &str| {
        let start = code.char_indices().rev().nth(39).map_or(0, |(at, _)| at);
        out.push(Literal { line, value: value.to_string(), before: code[start..].to_string() });
    };
    while i < b.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            let (mut depth, mut j) = (0, i);
            while j < b.len() {
                if text[j..].starts_with("/*") {
                    depth += 1;
                    j += 2;
                } else if text[j..].starts_with("*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(b[j] == b'\n');
                    j += 1;
                }
            }
            i = j;
        } else if b[i] == b'r'
            && (i == 0 || !is_ident(b[i - 1]) || (b[i - 1] == b'b' && (i == 1 || !is_ident(b[i - 2]))))
            && rest[1..].trim_start_matches('#').starts_with('"')
        {
            // r"..." or r#"..."#: no escapes, ends at the quote and as many hashes.
            let hashes = rest[1..].len() - rest[1..].trim_start_matches('#').len();
            let open = 1 + hashes + 1;
            let close = format!("\"{}", "#".repeat(hashes));
            let len = rest[open..].find(&close).unwrap_or(rest.len() - open);
            let value = &rest[open..open + len];
            push(value, line, &code);
            line += value.matches('\n').count();
            i += (open + len + close.len()).min(rest.len());
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            let value = &text[i + 1..j.min(b.len())];
            push(value, line, &code);
            line += value.matches('\n').count();
            i = j + 1;
        } else if b[i] == b'\'' {
            // '\'' and '\u{..}', 'x' (any width), or a lifetime / label.
            let ch = rest[1..].chars().next().map_or(0, char::len_utf8);
            if rest[1..].starts_with('\\') {
                i += 2 + rest[3..].find('\'').map_or(rest.len() - 3, |at| at + 2);
            } else if ch > 0 && rest[1 + ch..].starts_with('\'') {
                i += 2 + ch;
            } else {
                code.push('\'');
                i += 1;
            }
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            if c == '\n' {
                line += 1;
            } else if !c.is_whitespace() {
                code.push(c);
            }
            i += c.len_utf8();
        }
    }
    out
}

/// `auth.login.failed`: dotted, lower case and underscores, two parts or more.
fn looks_like_event(s: &str) -> bool {
    s.split('.').count() >= 2
        && s.split('.').all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_lowercase() || c == b'_'))
}

/// What the scan knows besides the code: the catalogue's names and categories, and the
/// dotted literals that are known not to be events.
struct Known {
    events: BTreeSet<String>,
    categories: BTreeSet<String>,
    config_keys: BTreeSet<String>,
    not_events: BTreeSet<String>,
}

impl Known {
    fn from_code() -> Self {
        let mut config_keys = BTreeSet::new();
        let config = serde_json::to_value(gatehouse::config::Config::default()).unwrap();
        config_paths(&config, "", &mut config_keys);
        Known {
            events: catalogue::EVENTS.iter().map(|e| e.action.to_string()).collect(),
            categories: catalogue::categories().into_iter().map(str::to_string).collect(),
            config_keys,
            not_events: NOT_EVENTS.iter().map(|(name, _)| name.to_string()).collect(),
        }
    }
}

/// Every key path of the configuration, sections included (`tls`, `tls.cert_file`).
fn config_paths(value: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let serde_json::Value::Object(map) = value {
        for (k, v) in map {
            let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            config_paths(v, &path, out);
            out.insert(path);
        }
    }
}

/// The event names `files` (path, text) can record that the catalogue lacks, as
/// `path:line: name`, and the dotted literals that are not events (the exempt ones found).
fn scan(files: &[(String, String)], known: &Known) -> (Vec<String>, BTreeSet<String>) {
    let (mut missing, mut exempt_seen) = (Vec::new(), BTreeSet::new());
    for (path, text) in files {
        for lit in literals(text) {
            let name = lit.value.as_str();
            if !looks_like_event(name) {
                continue;
            }
            let recorded = lit.before.ends_with("Event::new(") || lit.before.ends_with(".event(");
            let category = name.split('.').next().unwrap_or(name);
            let last = name.rsplit('.').next().unwrap_or(name);
            if known.not_events.contains(name) {
                exempt_seen.insert(name.to_string());
                if !recorded {
                    continue;
                }
            } else if !recorded
                && (!known.categories.contains(category)
                    || known.config_keys.contains(name)
                    || FILE_EXTENSIONS.contains(&last))
            {
                continue;
            }
            if !known.events.contains(name) {
                missing.push(format!("{path}:{}: {name}", lit.line));
            }
        }
    }
    (missing, exempt_seen)
}

fn sources() -> Vec<(String, String)> {
    let root = repo_root();
    let mut files: Vec<(String, String)> = files_below(&root.join("src"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p.strip_prefix(&root).unwrap().display().to_string(), text)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_event_the_code_can_record_is_in_the_catalogue() {
    let known = Known::from_code();
    assert!(known.config_keys.contains("tls.cert_file") && known.config_keys.contains("audit.retention_days"));
    let files = sources();
    assert!(files.iter().any(|(p, _)| p.ends_with("catalogue.rs")) && files.len() > 20, "{}", files.len());
    let (missing, exempt_seen) = scan(&files, &known);
    assert!(
        missing.is_empty(),
        "events the code records that src/domain/audit/catalogue.rs lacks (add them, or list a literal that is \
         not an event in NOT_EVENTS with the reason):\n{}",
        missing.join("\n")
    );
    for (name, why) in NOT_EVENTS {
        assert!(exempt_seen.contains(*name), "NOT_EVENTS lists {name} ({why}), which src/ no longer holds");
        assert!(catalogue::find(name).is_none(), "{name} is in the catalogue and in NOT_EVENTS");
    }
    // The scan sees what it must: names chosen in a variable and names passed down.
    let all: Vec<String> = files.iter().flat_map(|(_, t)| literals(t)).map(|l| l.value).collect();
    for name in ["user.admin.granted", "api_key.disabled", "session.logout", "member.added"] {
        assert!(all.iter().any(|v| v == name), "{name}");
    }
}

#[test]
fn the_scan_reports_a_name_missing_from_the_catalogue() {
    let sample = r##"
        // Event::new("auth.commented_out", actor) in a comment is not code.
        /* nor in /* a nested */ block: "auth.in_a_block" */
        fn record(tx: &Tx<'_>, on: bool) -> Result<(), AppError> {
            let quote = '"';
            audit::record(tx, &key, now, &Event::new("auth.fake.event", Actor::System))?;
            let action = if on { "user.enabled" } else { "user.fake_toggled" };
            let e = a.event(
                "brandnew.category_event", &checked, origin, json!({}));
            let raw = r#"user.in_raw_string"#;
            let (pem, listen, meta) = (dir.join("key.pem"), "server.listen", "monitor.cursor");
            let sql = "DELETE FROM meta WHERE key = 'audit.purging'";
            let metric = "auth.token.rejected";
            Ok(())
        }
    "##;
    let known = Known::from_code();
    let (missing, exempt_seen) = scan(&[("src/sample.rs".to_string(), sample.to_string())], &known);
    assert_eq!(
        missing,
        [
            "src/sample.rs:6: auth.fake.event",
            "src/sample.rs:7: user.fake_toggled",
            "src/sample.rs:9: brandnew.category_event",
            "src/sample.rs:10: user.in_raw_string",
        ]
    );
    assert_eq!(exempt_seen.into_iter().collect::<Vec<_>>(), ["auth.token.rejected"]);
    // An exempt name recorded all the same is reported.
    let recorded = r#"Event::new( "auth.token.rejected", actor)"#;
    let (missing, _) = scan(&[("src/x.rs".to_string(), recorded.to_string())], &known);
    assert_eq!(missing, ["src/x.rs:1: auth.token.rejected"]);
}
