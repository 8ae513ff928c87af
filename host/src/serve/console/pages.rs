//! The console's HTML, as maud templates compiled into the binary. Every value shown goes
//! through maud's escaping (`(value)`); nothing here writes unescaped text but the doctype.

use std::time::SystemTime;

use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use super::forms::Form;
use crate::config::{FieldSpec, FieldType, Role};
use crate::serve::lifecycle::RequestView;
use crate::store::requests::{AuditEntry, Cursor, State, rfc3339};

/// Who is signed in, shown on every page, with the token their forms carry.
pub struct Who<'a> {
    pub user: &'a str,
    pub role: Role,
    pub csrf: &'a str,
}

/// A message at the top of a page: an error, or news.
pub enum Notice<'a> {
    Error(&'a str),
    Info(&'a str),
}

pub fn layout(who: Option<&Who>, title: &str, notice: Option<Notice>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · warden" }
                link rel="stylesheet" href="/console.css";
            }
            body {
                header {
                    a.brand href="/" { "warden" }
                    @if let Some(who) = who {
                        nav {
                            a href="/" { "Requests" }
                            a href="/new" { "New request" }
                            @if who.role >= Role::Admin { a href="/audit" { "Audit" } }
                        }
                        div.who {
                            span #signed-in { (who.user) " · " span.role { (who.role.as_str()) } }
                            form method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(who.csrf);
                                button type="submit" #logout { "Sign out" }
                            }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    @match notice {
                        Some(Notice::Error(m)) => p.notice.error #error role="alert" { (m) },
                        Some(Notice::Info(m)) => p.notice.info #info { (m) },
                        None => {},
                    }
                    (body)
                }
            }
        }
    }
}

pub fn sign_in(next: &str) -> Markup {
    html! {
        form.card method="post" action="/signin" {
            input type="hidden" name="next" value=(next);
            label for="token" { "API token" }
            input #token type="password" name="token" autocomplete="current-password" required;
            p.hint { "A token of the config's [serve.tokens.*]; it is exchanged for a session and not kept in the page." }
            button type="submit" #signin { "Sign in" }
        }
    }
}

/// How long ago `at` (RFC 3339) was, roughly.
fn ago(at: &str) -> String {
    let Ok(then) = humantime::parse_rfc3339(at) else {
        return at.to_string();
    };
    let secs = SystemTime::now()
        .duration_since(then)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

/// The `reason` field a requester gave, else the request's decision reason.
/// A request's reason as the list shows it: its first 200 characters (its page shows all).
fn reason_of(view: &RequestView) -> String {
    const SHOWN_CHARS: usize = 200;
    let reason = match view.fields.get("reason") {
        Some(Value::String(reason)) => reason.as_str(),
        _ => view.reason.as_deref().unwrap_or_default(),
    };
    match reason.char_indices().nth(SHOWN_CHARS) {
        Some((end, _)) => format!("{}…", &reason[..end]),
        None => reason.to_string(),
    }
}

fn state_badge(state: State) -> Markup {
    html! { span class={ "state " (state.as_str()) } { (state.as_str()) } }
}

pub fn list(
    requests: &[RequestView],
    flows: &[String],
    state: Option<State>,
    flow: Option<&str>,
    next: Option<&Cursor>,
) -> Markup {
    let older = next.map(|cursor| {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if let Some(state) = state {
            query.append_pair("state", state.as_str());
        }
        if let Some(flow) = flow {
            query.append_pair("flow", flow);
        }
        query.append_pair("before", &cursor.to_string());
        format!("/?{}", query.finish())
    });
    html! {
        form.filters method="get" action="/" {
            label { "State "
                select name="state" {
                    option value="" { "any" }
                    @for s in State::ALL {
                        option value=(s.as_str()) selected[state == Some(s)] { (s.as_str()) }
                    }
                }
            }
            label { "Flow "
                select name="flow" {
                    option value="" { "any" }
                    @for f in flows {
                        option value=(f) selected[flow == Some(f.as_str())] { (f) }
                    }
                }
            }
            button type="submit" { "Filter" }
        }
        @if requests.is_empty() {
            p #empty { "No requests." }
        } @else {
            table.requests #requests {
                thead { tr { th { "Who" } th { "Flow" } th { "Reason" } th { "Asked" } th { "State" } } }
                tbody {
                    @for r in requests {
                        tr data-id=(r.id) {
                            td data-label="Who" { a href={ "/requests/" (r.id) } { (r.requester) } }
                            td.nowrap data-label="Flow" { (r.flow) }
                            td.reason data-label="Reason" { (reason_of(r)) }
                            td.nowrap data-label="Asked" { time datetime=(r.created_at) { (ago(&r.created_at)) } }
                            td data-label="State" { (state_badge(r.state)) }
                        }
                    }
                }
            }
        }
        @if let Some(older) = older {
            p.more { a #older href=(older) { "Older requests" } }
        }
    }
}

/// Why the Approve and Deny buttons are or are not on a request's page.
pub enum Decide {
    Allowed,
    Missing(String),
}

fn field_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(", "),
        Value::Object(o) if o.len() == 1 && o.contains_key("seconds") => {
            let secs = o["seconds"].as_u64().unwrap_or(0);
            humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
        }
        other => other.to_string(),
    }
}

fn text(entry: &Value, key: &str) -> String {
    match &entry[key] {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Who decided, from the last transition to approved or denied: a decision straight from
/// `requested` is the plugin's fast track (a human decides only pending requests).
pub(super) fn decided_by(view: &RequestView) -> Option<(String, bool)> {
    view.history.as_ref()?.iter().rev().find_map(|e| {
        let to = e["to"].as_str()?;
        (e["kind"] == "transition" && (to == "approved" || to == "denied"))
            .then(|| (text(e, "actor"), e["from"] == "requested"))
    })
}

/// Who approved so far (each once), from the approvals a flow needing several records.
pub fn approvals(view: &RequestView) -> Vec<Approval> {
    let mut seen: Vec<Approval> = Vec::new();
    for e in view.history.iter().flatten() {
        if e["kind"] == "approval" {
            let approval = Approval::of(e);
            if !seen
                .iter()
                .any(|s| s.counted.eq_ignore_ascii_case(&approval.counted))
            {
                seen.push(approval);
            }
        }
    }
    seen
}

/// One approval so far: who it counts as (an admin who named someone else counts as the
/// admin, as the lifecycle counts it) and how the page names it.
pub struct Approval {
    pub counted: String,
    pub shown: String,
}

impl Approval {
    fn of(entry: &serde_json::Value) -> Self {
        let approver = text(entry, "approver");
        match entry["by"].as_str() {
            Some(admin) => Self {
                counted: admin.to_string(),
                shown: format!("{approver} (named by admin {admin})"),
            },
            None => Self {
                counted: approver.clone(),
                shown: approver,
            },
        }
    }
}

pub fn request(view: &RequestView, who: &Who, decide: &Decide, revoke: bool) -> Markup {
    let decided_by = decided_by(view);
    let approvals = approvals(view);
    html! {
        section.card {
            p.summary {
                (state_badge(view.state)) " "
                span #flow { "flow " (view.flow) } " · requested by " span #requester { (view.requester) }
                @if !view.created_by.trim().eq_ignore_ascii_case(view.requester.trim()) {
                    " · filed by " span #filed-by { (view.created_by) }
                }
                " · " time datetime=(view.created_at) { (ago(&view.created_at)) }
            }
            dl #decision {
                dt { "Decision" } dd #decision-value { (view.decision) }
                @if let Some(reason) = &view.reason { dt { "Reason" } dd #reason { (reason) } }
                @if let Some((by, fast_track)) = &decided_by {
                    dt { "Decided by" }
                    dd #decided-by { (by) @if *fast_track { " (fast-tracked)" } }
                }
                @if !approvals.is_empty() {
                    dt { "Approved by" } dd #approvals {
                        (approvals.iter().map(|a| a.shown.as_str()).collect::<Vec<_>>().join(", "))
                    }
                }
                @if let Some(expires) = &view.expires_at { dt { "Access ends" } dd { (expires) } }
            }
            @if !view.fields.is_empty() {
                h2 { "Fields" }
                dl #fields {
                    @for (name, value) in &view.fields { dt { (name) } dd { (field_text(value)) } }
                }
            }
        }
        @if view.state == State::Pending {
            section.card #actions {
                @match decide {
                    Decide::Allowed => {
                        form method="post" action={ "/requests/" (view.id) "/decide" } {
                            input type="hidden" name="csrf" value=(who.csrf);
                            label for="decision-reason" { "Reason" }
                            textarea #decision-reason name="reason" rows="2" maxlength="2000" {}
                            div.buttons {
                                button #approve type="submit" name="verdict" value="approve" { "Approve" }
                                button #deny.deny type="submit" name="verdict" value="deny" { "Deny" }
                            }
                        }
                    }
                    Decide::Missing(why) => p #no-actions { (why) },
                }
            }
        }
        @if revoke {
            section.card #revoke-access {
                form method="post" action={ "/requests/" (view.id) "/revoke" } {
                    input type="hidden" name="csrf" value=(who.csrf);
                    label for="revoke-reason" { "Why end this access now?" }
                    textarea #revoke-reason name="reason" rows="2" maxlength="2000" {}
                    div.buttons {
                        button #revoke.deny type="submit" { "Revoke access" }
                    }
                }
            }
        }
        h2 { "History" }
        div.scroll {
            table #history {
                thead { tr { th { "When" } th { "Step" } th { "What" } th { "Detail" } } }
                tbody {
                    @for e in view.history.iter().flatten() {
                        tr {
                            td data-label="When" { (text(e, "at")) }
                            td data-label="Step" { (text(e, "step")) }
                            @if e["kind"] == "hook" {
                                td data-label="What" { "hook " (text(e, "hook")) ": " (text(e, "outcome")) }
                                td data-label="Detail" {
                                    @if e["ran"] == false { "not run" } @else { (format!("{:.1} ms", e["elapsed_ms"].as_f64().unwrap_or(0.0))) }
                                    @if let Some(r) = e["reason"].as_str() { " · " (r) }
                                    @if let Some(err) = e["error"].as_str() {
                                        span.error { " · error (" (text(e, "blame")) "): " (err) }
                                    }
                                }
                            } @else if e["kind"] == "approval" {
                                td data-label="What" { "approval " (text(e, "count")) " of " (text(e, "required")) }
                                td data-label="Detail" {
                                    "by " (Approval::of(e).shown)
                                    @if let Some(r) = e["reason"].as_str() { " · " (r) }
                                }
                            } @else if e["kind"] == "notification" {
                                td data-label="What" { "notification " (text(e, "event")) " to " (text(e, "channel")) ": given up" }
                                td data-label="Detail" {
                                    span.error { (text(e, "attempts")) " attempts · " (text(e, "error")) }
                                }
                            } @else {
                                td data-label="What" { (text(e, "from")) " → " (text(e, "to")) }
                                td data-label="Detail" {
                                    "by " (text(e, "actor"))
                                    @if let Some(r) = e["reason"].as_str() { " · " (r) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub fn new_index(flows: &[String]) -> Markup {
    html! {
        @if flows.is_empty() { p { "No flows are configured." } }
        ul.flows #flows {
            @for f in flows { li { a href={ "/new/" (f) } { (f) } } }
        }
    }
}

/// A flow's request form: one input per declared field, or a reason when it declares none;
/// filled in with `sent` when it comes back with an error.
pub fn new_form(
    flow: &str,
    declared: &[(&String, &FieldSpec)],
    who: &Who,
    idempotency_key: &str,
    sent: Option<&Form>,
) -> Markup {
    let sent = |id: &str| sent.and_then(|f| f.get(id)).unwrap_or_default().to_string();
    html! {
        form.card #new-request method="post" action={ "/new/" (flow) } {
            input type="hidden" name="csrf" value=(who.csrf);
            input type="hidden" name="idem" value=(idempotency_key);
            @if declared.is_empty() {
                label for="f.reason" { "Reason" }
                textarea id="f.reason" name="f.reason" rows="3" maxlength="2000" { (sent("f.reason")) }
            }
            @for (name, spec) in declared {
                @let id = format!("f.{name}");
                @match spec.kind {
                    FieldType::Bool => label.check {
                        input type="checkbox" id=(id) name=(id) checked[!sent(&id).is_empty()]; " " (name)
                    },
                    FieldType::List => {
                        label for=(id) { (name) @if spec.required { " *" } span.hint { " one per line" } }
                        textarea id=(id) name=(id) rows="3" required[spec.required] { (sent(&id)) }
                    }
                    kind => {
                        label for=(id) { (name) @if spec.required { " *" }
                            @if kind == FieldType::Duration { span.hint { " e.g. 30m, 2h" } } }
                        input id=(id) name=(id) type=(if kind == FieldType::Int { "number" } else { "text" })
                            value=(sent(&id)) required[spec.required];
                    }
                }
            }
            button #submit type="submit" { "Request access" }
        }
    }
}

pub fn audit(entries: &[AuditEntry], older: Option<i64>) -> Markup {
    html! {
        div.scroll {
            table #audit {
                thead { tr { th { "#" } th { "When" } th { "Who" } th { "Action" } th { "Request" } th { "Detail" } } }
                tbody {
                    @for e in entries {
                        tr {
                            td data-label="#" { (e.seq) }
                            td data-label="When" { (rfc3339(e.at)) }
                            td data-label="Who" { (e.actor) }
                            td data-label="Action" { (e.action) }
                            td data-label="Request" {
                                @if let Some(id) = &e.request_id { a href={ "/requests/" (id) } { (id) } }
                            }
                            td data-label="Detail" { code { (e.detail.to_string()) } }
                        }
                    }
                }
            }
        }
        nav.pages {
            a href="/audit" { "Newest" }
            @if let Some(before) = older { " · " a #older href={ "/audit?before=" (before) } { "Older" } }
        }
    }
}
