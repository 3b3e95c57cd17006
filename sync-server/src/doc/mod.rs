//! `concord doc ...`: a client CLI with its own local replica.
//!
//! Every invocation opens the replica (`<data>/replica.db`, SQLite), does one thing and exits.
//! Writes are committed to the replica first, so they are durable even when no server is reachable;
//! they reach a server then or on a later connection (`concord doc sync`). Reads first try to bring
//! the document up to date from a server and fall back to the local copy with a warning.
//!
//! ```text
//! $ concord doc create '{"todos": []}'
//! automerge:2j9knpCseyhnK8izDmLpGP5WMdZQ
//! $ concord doc put automerge:2j9knpCseyhnK8izDmLpGP5WMdZQ todos/- '{"title": "milk"}'
//! $ concord doc --offline text-splice automerge:2j9knpCseyhnK8izDmLpGP5WMdZQ todos/0/title 4 0 ' and eggs'
//! $ concord doc sync
//! $ concord doc get automerge:2j9knpCseyhnK8izDmLpGP5WMdZQ todos/0
//! {
//!   "title": "milk and eggs"
//! }
//! ```

mod edit;
mod history;
mod policies;
mod replica;
mod rm;
mod sync;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use concord::AutomergeUrl;
use concord::path::DocPath;
use serde_json::Value as Json;

use replica::Replica;

/// Work with documents through a local replica: create, read, write, watch and sync them.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Paths look like `todos/0/title` (or `/todos/0/title`): segments name map keys and list \
                  indexes, `-` is one past the end of a list, `~1` escapes `/` and `~0` escapes `~`; \
                  the empty path is the whole document.\n\
                  Writes are committed to the local replica first; with a server they then wait up to \
                  --timeout for the server to hold them (a warning, not an error, when it does not; \
                  Ctrl-C ends that wait, exit status 130, and the write stays committed)."
)]
pub struct DocArgs {
    /// Directory of the local replica (the SQLite file `<DIR>/replica.db`; created if missing).
    #[arg(
        long,
        value_name = "DIR",
        env = "CONCORD_DATA",
        default_value = "./concord-replica",
        global = true
    )]
    data: PathBuf,

    /// Sync server WebSocket URL; repeat (or comma-separate in the environment variable) for
    /// fallbacks, tried in order.
    #[arg(
        long = "server",
        value_name = "URL",
        env = "CONCORD_SERVER",
        value_delimiter = ',',
        default_value = "ws://127.0.0.1:3030/sync",
        value_parser = parse_server,
        global = true
    )]
    servers: Vec<String>,

    /// Never connect: reads use the local copy, writes are committed locally and sync on a later
    /// connection.
    #[arg(
        long,
        env = "CONCORD_OFFLINE",
        value_parser = clap::builder::BoolishValueParser::new(),
        global = true
    )]
    offline: bool,

    /// A conflict policy for paths matching PATTERN (repeatable), e.g. `name=lww`,
    /// `cart/items=add-wins-set`, `counters/*=counter`, `title=keep-conflicts`; used by
    /// `get --resolved` and `resolve`.
    #[arg(long = "policy", value_name = "PATTERN=POLICY", global = true)]
    policies: Vec<String>,

    /// Access token for the servers (`concord serve --dev` prints a development token;
    /// `concord token create` mints others). Sent as the `token` query parameter.
    #[arg(long, env = "CONCORD_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,

    /// How long to wait for servers, in seconds (fractions allowed) [default: 10; for `watch`: no
    /// limit].
    #[arg(long, value_name = "SECS", env = "CONCORD_TIMEOUT", value_parser = parse_timeout, global = true)]
    timeout: Option<Duration>,

    /// Writes: also wait until the change is committed at this level — `server` (a server
    /// holds it) or `regions:N` (N distinct regions hold it) — and fail (exit 1, saying where it
    /// is) when that does not happen within --timeout. The write itself is committed locally
    /// either way.
    #[arg(long, value_name = "LEVEL", env = "CONCORD_DURABILITY", global = true)]
    durability: Option<concord::core::Durability>,

    #[command(subcommand)]
    command: DocCommand,
}

#[derive(Debug, clap::Subcommand)]
enum DocCommand {
    /// Create a document and print its `automerge:` URL.
    Create {
        /// Initial contents, a JSON object (e.g. '{"title": "groceries", "items": []}').
        #[arg(value_name = "JSON", value_parser = parse_object)]
        init: Option<Json>,
    },
    /// Print the JSON value at PATH (the whole document by default).
    ///
    /// A URL with heads (`automerge:ID#HEAD|HEAD`) prints the document as it was at those heads.
    Get {
        /// The document's `automerge:` URL (or bare id).
        url: AutomergeUrl,
        /// Where to read; empty for the whole document.
        #[arg(default_value = "")]
        path: DocPath,
        /// Resolve conflicts with the `--policy` rules (e.g. last-writer-wins by HLC) instead of
        /// Automerge's default pick.
        #[arg(long)]
        resolved: bool,
    },
    /// List the concurrent values at PATH with who wrote them, when (HLC) and in which change.
    Conflicts {
        /// The document's `automerge:` URL (or bare id).
        url: AutomergeUrl,
        /// The conflicted value's path.
        path: DocPath,
    },
    /// Write VALUE at PATH, superseding every concurrent value there (on every replica).
    Resolve {
        /// The document's `automerge:` URL (or bare id).
        url: AutomergeUrl,
        /// The conflicted value's path.
        path: DocPath,
        /// The value that settles it (JSON).
        value: String,
    },
    /// Write a JSON value at PATH: objects become maps, arrays lists, strings collaborative text.
    ///
    /// The parents must exist. The last segment may be a new or existing map key, an existing
    /// list index (overwritten) or the list's length or `-` (appended). The empty path replaces
    /// the whole document with VALUE, which must then be an object.
    Put {
        /// The document's `automerge:` URL (or bare id).
        url: AutomergeUrl,
        /// Where to write.
        path: DocPath,
        /// The value, as JSON (quote strings: '"milk"'), or any text with --string.
        #[arg(value_name = "JSON-VALUE")]
        value: String,
        /// Store VALUE as a string as given, without parsing it as JSON.
        #[arg(long, short)]
        string: bool,
    },
    /// Delete the value at PATH (a map key, or a list element: later elements shift down).
    Delete {
        /// The document's `automerge:` URL (or bare id).
        url: AutomergeUrl,
        /// What to delete.
        path: DocPath,
    },
    /// Edit the text at PATH: delete DEL characters at POS, then insert TEXT there.
    TextSplice {
        /// The document's `automerge:` URL (or bare id).
        url: AutomergeUrl,
        /// A text value (strings written by `put` and `create` are text).
        path: DocPath,
        /// Position, in characters (Unicode code points) from the start.
        pos: usize,
        /// How many characters to delete.
        del: usize,
        /// What to insert.
        #[arg(default_value = "")]
        text: String,
    },
    /// Add BY to the counter at PATH, creating the counter if the key is absent.
    ///
    /// Concurrent increments from different replicas add up (unlike `put` of a number).
    #[command(allow_negative_numbers = true)]
    Increment {
        /// The document's `automerge:` URL (or bare id).
        url: AutomergeUrl,
        /// The counter.
        path: DocPath,
        /// The amount (may be negative).
        #[arg(default_value_t = 1)]
        by: i64,
    },
    /// Print one JSON line per change of the document (local or remote).
    ///
    /// Each line is `{"heads":[...],"origin":"local"|"remote","value":<document>}`, where `value`
    /// is the whole document at those heads. Runs until Ctrl-C, --count changes, or --timeout seconds if given. Needs a server.
    Watch {
        /// The document's `automerge:` URL (or bare id).
        url: AutomergeUrl,
        /// Exit after N changes (non-zero status if --timeout ends the wait first).
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Delete a document, here and (through the servers, with write access) everywhere: other
    /// replicas drop their copies, later edits are refused. Prints `deleted URL` once a server
    /// confirmed it.
    Rm {
        /// The document's `automerge:` URL (or bare id).
        url: AutomergeUrl,
    },
    /// Print the document's changes, newest first, one JSON line each: hash, actor, HLC time,
    /// message, deps, op count and the author principal when the server recorded it.
    ///
    /// A URL with heads lists the history of that version. When more changes follow, stderr
    /// says `more: --after HASH`.
    Log {
        /// The document's `automerge:` URL (or bare id).
        url: AutomergeUrl,
        /// At most N changes [default: 50, at most 1000].
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Continue after this change (the HASH of a previous `more: --after HASH`).
        #[arg(long, value_name = "HASH", value_parser = parse_hash)]
        after: Option<automerge::ChangeHash>,
    },
    /// Print the JSON patches that turn the version at FROM into the version at TO.
    ///
    /// Heads are change hashes as `log` prints them, separated by `|` or `,`; `''` is the empty
    /// document.
    Diff {
        /// The document's `automerge:` URL (or bare id).
        url: AutomergeUrl,
        /// The earlier version's heads.
        #[arg(value_parser = history::heads_arg)]
        from: HeadsArg,
        /// The later version's heads.
        #[arg(value_parser = history::heads_arg)]
        to: HeadsArg,
    },
    /// Make the document equal to the version at HEADS again, as one new change on top (it syncs
    /// like any change; edits made concurrently elsewhere still merge).
    Restore {
        /// The document's `automerge:` URL (or bare id).
        url: AutomergeUrl,
        /// The version's heads (as `log` prints hashes, separated by `|` or `,`).
        #[arg(value_parser = history::heads_arg)]
        heads: HeadsArg,
    },
    /// List the documents the server keeps for your token's principal (granted or created by
    /// it), one `URL<TAB>grant|created` line each; with --local, the local replica's documents.
    Ls {
        /// List the local replica's documents instead (no server needed).
        #[arg(long)]
        local: bool,
        /// Documents per request to the server [default: 100, at most 1000].
        #[arg(long, value_name = "N")]
        page_size: Option<usize>,
    },
    /// Sync every document of the replica with the server until the server holds all of them.
    ///
    /// Exits 0 when every document is in sync, non-zero (listing the others) when that did not
    /// happen within --timeout.
    Sync,
}

/// Heads given on the command line (a distinct type: clap treats a bare `Vec` as repeated values).
type HeadsArg = Vec<automerge::ChangeHash>;

fn parse_hash(s: &str) -> Result<automerge::ChangeHash, String> {
    concord::id::decode_head(s.trim()).map_err(|e| e.to_string())
}

/// Default wait for servers when `--timeout` is not given.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Adds `token` to a server URL as the `token` query parameter.
fn with_token(url: String, token: Option<&str>) -> String {
    match token {
        Some(t) if !t.is_empty() => {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}token={t}")
        }
        _ => url,
    }
}

/// Runs one `concord doc` command.
pub async fn run(args: DocArgs) -> anyhow::Result<ExitCode> {
    let DocArgs {
        data,
        servers,
        offline,
        policies,
        token,
        timeout,
        durability,
        command,
    } = args;
    let schema = policies::schema(&policies)?;
    let servers = servers
        .into_iter()
        .map(|s| with_token(s, token.as_deref()))
        .collect();
    // `watch` bounds only its start-up by the default; its watching is unbounded unless given.
    let wait = timeout.unwrap_or(DEFAULT_TIMEOUT);
    let mut replica = Replica::open(&data, servers, offline, wait).await?;
    replica.durability = durability;
    let result = dispatch(&replica, command, timeout, &schema).await;
    replica.close().await;
    match result {
        Err(e) if e.is::<replica::Interrupted>() => {
            eprintln!("{e}");
            Ok(ExitCode::from(130)) // the shells' status for Ctrl-C
        }
        other => other,
    }
}

async fn dispatch(
    r: &Replica,
    command: DocCommand,
    timeout: Option<Duration>,
    schema: &concord::policy::Schema,
) -> anyhow::Result<ExitCode> {
    match command {
        DocCommand::Create { init } => edit::create(r, init).await?,
        DocCommand::Get {
            url,
            path,
            resolved: false,
        } => edit::get(r, &url, &path).await?,
        DocCommand::Get {
            url,
            path,
            resolved: true,
        } => policies::get_resolved(r, &url, &path, schema).await?,
        DocCommand::Conflicts { url, path } => policies::conflicts(r, &url, &path).await?,
        DocCommand::Resolve { url, path, value } => {
            let value = parse_json(&value).map_err(anyhow::Error::msg)?;
            policies::resolve(r, &url, &path, &value, schema).await?;
        }
        DocCommand::Put {
            url,
            path,
            value,
            string,
        } => {
            let value = if string {
                Json::String(value)
            } else {
                parse_json(&value).map_err(anyhow::Error::msg)?
            };
            edit::put(r, &url, &path, &value).await?;
        }
        DocCommand::Delete { url, path } => edit::delete(r, &url, &path).await?,
        DocCommand::TextSplice {
            url,
            path,
            pos,
            del,
            text,
        } => edit::splice(r, &url, &path, pos, del, &text).await?,
        DocCommand::Increment { url, path, by } => edit::increment(r, &url, &path, by).await?,
        DocCommand::Watch { url, count } => watch::watch(r, &url, count, timeout).await?,
        DocCommand::Sync => sync::sync(r).await?,
        DocCommand::Rm { url } => rm::rm(r, &url).await?,
        DocCommand::Log { url, limit, after } => history::log(r, &url, limit, after).await?,
        DocCommand::Diff { url, from, to } => history::diff(r, &url, &from, &to).await?,
        DocCommand::Restore { url, heads } => history::restore(r, &url, &heads).await?,
        DocCommand::Ls { local, page_size } => history::ls(r, local, page_size).await?,
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if secs < 0.0 {
        return Err("the timeout cannot be negative".into());
    }
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("`{s}` is not a usable number of seconds"))
}

fn parse_server(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.starts_with("ws://") || s.starts_with("wss://") {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{s}` is not a WebSocket URL (ws://HOST:PORT/PATH or wss://...)"
        ))
    }
}

fn parse_json(s: &str) -> Result<Json, String> {
    serde_json::from_str(s).map_err(|e| {
        format!("`{s}` is not valid JSON ({e}); quote strings ('\"text\"') or pass --string")
    })
}

fn parse_object(s: &str) -> Result<Json, String> {
    match parse_json(s)? {
        v @ Json::Object(_) => Ok(v),
        _ => Err(format!(
            "`{s}` is not a JSON object (like '{{\"title\": \"groceries\"}}')"
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        doc: DocArgs,
    }

    #[test]
    fn parses_options_commands_and_defaults() {
        let cli = Cli::try_parse_from(["concord", "get", "automerge:not-an-id", "--offline"]);
        let err = cli.unwrap_err().to_string();
        assert!(err.contains("is not a bs58check document id"), "{err}");
        let url = concord::DocumentId::from_bytes([1; 16]).url().to_string();
        let cli =
            Cli::try_parse_from(["concord", "increment", &url, "n", "-3", "--timeout", "0.5"])
                .unwrap();
        assert_eq!(cli.doc.timeout, Some(Duration::from_millis(500)));
        assert_eq!(cli.doc.servers, ["ws://127.0.0.1:3030/sync"]);
        assert!(matches!(
            cli.doc.command,
            DocCommand::Increment { by: -3, .. }
        ));
        assert!(Cli::try_parse_from(["concord", "create", "[1]"]).is_err());
        assert!(Cli::try_parse_from(["concord", "get", &url, "a//b"]).is_err());
        assert!(Cli::try_parse_from(["concord", "--server", "http://x", "sync"]).is_err());
        assert!(Cli::try_parse_from(["concord", "--timeout", "-1", "sync"]).is_err());
    }

    #[test]
    fn json_errors_say_how_to_quote() {
        let e = parse_json("hello").unwrap_err();
        assert!(e.contains("--string"), "{e}");
        assert_eq!(
            parse_json("\"hello\"").unwrap(),
            Json::String("hello".into())
        );
    }
}
