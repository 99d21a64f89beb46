//! `sluice status`, `sluice reset` and `sluice override ...` as a user runs them: the built
//! binary against a real `sluice serve --admin-token` on free ports, checked by what it
//! prints, its exit code, and what `/v1/check` answers afterwards.
//!
//! The server's limit is 3 per hour, so no decision here can depend on timing.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use support::{ServeProcess, check_body, temp_dir};

const TOKEN: &str = "cli-test-token";

const CONFIG: &str = "
domain: api
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 3, algorithm: gcra}
";

/// A server with the admin API on, serving [`CONFIG`].
fn start(tag: &str) -> ServeProcess {
    let dir = temp_dir(tag);
    let config = dir.join("ratelimit.yaml");
    std::fs::write(&config, CONFIG).expect("the config is written");
    ServeProcess::start(&dir, &["--admin-token", TOKEN, "--config", path(&config)])
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

fn url(server: &ServeProcess) -> String {
    format!("http://{}", server.http)
}

/// Runs `sluice ARGS` with nothing from the caller's environment but what is given.
fn sluice(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .args(args)
        .env_remove("SLUICE_SERVER")
        .env_remove("SLUICE_ADMIN_TOKEN");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("the sluice binary runs")
}

/// Runs `sluice ARGS` against `server` with the right token, both given through the
/// environment as an operator would.
fn admin(server: &ServeProcess, args: &[&str]) -> Output {
    let url = url(server);
    sluice(
        &[("SLUICE_SERVER", &url), ("SLUICE_ADMIN_TOKEN", TOKEN)],
        args,
    )
}

/// Like [`admin`], and the command must succeed; returns its standard output.
fn admin_ok(server: &ServeProcess, args: &[&str]) -> String {
    let output = admin(server, args);
    assert!(
        output.status.success(),
        "sluice {args:?} failed with {}:\n{}",
        output.status,
        stderr(&output)
    );
    stdout(&output)
}

/// Like [`admin_ok`] with `--json`; the output is one JSON value.
fn admin_json(server: &ServeProcess, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let text = admin_ok(server, &all);
    assert_eq!(text.lines().count(), 1, "one line: {text}");
    serde_json::from_str(&text).expect("--json prints JSON")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("stderr is UTF-8")
}

/// Asserts that `output` failed with `code` and that its standard error contains `want`.
fn assert_fails(output: &Output, code: i32, want: &str) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(code), "{err}");
    assert!(err.contains(want), "expected {want:?} in:\n{err}");
}

/// One `/v1/check` for `user=ID`: the overall code and the first status.
fn check(server: &ServeProcess, id: &str) -> (String, Value) {
    let (status, answer) = server.post("/v1/check", &check_body("api", &[("user", id)]));
    assert_eq!(status, 200, "{answer}");
    let code = answer["overall_code"].as_str().expect("a code").to_owned();
    (code, answer["statuses"][0].clone())
}

const USER_42: [&str; 4] = ["--domain", "api", "--key", "user=42"];

fn with<'a>(head: &[&'a str], tail: &[&'a str]) -> Vec<&'a str> {
    [head, tail].concat()
}

#[test]
fn a_block_is_obeyed_listed_and_deleted() {
    let server = start("override-block");
    let set = admin_ok(
        &server,
        &with(
            &["override", "set"],
            &with(&USER_42, &["--block", "--reason", "abuse\n<script>"]),
        ),
    );
    assert_eq!(
        set.trim(),
        "override set on api|user=42: blocked, no expiry (reason: abuse\\n<script>)"
    );
    assert_eq!(check(&server, "42").0, "OVER_LIMIT");
    assert_eq!(check(&server, "43").0, "OK", "other users keep their limit");

    let list = admin_ok(&server, &["override", "list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    for header in ["DOMAIN", "ENTRIES", "ACTION", "LIMIT", "EXPIRES", "REASON"] {
        assert!(lines[0].contains(header), "{list}");
    }
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        row,
        [
            "api",
            "user=42",
            "blocked",
            "-",
            "never",
            "abuse\\n<script>"
        ],
        "one line, control characters escaped: {list}"
    );
    let listed = admin_json(&server, &["override", "list"]);
    assert_eq!(listed["overrides"][0]["action"], "blocked", "{listed}");
    assert_eq!(listed["overrides"][0]["reason"], "abuse\n<script>");

    let deleted = admin_ok(&server, &with(&["override", "delete"], &USER_42));
    assert!(
        deleted.contains("override deleted on api|user=42"),
        "{deleted}"
    );
    assert_eq!(check(&server, "42").0, "OK", "the configured limit again");
    assert_eq!(
        admin_ok(&server, &["override", "list"]).trim(),
        "no overrides"
    );
    assert_fails(
        &admin(&server, &with(&["override", "delete"], &USER_42)),
        1,
        "no override is set on api|user=42",
    );
    // What only the server checks comes back as its problem's detail.
    let mut too_many = vec!["override", "set", "--domain", "api", "--block"];
    for _ in 0..17 {
        too_many.extend(["--key", "k=v"]);
    }
    assert_fails(
        &admin(&server, &too_many),
        1,
        "the server answered 400: entries: a key has at most 16 descriptor entries",
    );
    server.terminate();
}

#[test]
fn a_limit_override_sends_its_rate_algorithm_and_ttl() {
    let server = start("override-limit");
    let stored = admin_json(
        &server,
        &with(
            &["override", "set"],
            &with(
                &USER_42,
                &[
                    "--limit",
                    "1/min",
                    "--algorithm",
                    "fixed_window",
                    "--ttl",
                    "1h",
                ],
            ),
        ),
    );
    assert_eq!(stored["action"], "limit", "{stored}");
    assert_eq!(
        stored["rate_limit"],
        serde_json::json!({"unit": "minute", "requests_per_unit": 1, "algorithm": "fixed_window"})
    );
    let created = stored["created_at_unix_ms"].as_u64().expect("created");
    assert_eq!(
        stored["expires_at_unix_ms"].as_u64(),
        Some(created + 3_600_000)
    );
    assert_eq!(check(&server, "42").0, "OK");
    let (code, status) = check(&server, "42");
    assert_eq!(code, "OVER_LIMIT", "1 per minute: {status}");
    assert_eq!(status["limit"]["name"], "override");

    let list = admin_ok(&server, &["override", "list"]);
    assert!(list.contains("1/minute (fixed_window)"), "{list}");
    assert!(list.contains(" UTC"), "an expiry: {list}");
    let status = admin_ok(&server, &with(&["status"], &USER_42));
    assert!(
        status.contains("override   limit 1/minute (fixed_window), until "),
        "{status}"
    );
    assert!(status.contains("remaining  0 of 1"), "{status}");
    server.terminate();
}

#[test]
fn status_shows_what_is_left_and_reset_gives_it_back() {
    let server = start("status-reset");
    let user_7 = ["--domain", "api", "--key", "user=7"];
    assert_eq!(check(&server, "7").0, "OK");
    let status = admin_ok(&server, &with(&["status"], &user_7));
    let lines: Vec<&str> = status.lines().collect();
    assert_eq!(lines[0], "key        api|user=7", "{status}");
    assert_eq!(
        lines[1], "rule       api.user: 3 per hour (gcra)",
        "{status}"
    );
    assert_eq!(lines[2], "override   none", "{status}");
    assert!(
        lines[3].starts_with("remaining  2 of 3, all 3 again in "),
        "{status}"
    );
    assert_eq!(
        lines[4], "why        rule api.user allows 3 per hour",
        "{status}"
    );

    check(&server, "7");
    check(&server, "7");
    assert_eq!(check(&server, "7").0, "OVER_LIMIT");
    let lookup = admin_json(&server, &with(&["status"], &user_7));
    assert_eq!(lookup["state"]["remaining"], 0, "{lookup}");

    let reset = admin_ok(&server, &with(&["reset"], &user_7));
    assert_eq!(
        reset.trim(),
        "reset api|user=7 (rule api.user): its whole limit is available again"
    );
    let lookup = admin_json(&server, &with(&["status"], &user_7));
    assert_eq!(lookup["state"]["remaining"], 3, "{lookup}");
    assert_eq!(check(&server, "7").1["limit_remaining"], 2);

    assert_fails(
        &admin(&server, &["reset", "--domain", "api", "--key", "nobody=x"]),
        1,
        "nothing to reset: no limited rule applies to api|nobody=x",
    );
    // Entries go in flag order; a name without `=` has an empty value.
    let lookup = admin_json(
        &server,
        &[
            "status", "--domain", "api", "--key", "user", "--key", "path=/x",
        ],
    );
    assert_eq!(lookup["key"], "api|user=|path=/x", "{lookup}");
    assert_eq!(lookup["rule"], Value::Null);
    let status = admin_ok(&server, &["status", "--domain", "api", "--key", "nobody=x"]);
    assert!(status.contains("rule       none matches"), "{status}");
    assert!(
        status.contains("remaining  not counted (no limited rule applies)"),
        "{status}"
    );
    server.terminate();
}

#[test]
fn a_wrong_token_is_refused_changes_nothing_and_is_never_printed() {
    let server = start("wrong-token");
    let url = url(&server);
    let wrong = "not-the-token-5f3a";
    for args in [
        with(&["override", "set"], &with(&USER_42, &["--block"])),
        vec!["override", "list"],
        with(&["status"], &USER_42),
        with(&["reset"], &USER_42),
        with(&["override", "delete"], &USER_42),
    ] {
        // The flag wins over the environment, as everywhere in clap.
        let output = sluice(
            &[("SLUICE_ADMIN_TOKEN", TOKEN)],
            &with(&args, &["--server", &url, "--token", wrong]),
        );
        assert_fails(
            &output,
            1,
            "the admin token was refused (--token / SLUICE_ADMIN_TOKEN)",
        );
        let all = format!("{}{}", stdout(&output), stderr(&output));
        assert!(!all.contains(wrong), "{args:?} printed the token: {all}");
        assert!(!all.contains(TOKEN), "{args:?} printed the token: {all}");
    }
    assert_eq!(
        admin_ok(&server, &["override", "list"]).trim(),
        "no overrides"
    );
    assert_eq!(check(&server, "42").0, "OK");

    // A token that cannot go into a header is a usage error that does not repeat it.
    let output = sluice(
        &[("SLUICE_SERVER", &url), ("SLUICE_ADMIN_TOKEN", "sec ret")],
        &["override", "list"],
    );
    assert_fails(&output, 2, "'--token <TOKEN>'");
    assert!(!stderr(&output).contains("sec ret"), "{}", stderr(&output));
    server.terminate();
}

#[test]
fn a_server_without_an_admin_token_says_the_api_is_disabled() {
    let dir = temp_dir("admin-disabled");
    let server = ServeProcess::start(&dir, &[]);
    assert_fails(
        &admin(&server, &["override", "list"]),
        1,
        "the admin API is disabled on this server (start it with --admin-token)",
    );
    server.terminate();
}

#[test]
fn an_unreachable_server_is_named() {
    let port = sluice_testkit::free_port().expect("a free port");
    let url = format!("http://127.0.0.1:{port}");
    let output = sluice(
        &[("SLUICE_ADMIN_TOKEN", TOKEN)],
        &["override", "list", "--server", &url],
    );
    assert_fails(
        &output,
        1,
        &format!("cannot connect to the sluice server at {url} (--server / SLUICE_SERVER)"),
    );
}

#[test]
fn bad_values_are_usage_errors_naming_the_flag() {
    // Should a value pass by mistake, the command finds no server rather than a real one.
    let port = sluice_testkit::free_port().expect("a free port");
    let nowhere = format!("http://127.0.0.1:{port}");
    let env = [("SLUICE_SERVER", nowhere.as_str())];
    let set = |extra: &[&str]| {
        let args = with(
            &["override", "set", "--token", TOKEN],
            &with(&USER_42, extra),
        );
        sluice(&env, &args)
    };
    for (extra, want) in [
        (
            &["--limit", "10/fortnight"][..],
            "invalid value '10/fortnight' for '--limit <N/UNIT>': unknown unit \"fortnight\"",
        ),
        (
            &["--limit", "0/min"],
            "'--limit <N/UNIT>': the count must be at least 1",
        ),
        (
            &["--limit", "100"],
            "invalid value '100' for '--limit <N/UNIT>'",
        ),
        (
            &["--block", "--ttl", "500ms"],
            "'--ttl <DURATION>': must be at least 1s",
        ),
        (&["--block", "--ttl", "1x"], "'--ttl <DURATION>'"),
        (&["--block", "--unlimited"], "cannot be used with"),
        (&[], "<--limit <N/UNIT>|--unlimited|--block>"),
        (
            &["--block", "--algorithm", "gcra"],
            "'--block' cannot be used with '--algorithm <NAME>'",
        ),
        (
            &["--limit", "5/s", "--algorithm", "leaky"],
            "'--algorithm <NAME>'",
        ),
        (
            &["--block", "--server", "https://sluice.example.com"],
            "'--server <URL>': https is not supported yet",
        ),
    ] {
        assert_fails(&set(extra), 2, want);
    }
    assert_fails(
        &sluice(
            &env,
            &[
                "status", "--domain", "api", "--key", "=42", "--token", TOKEN,
            ],
        ),
        2,
        "'--key <NAME=VALUE>'",
    );
    assert_fails(
        &sluice(&env, &["status", "--domain", "api", "--key", "user=42"]),
        2,
        "--token <TOKEN>",
    );
    assert_fails(
        &sluice(
            &[("SLUICE_SERVER", &nowhere), ("SLUICE_ADMIN_TOKEN", TOKEN)],
            &["status", "--domain", "api"],
        ),
        2,
        "--key <NAME=VALUE>",
    );
}
