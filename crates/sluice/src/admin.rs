//! `sluice status`, `sluice reset` and `sluice override set|list|delete`: the admin API of a
//! running `sluice serve --admin-token ...` (`/admin/v1/...`), from the shell.
//!
//! Each command is one blocking HTTP/1.1 request on its own connection, written by hand over
//! a [`TcpStream`] (answers with a `Content-Length` or chunked bodies), so the binary needs
//! no HTTP client crate. Only `http://` server URLs are supported: https is not supported
//! yet, and an `https://` URL is refused as a usage error naming `--server`.
//!
//! The admin token goes in the `Authorization` header and is never printed: not in
//! messages, not in `Debug` output. Server answers are printed readably, or as the server's
//! JSON with `--json`. Everything a request controls (keys, values, reasons) is printed
//! with its control characters escaped, so a stored value cannot drive the terminal.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};

use crate::cli::{
    AdminConnection, DescriptorArgs, OverrideArgs, OverrideCommand, OverrideDeleteArgs,
    OverrideListArgs, OverrideSetArgs, ResetArgs, StatusArgs, usage_error,
};
use crate::values::ServerUrl;

/// How long connecting to one address of the server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the server may take to answer (or to accept what is sent).
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest answer read, in bytes (10,000 overrides are a few MB).
const MAX_BODY: u64 = 64 << 20;

/// Longest status or header line read, in bytes.
const MAX_LINE: u64 = 16 << 10;

/// Most header lines read.
const MAX_HEADERS: usize = 200;

/// The `title` of the server's problem when no admin token is configured.
const DISABLED_TITLE: &str = "Admin API Disabled";

// ---------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------

/// `sluice status`: the key's rule, override, remaining units and why.
pub(crate) fn status(args: &StatusArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.connection, &["status"]).unwrap_or_else(|usage| usage.exit());
    let body = descriptor_body(&args.descriptor);
    let answer = client.call("POST", "/lookup", Some(&body))?;
    if answer.status != 200 {
        return Err(client.failure(&answer));
    }
    let lookup = answer.json()?;
    if args.connection.json {
        return print_json(&lookup);
    }
    let mut out = io::stdout().lock();
    let rows = status_rows(&lookup);
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    for (label, text) in rows {
        writeln!(out, "{label:<width$}  {text}")?;
    }
    Ok(())
}

/// `sluice reset`: forget the key's counters.
pub(crate) fn reset(args: &ResetArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.connection, &["reset"]).unwrap_or_else(|usage| usage.exit());
    let body = descriptor_body(&args.descriptor);
    let answer = client.call("POST", "/reset", Some(&body))?;
    let shown = descriptor_text(&args.descriptor);
    match answer.status {
        200 => {
            let reset = answer.json()?;
            if args.connection.json {
                return print_json(&reset);
            }
            let rule = reset["rule"].as_str().unwrap_or("?");
            println!(
                "reset {shown} (rule {}): its whole limit is available again",
                clean(rule)
            );
            Ok(())
        }
        404 if !answer.admin_disabled() => bail!(
            "nothing to reset: no limited rule applies to {shown} \
             (check --domain and every --key, in order)"
        ),
        _ => Err(client.failure(&answer)),
    }
}

/// `sluice override set|list|delete`.
pub(crate) fn overrides(args: &OverrideArgs) -> anyhow::Result<()> {
    match &args.command {
        OverrideCommand::Set(set) => override_set(set),
        OverrideCommand::List(list) => override_list(list),
        OverrideCommand::Delete(delete) => override_delete(delete),
    }
}

fn override_set(args: &OverrideSetArgs) -> anyhow::Result<()> {
    let client =
        Client::new(&args.connection, &["override", "set"]).unwrap_or_else(|usage| usage.exit());
    let mut body = descriptor_body(&args.descriptor);
    let action = &args.action;
    body["action"] = json!(if action.block {
        "blocked"
    } else if action.unlimited {
        "unlimited"
    } else {
        "limit"
    });
    if let Some(limit) = action.limit {
        let mut rate = json!({"unit": limit.unit, "requests_per_unit": limit.requests_per_unit});
        if let Some(algorithm) = args.algorithm {
            rate["algorithm"] = json!(algorithm.name());
        }
        body["rate_limit"] = rate;
    }
    if let Some(ttl) = args.ttl {
        body["ttl_s"] = json!(ttl);
    }
    if let Some(reason) = &args.reason {
        body["reason"] = json!(reason);
    }
    let answer = client.call("PUT", "/overrides", Some(&body))?;
    if answer.status != 200 {
        return Err(client.failure(&answer));
    }
    let stored = answer.json()?;
    if args.connection.json {
        return print_json(&stored);
    }
    let mut line = format!(
        "override set on {}: {}, {}",
        descriptor_text(&args.descriptor),
        override_effect(&stored),
        match stored["expires_at_unix_ms"].as_u64() {
            Some(ms) => format!("until {}", utc(ms)),
            None => "no expiry".to_owned(),
        }
    );
    if let Some(reason) = stored["reason"].as_str() {
        let _ = write!(line, " (reason: {})", clean(reason));
    }
    println!("{line}");
    Ok(())
}

fn override_list(args: &OverrideListArgs) -> anyhow::Result<()> {
    let client =
        Client::new(&args.connection, &["override", "list"]).unwrap_or_else(|usage| usage.exit());
    let answer = client.call("GET", "/overrides", None)?;
    if answer.status != 200 {
        return Err(client.failure(&answer));
    }
    let list = answer.json()?;
    if args.connection.json {
        return print_json(&list);
    }
    let overrides = list["overrides"].as_array().map_or(&[][..], Vec::as_slice);
    let mut out = io::stdout().lock();
    if overrides.is_empty() {
        writeln!(out, "no overrides")?;
        return Ok(());
    }
    let rows: Vec<[String; 6]> = overrides.iter().map(override_row).collect();
    let headers = ["DOMAIN", "ENTRIES", "ACTION", "LIMIT", "EXPIRES", "REASON"];
    let mut widths = headers.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    write_row(&mut out, &headers.map(str::to_owned), &widths)?;
    for row in &rows {
        write_row(&mut out, row, &widths)?;
    }
    Ok(())
}

fn override_delete(args: &OverrideDeleteArgs) -> anyhow::Result<()> {
    let client =
        Client::new(&args.connection, &["override", "delete"]).unwrap_or_else(|usage| usage.exit());
    let body = descriptor_body(&args.descriptor);
    let answer = client.call("DELETE", "/overrides", Some(&body))?;
    let shown = descriptor_text(&args.descriptor);
    match answer.status {
        200 => {
            if args.connection.json {
                return print_json(&answer.json()?);
            }
            println!("override deleted on {shown}: the configured limit applies again");
            Ok(())
        }
        404 if !answer.admin_disabled() => {
            bail!("no override is set on {shown} (`sluice override list` shows those that are)")
        }
        _ => Err(client.failure(&answer)),
    }
}

// ---------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------

/// `{"domain": ..., "entries": [{"key", "value"}...]}`, entries in flag order.
fn descriptor_body(descriptor: &DescriptorArgs) -> Value {
    let entries: Vec<Value> = descriptor
        .keys
        .iter()
        .map(|e| json!({"key": e.key, "value": e.value}))
        .collect();
    json!({"domain": descriptor.domain, "entries": entries})
}

/// `domain|key=value|...`, as the server writes keys (but unabridged), made printable.
fn descriptor_text(descriptor: &DescriptorArgs) -> String {
    let mut text = clean(&descriptor.domain);
    for entry in &descriptor.keys {
        let _ = write!(text, "|{}={}", clean(&entry.key), clean(&entry.value));
    }
    text
}

/// `text` with control characters escaped (`\n`, `\u{1b}`), so it prints as one line and
/// cannot send escape sequences to the terminal.
fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{value}")?;
    Ok(())
}

/// The labelled lines of `sluice status`.
fn status_rows(lookup: &Value) -> Vec<(&'static str, String)> {
    let mut rows = vec![("key", clean(lookup["key"].as_str().unwrap_or("?")))];
    let rule = &lookup["rule"];
    rows.push((
        "rule",
        if rule.is_object() {
            format!(
                "{}: {}",
                clean(rule["id"].as_str().unwrap_or("?")),
                rule_limit(rule)
            )
        } else {
            "none matches".to_owned()
        },
    ));
    let active = &lookup["override"];
    rows.push((
        "override",
        if active.is_object() {
            let mut text = format!(
                "{}, {}",
                override_effect(active),
                match active["expires_at_unix_ms"].as_u64() {
                    Some(ms) => format!("until {}", utc(ms)),
                    None => "no expiry".to_owned(),
                }
            );
            if let Some(reason) = active["reason"].as_str() {
                let _ = write!(text, " (reason: {})", clean(reason));
            }
            text
        } else {
            "none".to_owned()
        },
    ));
    let state = &lookup["state"];
    rows.push((
        "remaining",
        if state.is_object() {
            let remaining = state["remaining"].as_u64().unwrap_or(0);
            let limit = state["limit"].as_u64().unwrap_or(0);
            match state["reset_after_ms"].as_u64().unwrap_or(0) {
                0 => format!("{remaining} of {limit}"),
                ms => format!(
                    "{remaining} of {limit}, all {limit} again in {}",
                    human_ms(ms)
                ),
            }
        } else {
            "not counted (no limited rule applies)".to_owned()
        },
    ));
    rows.push(("why", clean(lookup["explanation"].as_str().unwrap_or(""))));
    rows
}

/// A rule of the admin API as `3 per hour (gcra)`, `unlimited` or `blocks every request`.
fn rule_limit(rule: &Value) -> String {
    if rule["blocked"] == true {
        return "blocks every request".to_owned();
    }
    if rule["unlimited"] == true {
        return "unlimited".to_owned();
    }
    let unit = clean(rule["unit"].as_str().unwrap_or("?"));
    let per = match rule["unit_multiplier"].as_u64() {
        Some(n) if n > 1 => format!("{n} {unit}s"),
        _ => unit,
    };
    let mut text = format!(
        "{} per {per}",
        rule["requests_per_unit"].as_u64().unwrap_or(0)
    );
    if let Some(algorithm) = rule["algorithm"].as_str() {
        let _ = write!(text, " ({})", clean(algorithm));
    }
    if rule["shadow_mode"] == true {
        text.push_str(", shadow mode (counted, never refused)");
    }
    text
}

/// What an override does: `blocked`, `unlimited` or `limit 100/minute (gcra)`.
fn override_effect(o: &Value) -> String {
    match o["action"].as_str() {
        Some("limit") => format!("limit {}", override_limit(o)),
        Some(action) => clean(action),
        None => "?".to_owned(),
    }
}

/// An override's `rate_limit` as `100/minute (gcra)`, or `-`.
fn override_limit(o: &Value) -> String {
    let rate = &o["rate_limit"];
    if !rate.is_object() {
        return "-".to_owned();
    }
    format!(
        "{}/{} ({})",
        rate["requests_per_unit"].as_u64().unwrap_or(0),
        clean(rate["unit"].as_str().unwrap_or("?")),
        clean(rate["algorithm"].as_str().unwrap_or("gcra"))
    )
}

/// One line of `sluice override list`.
fn override_row(o: &Value) -> [String; 6] {
    let entries: Vec<String> = o["entries"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|e| {
            format!(
                "{}={}",
                clean(e["key"].as_str().unwrap_or("")),
                clean(e["value"].as_str().unwrap_or(""))
            )
        })
        .collect();
    [
        clean(o["domain"].as_str().unwrap_or("?")),
        entries.join(","),
        clean(o["action"].as_str().unwrap_or("?")),
        override_limit(o),
        o["expires_at_unix_ms"]
            .as_u64()
            .map_or_else(|| "never".to_owned(), utc),
        o["reason"].as_str().map_or_else(|| "-".to_owned(), clean),
    ]
}

/// Writes `cells` padded to `widths`; the last column is not padded.
fn write_row(out: &mut impl Write, cells: &[String; 6], widths: &[usize; 6]) -> io::Result<()> {
    let mut line = String::new();
    for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
        if i + 1 == cells.len() {
            line.push_str(cell);
        } else {
            let _ = write!(line, "{cell:<width$}  ");
        }
    }
    writeln!(out, "{}", line.trim_end())
}

/// Milliseconds as `750ms`, `42s`, `20m`, `1h30m`, `2d3h` (whole seconds, rounded up).
fn human_ms(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = ms.div_ceil(1000);
    let parts = [
        (secs / 86_400, 'd'),
        (secs % 86_400 / 3_600, 'h'),
        (secs % 3_600 / 60, 'm'),
        (secs % 60, 's'),
    ];
    let mut text = String::new();
    for (n, unit) in parts {
        if n > 0 {
            let _ = write!(text, "{n}{unit}");
        }
    }
    text
}

/// Unix milliseconds as `2025-06-01 12:00:00 UTC` (pure arithmetic: no clock is read).
fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = secs / 86_400;
    let rest = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm, for days since 1970-01-01 (never negative).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

// ---------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------

/// The admin API of one server, as the connection flags name it.
#[derive(Debug)]
struct Client<'a> {
    connection: &'a AdminConnection,
    /// The checked token.
    token: &'a str,
}

/// A server's answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// The `Retry-After` header, if any.
    retry_after: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    /// The body as JSON, or an error quoting the start of it.
    fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).map_err(|err| {
            anyhow!(
                "the server's answer is not JSON ({err}): {}",
                snippet(&self.body)
            )
        })
    }

    /// The RFC 9457 problem in the body, if it is one.
    fn problem(&self) -> Option<Value> {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .filter(|p| p["title"].is_string() || p["detail"].is_string())
    }

    /// Whether the answer says the admin API is off: the server's own problem, or a 404
    /// that is no problem at all (a server without the admin routes).
    fn admin_disabled(&self) -> bool {
        self.status == 404
            && self
                .problem()
                .is_none_or(|p| p["title"].as_str() == Some(DISABLED_TITLE))
    }
}

impl<'a> Client<'a> {
    /// The client of `connection`'s server, or a usage error (exit code 2) about its token
    /// for the subcommand at `command` (e.g. `["override", "set"]`).
    fn new(connection: &'a AdminConnection, command: &[&str]) -> Result<Self, clap::Error> {
        match connection.token.check() {
            Ok(token) => Ok(Self { connection, token }),
            Err(why) => Err(usage_error(
                command,
                format!("invalid value for '--token <TOKEN>' (or SLUICE_ADMIN_TOKEN): {why}"),
            )),
        }
    }

    fn url(&self) -> &ServerUrl {
        &self.connection.server
    }

    /// Sends one request to `/admin/v1{path}` and reads the answer, whatever its status.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Answer> {
        let url = self.url();
        let mut stream = connect(url).with_context(|| {
            format!("cannot connect to the sluice server at {url} (--server / SLUICE_SERVER)")
        })?;
        let body = body.map(Value::to_string);
        let mut request = format!(
            "{method} {}/admin/v1{path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n\
             User-Agent: sluice/{}\r\nConnection: close\r\n",
            url.prefix,
            url.authority,
            env!("CARGO_PKG_VERSION"),
        );
        if let Some(body) = &body {
            let _ = write!(
                request,
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            );
        }
        request.push_str("Authorization: Bearer ");
        request.push_str(self.token);
        request.push_str("\r\n\r\n");
        if let Some(body) = &body {
            request.push_str(body);
        }
        exchange(&mut stream, request.as_bytes()).map_err(|err| {
            let what = if matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) {
                format!("did not answer within {}s", IO_TIMEOUT.as_secs())
            } else {
                format!("failed: {err}")
            };
            anyhow!("{method} {url}/admin/v1{path} {what}")
        })
    }

    /// The error a failed answer stands for, in the user's terms.
    fn failure(&self, answer: &Answer) -> anyhow::Error {
        let problem = answer.problem();
        let detail = problem
            .as_ref()
            .and_then(|p| p["detail"].as_str().or_else(|| p["title"].as_str()))
            .map(clean);
        match answer.status {
            401 => anyhow!("the admin token was refused (--token / SLUICE_ADMIN_TOKEN)"),
            404 if answer.admin_disabled() => anyhow!(
                "the admin API is disabled on this server (start it with --admin-token): {}",
                self.url()
            ),
            429 => anyhow!(
                "the server's admin API is busy: {}{}",
                detail.unwrap_or_else(|| "too many requests".to_owned()),
                answer
                    .retry_after
                    .as_deref()
                    .map(|s| format!("; retry in {}s", clean(s)))
                    .unwrap_or_default()
            ),
            status => match detail {
                Some(detail) => anyhow!("the server answered {status}: {detail}"),
                None => anyhow!(
                    "unexpected answer from {}: HTTP {status}: {}",
                    self.url(),
                    snippet(&answer.body)
                ),
            },
        }
    }
}

/// Writes `request` and reads the answer.
fn exchange(stream: &mut TcpStream, request: &[u8]) -> io::Result<Answer> {
    stream.write_all(request)?;
    stream.flush()?;
    read_answer(&mut BufReader::new(stream))
}

/// The start of a body, printable, for error messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = clean(text.trim());
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text,
    }
}

/// A connection to the first address of `url` that accepts one, with I/O timeouts.
fn connect(url: &ServerUrl) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in (url.host.as_str(), url.port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(stream) => {
                stream.set_read_timeout(Some(IO_TIMEOUT))?;
                stream.set_write_timeout(Some(IO_TIMEOUT))?;
                return Ok(stream);
            }
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("the host name has no address")))
}

/// Reads one HTTP/1.1 answer: status line, headers, then a body framed by
/// `Transfer-Encoding: chunked`, `Content-Length`, or the end of the connection.
fn read_answer(reader: &mut impl BufRead) -> io::Result<Answer> {
    loop {
        let status_line = read_line(reader)?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        let status = parts
            .next()
            .and_then(|s| s.parse::<u16>().ok())
            .filter(|_| version.starts_with("HTTP/1."))
            .ok_or_else(|| invalid(format!("not an HTTP/1.1 answer: {:?}", clean(&status_line))))?;
        let mut chunked = false;
        let mut length = None;
        let mut retry_after = None;
        for n in 0.. {
            let line = read_line(reader)?;
            if line.is_empty() {
                break;
            }
            if n == MAX_HEADERS {
                return Err(invalid("too many header lines".to_owned()));
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(invalid(format!("bad header line {:?}", clean(&line))));
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "transfer-encoding" => {
                    chunked = value
                        .rsplit(',')
                        .next()
                        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
                }
                "content-length" => {
                    let parsed = value
                        .parse::<u64>()
                        .map_err(|_| invalid(format!("bad Content-Length {value:?}")))?;
                    length = Some(parsed);
                }
                "retry-after" => retry_after = Some(value.to_owned()),
                _ => {}
            }
        }
        // An interim answer (100 Continue) comes before the real one.
        if (100..200).contains(&status) {
            continue;
        }
        let body = if status == 204 || status == 304 {
            Vec::new()
        } else if chunked {
            read_chunked(reader)?
        } else if let Some(length) = length {
            if length > MAX_BODY {
                return Err(invalid(format!("an answer of {length} bytes is too long")));
            }
            let mut body = Vec::new();
            reader.take(length).read_to_end(&mut body)?;
            if body.len() as u64 != length {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection closed before the whole answer arrived",
                ));
            }
            body
        } else {
            let mut body = Vec::new();
            reader.take(MAX_BODY).read_to_end(&mut body)?;
            body
        };
        return Ok(Answer {
            status,
            retry_after,
            body,
        });
    }
}

/// A chunked body: `SIZE[;ext]\r\n DATA\r\n` ... `0\r\n` trailers `\r\n`.
fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader)?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size, 16)
            .map_err(|_| invalid(format!("bad chunk size {:?}", clean(&line))))?;
        if size == 0 {
            // Trailers, up to the empty line.
            while !read_line(reader)?.is_empty() {}
            return Ok(body);
        }
        if body.len() as u64 + size > MAX_BODY {
            return Err(invalid("the answer is too long".to_owned()));
        }
        let before = body.len();
        reader.take(size).read_to_end(&mut body)?;
        if (body.len() - before) as u64 != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection closed inside a chunk",
            ));
        }
        if !read_line(reader)?.is_empty() {
            return Err(invalid("a chunk is longer than its size".to_owned()));
        }
    }
}

/// One line without its `\r\n`, at most [`MAX_LINE`] bytes; the end of the stream is an
/// error.
fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    reader.take(MAX_LINE).read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Err(if line.len() as u64 == MAX_LINE {
            invalid("a header line is too long".to_owned())
        } else {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection closed before the answer was complete",
            )
        });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(raw: &str) -> io::Result<Answer> {
        read_answer(&mut raw.as_bytes())
    }

    #[test]
    fn answers_are_framed_by_length_or_chunks() {
        let a = answer("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}extra").unwrap();
        assert_eq!((a.status, a.body.as_slice()), (200, &b"{}"[..]));
        let a = answer(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
             3;x=y\r\n{\"a\r\n4\r\n\":1}\r\n0\r\nTrailer: v\r\n\r\n",
        )
        .unwrap();
        assert_eq!(a.body, b"{\"a\":1}");
        let a = answer(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 429 Too Many\r\nRetry-After: 3\r\n\r\nbusy",
        )
        .unwrap();
        assert_eq!((a.status, a.retry_after.as_deref()), (429, Some("3")));
        assert_eq!(a.body, b"busy");
        assert!(answer("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n{}").is_err());
        assert!(answer("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n").is_err());
        assert!(answer("SSH-2.0-OpenSSH\r\n").is_err());
        assert!(answer("").is_err());
    }

    #[test]
    fn the_disabled_api_is_told_apart_from_a_missing_thing() {
        let disabled = Answer {
            status: 404,
            retry_after: None,
            body: br#"{"title":"Admin API Disabled","detail":"x"}"#.to_vec(),
        };
        assert!(disabled.admin_disabled());
        let no_route = Answer {
            status: 404,
            retry_after: None,
            body: Vec::new(),
        };
        assert!(no_route.admin_disabled());
        let missing = Answer {
            status: 404,
            retry_after: None,
            body: br#"{"title":"No Such Override","detail":"x"}"#.to_vec(),
        };
        assert!(!missing.admin_disabled());
    }

    #[test]
    fn times_read_as_people_write_them() {
        assert_eq!(human_ms(250), "250ms");
        assert_eq!(human_ms(1_001), "2s");
        assert_eq!(human_ms(1_200_000), "20m");
        assert_eq!(human_ms(5_400_000), "1h30m");
        assert_eq!(human_ms(183_600_000), "2d3h");
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_735_689_599_999), "2024-12-31 23:59:59 UTC");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(clean("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(clean("ünïcode <script>"), "ünïcode <script>");
    }
}
