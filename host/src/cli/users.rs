//! `warden users`: the operator's side of identities, compatible with `symflow users`.
//!
//! Works on the configured store and reads only the config's outline ([`Outline`]): the store
//! path and the services (`type:external_id`) its integrations declare.
//!
//! The CSV layout is symflow's: one column per service headed `service_type:external_id`,
//! the user's email under `sym:cloud` (`email` is accepted too), and symflow's own `User ID`
//! column, which warden has no use for, ignored on import.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;

use crate::cli::escape::escape_control;
use crate::config::Outline;
use crate::store::StoredIdentity;
use crate::store::blocking::{UserAdmin, open_for_users};

/// The email column's header, as symflow writes it.
pub const EMAIL_COLUMN: &str = "sym:cloud";
const EMAIL_COLUMN_ALIAS: &str = "email";
/// The most a users file may hold (a million users is about 64 MiB).
const MAX_IMPORT_BYTES: u64 = 64 << 20;
/// symflow's own user ids; warden keys users by email.
const SYMFLOW_ID_COLUMN: &str = "User ID";

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Every user with their identities, one column per service.
    List,
    /// One user's identities.
    ListIdentities { email: String },
    /// Create or update one identity of a user (creating the user if needed).
    SetIdentity {
        email: String,
        /// The service type, e.g. `custom`.
        #[arg(long)]
        service: String,
        /// The integration's external_id, e.g. the VictorOps API ID.
        #[arg(long)]
        service_id: String,
        /// The user's id in that service.
        #[arg(long)]
        user_id: String,
        /// Accept a service that no integration in the config declares.
        #[arg(long)]
        force: bool,
    },
    /// Delete one identity of a user; the user stays.
    DeleteIdentity {
        email: String,
        #[arg(long)]
        service: String,
        #[arg(long)]
        service_id: String,
    },
    /// Delete a user and all their identities.
    Delete { email: String },
    /// Write every user to FILE (`-`: standard output) in symflow's CSV layout.
    Export { file: PathBuf },
    /// Create and update identities from FILE (symflow's CSV layout), all or nothing.
    ///
    /// An empty cell leaves an existing identity as it is (delete with `delete-identity`);
    /// users not in the file are left alone.
    Import {
        file: PathBuf,
        /// Show what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Accept columns for services that no integration in the config declares.
        #[arg(long)]
        force: bool,
    },
}

/// A `service_type:external_id` pair, as written in column headers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Service {
    pub kind: String,
    pub external_id: String,
}

impl Service {
    pub fn new(kind: &str, external_id: &str) -> Self {
        Self {
            kind: kind.to_string(),
            external_id: external_id.to_string(),
        }
    }

    fn parse_header(header: &str) -> Option<Self> {
        let (kind, external_id) = header.split_once(':')?;
        let (kind, external_id) = (kind.trim(), external_id.trim());
        (!kind.is_empty() && !external_id.is_empty()).then(|| Self::new(kind, external_id))
    }

    fn of(identity: &StoredIdentity) -> Self {
        Self::new(&identity.service, &identity.service_id)
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.external_id)
    }
}

/// Runs one `warden users` command, writing its report to `out`.
pub fn run(config: &Path, command: UsersCommand, out: &mut dyn Write) -> Result<(), String> {
    let outline = Outline::load(config).map_err(|e| e.summary())?;
    let store = open_for_users(&outline.store_path, outline.store_url.as_ref())
        .map_err(|e| e.to_string())?;
    let users = Users {
        outline: &outline,
        store: &*store,
    };
    let w = |r: std::io::Result<()>| r.map_err(|e| format!("cannot write the output: {e}"));
    match command {
        UsersCommand::List => w(users.list(out)),
        UsersCommand::ListIdentities { email } => {
            let identities = users.identities(&email)?;
            w(write_identities(out, &identities))
        }
        UsersCommand::SetIdentity {
            email,
            service,
            service_id,
            user_id,
            force,
        } => {
            let outcome = users.set_identity(&email, &service, &service_id, &user_id, force)?;
            w(writeln!(out, "{outcome}"))
        }
        UsersCommand::DeleteIdentity {
            email,
            service,
            service_id,
        } => {
            users.delete_identity(&email, &service, &service_id)?;
            w(writeln!(
                out,
                "deleted {service}:{service_id} of {}",
                email.trim()
            ))
        }
        UsersCommand::Delete { email } => {
            let removed = users.delete_user(&email)?;
            w(writeln!(
                out,
                "deleted user {} and {removed} identity(ies)",
                email.trim()
            ))
        }
        UsersCommand::Export { file } => {
            let csv = users.export()?;
            if file == Path::new("-") {
                w(out.write_all(csv.as_bytes()))
            } else {
                write_export(&file, &csv)?;
                let n = store.users().map_err(|e| e.to_string())?.len();
                w(writeln!(out, "exported {n} user(s) to {}", file.display()))
            }
        }
        UsersCommand::Import {
            file,
            dry_run,
            force,
        } => {
            let bytes = if file == Path::new("-") {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(
                    &mut std::io::Read::take(std::io::stdin(), MAX_IMPORT_BYTES + 1),
                    &mut bytes,
                )
                .map_err(|e| format!("cannot read standard input: {e}"))?;
                if bytes.len() as u64 > MAX_IMPORT_BYTES {
                    return Err(format!(
                        "standard input holds more than {} MiB: import it in parts",
                        MAX_IMPORT_BYTES >> 20
                    ));
                }
                bytes
            } else {
                crate::config::read_bounded(&file, MAX_IMPORT_BYTES).map_err(|e| {
                    format!(
                        "cannot read {}: {e}",
                        escape_control(&file.display().to_string())
                    )
                })?
            };
            let text = utf8_text(bytes).map_err(|line| {
                let error = ImportError {
                    line,
                    message: "not UTF-8 text (a spreadsheet's export in another encoding: save it as CSV UTF-8)".into(),
                };
                import_errors(&file, &[error])
            })?;
            let plan = users
                .plan_import(&text, force)
                .map_err(|errors| import_errors(&file, &errors))?;
            w(plan.write(out))?;
            if dry_run {
                w(writeln!(out, "dry run: nothing was changed"))
            } else {
                store
                    .apply(&plan.changes())
                    .map_err(|e| format!("the import was rolled back, nothing was changed: {e}"))?;
                w(writeln!(out, "imported {}", file.display()))
            }
        }
    }
}

/// Writes an export to `file`, which holds every user's identities: a new file is made
/// readable and writable by its owner only (0600, whatever the umask); an existing regular
/// file is overwritten and keeps its mode. A symbolic link at `file` is not followed (one
/// planted in a shared folder would send the export wherever it points), and anything but a
/// regular file is refused before it is written (the open does not wait for a FIFO's
/// reader). Errors name the path, escaped.
fn write_export(file: &Path, csv: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |why: String| {
        format!(
            "cannot write {}: {why}",
            escape_control(&file.display().to_string())
        )
    };
    let mut handle = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(file)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => fail("it is a symbolic link, which is not followed".into()),
            _ => fail(e.to_string()),
        })?;
    let metadata = handle.metadata().map_err(|e| fail(e.to_string()))?;
    if !metadata.is_file() {
        return Err(fail("it is not a regular file".into()));
    }
    // One planted by another user (in a shared folder) would stay theirs to read.
    let mine = rustix::process::geteuid().as_raw();
    if std::os::unix::fs::MetadataExt::uid(&metadata) != mine {
        return Err(fail(format!(
            "it belongs to another user (uid {}); remove it or export elsewhere",
            std::os::unix::fs::MetadataExt::uid(&metadata)
        )));
    }
    handle.set_len(0).map_err(|e| fail(e.to_string()))?;
    handle
        .write_all(csv.as_bytes())
        .map_err(|e| fail(e.to_string()))
}

/// One line per problem: the cells it quotes are the file's, escaped.
/// `bytes` as text; else the line where they stop being UTF-8.
fn utf8_text(bytes: Vec<u8>) -> Result<String, u64> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        valid.iter().filter(|b| **b == b'\n').count() as u64 + 1
    })
}

fn import_errors(file: &Path, errors: &[ImportError]) -> String {
    let file = escape_control(&file.display().to_string()).into_owned();
    let mut text = format!(
        "{} problem(s) in {file}; nothing was imported:",
        errors.len()
    );
    for e in errors {
        text.push_str(&format!("\n{file}:{}", escape_control(&e.to_string())));
    }
    text
}

/// The store seen through the config's declared services.
pub struct Users<'a> {
    pub outline: &'a Outline,
    pub store: &'a dyn UserAdmin,
}

/// What `set-identity` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetOutcome {
    Created(StoredIdentity),
    Updated {
        identity: StoredIdentity,
        previous_user_id: String,
    },
    Unchanged(StoredIdentity),
}

impl fmt::Display for SetOutcome {
    /// Every part escaped: a plugin persisted some of them (`identities.persist` checks only
    /// their length and NUL), and none may start a line or reach the terminal raw.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, i, previous) = match self {
            SetOutcome::Created(i) => ("created", i, None),
            SetOutcome::Updated {
                identity: i,
                previous_user_id,
            } => ("updated", i, Some(previous_user_id)),
            SetOutcome::Unchanged(i) => ("unchanged", i, None),
        };
        write!(
            f,
            "{what} {}:{} of {}: ",
            escape_control(&i.service),
            escape_control(&i.service_id),
            escape_control(&i.email)
        )?;
        if let Some(previous) = previous {
            write!(f, "{} -> ", escape_control(previous))?;
        }
        write!(f, "{}", escape_control(&i.user_id))
    }
}

impl Users<'_> {
    fn store_error(e: crate::store::StoreError) -> String {
        e.to_string()
    }

    /// The services to show as columns: those declared, and any other the store holds.
    fn columns(&self) -> Result<Vec<Service>, String> {
        let mut columns: BTreeSet<Service> = self
            .outline
            .services
            .keys()
            .map(|(kind, id)| Service::new(kind, id))
            .collect();
        for user in self.store.users().map_err(Self::store_error)? {
            columns.extend(user.identities.iter().map(Service::of));
        }
        Ok(columns.into_iter().collect())
    }

    fn check_declared(&self, service: &Service, force: bool) -> Result<(), String> {
        if force || self.outline.declares(&service.kind, &service.external_id) {
            return Ok(());
        }
        Err(format!(
            "no integration in {} declares service `{}` (type `{}`, external_id `{}`); declared: {}. Pass --force to use it anyway",
            escape_control(&self.outline.source.display().to_string()),
            escape_control(&service.to_string()),
            escape_control(&service.kind),
            escape_control(&service.external_id),
            self.declared_list()
        ))
    }

    fn declared_list(&self) -> String {
        if self.outline.services.is_empty() {
            return "none".into();
        }
        self.outline
            .services
            .keys()
            .map(|(k, id)| escape_control(&format!("{k}:{id}")).into_owned())
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn list(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let columns = self.columns().map_err(std::io::Error::other)?;
        let users = self.store.users().map_err(std::io::Error::other)?;
        let mut rows = vec![
            std::iter::once("email".to_string())
                .chain(columns.iter().map(ToString::to_string))
                .collect::<Vec<_>>(),
        ];
        for user in &users {
            let by_service: HashMap<Service, &str> = user
                .identities
                .iter()
                .map(|i| (Service::of(i), i.user_id.as_str()))
                .collect();
            rows.push(
                std::iter::once(user.email.clone())
                    .chain(
                        columns
                            .iter()
                            .map(|c| by_service.get(c).copied().unwrap_or("-").to_string()),
                    )
                    .collect(),
            );
        }
        write_table(out, &rows)?;
        writeln!(out, "{} user(s)", users.len())
    }

    pub fn identities(&self, email: &str) -> Result<Vec<StoredIdentity>, String> {
        let email = valid_email(email)?;
        match self.store.user(email).map_err(Self::store_error)? {
            Some(user) => Ok(user.identities),
            None => Err(format!("no user {email} in the store")),
        }
    }

    pub fn set_identity(
        &self,
        email: &str,
        service: &str,
        service_id: &str,
        user_id: &str,
        force: bool,
    ) -> Result<SetOutcome, String> {
        let email = valid_email(email)?;
        let service = Service::new(
            valid_value("--service", service)?,
            valid_value("--service-id", service_id)?,
        );
        let user_id = valid_value("--user-id", user_id)?;
        self.check_declared(&service, force)?;
        let previous = self
            .store
            .lookup_identity(email, &service.kind, &service.external_id)
            .map_err(Self::store_error)?;
        let stored = self
            .store
            .persist_identity(email, &service.kind, &service.external_id, user_id)
            .map_err(Self::store_error)?;
        Ok(match previous {
            None => SetOutcome::Created(stored),
            Some(p) if p.user_id == user_id => SetOutcome::Unchanged(stored),
            Some(p) => SetOutcome::Updated {
                identity: stored,
                previous_user_id: p.user_id,
            },
        })
    }

    pub fn delete_identity(
        &self,
        email: &str,
        service: &str,
        service_id: &str,
    ) -> Result<(), String> {
        let email = valid_email(email)?;
        if self
            .store
            .delete_identity(email, service.trim(), service_id.trim())
            .map_err(Self::store_error)?
        {
            Ok(())
        } else {
            Err(format!(
                "{email} has no identity for {}:{}",
                service.trim(),
                service_id.trim()
            ))
        }
    }

    /// Deletes the user; returns how many identities went with them.
    pub fn delete_user(&self, email: &str) -> Result<usize, String> {
        let email = valid_email(email)?;
        let Some(user) = self.store.user(email).map_err(Self::store_error)? else {
            return Err(format!("no user {email} in the store"));
        };
        self.store.delete_user(email).map_err(Self::store_error)?;
        Ok(user.identities.len())
    }

    /// Every user in symflow's CSV layout.
    pub fn export(&self) -> Result<String, String> {
        let columns = self.columns()?;
        let mut writer = csv::Writer::from_writer(Vec::new());
        let header: Vec<String> = std::iter::once(EMAIL_COLUMN.to_string())
            .chain(columns.iter().map(ToString::to_string))
            .collect();
        let csv_error = |e: csv::Error| format!("cannot write CSV: {e}");
        writer.write_record(&header).map_err(csv_error)?;
        for user in self.store.users().map_err(Self::store_error)? {
            let by_service: HashMap<Service, &str> = user
                .identities
                .iter()
                .map(|i| (Service::of(i), i.user_id.as_str()))
                .collect();
            let row: Vec<&str> = std::iter::once(user.email.as_str())
                .chain(
                    columns
                        .iter()
                        .map(|c| by_service.get(c).copied().unwrap_or("")),
                )
                .collect();
            writer.write_record(&row).map_err(csv_error)?;
        }
        let bytes = writer
            .into_inner()
            .map_err(|e| format!("cannot write CSV: {e}"))?;
        String::from_utf8(bytes).map_err(|e| format!("cannot write CSV: {e}"))
    }

    /// Reads `text` and works out every change it asks for, against the store as it is now.
    /// Every bad row is reported, each with its line number.
    pub fn plan_import(&self, text: &str, force: bool) -> Result<ImportPlan, Vec<ImportError>> {
        let mut errors = Vec::new();
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(text.as_bytes());
        let mut records = reader.records();

        let header = match records.next() {
            Some(Ok(header)) => header,
            Some(Err(e)) => return Err(vec![csv_error(text, &e)]),
            None => {
                return Err(vec![ImportError {
                    line: 1,
                    message: format!(
                        "the file is empty; expected a header row with `{EMAIL_COLUMN}` and one `service_type:external_id` column per service"
                    ),
                }]);
            }
        };
        let header_line = header.position().map_or(1, |p| line_of(text, p));
        let mut email_column = None;
        let mut columns: Vec<Option<Service>> = Vec::new();
        let mut seen_columns: HashMap<String, usize> = HashMap::new();
        for (index, raw) in header.iter().enumerate() {
            let name = raw.trim_start_matches('\u{feff}').trim();
            let column_error = |message: String| ImportError {
                line: header_line,
                message: format!("column {} (`{name}`): {message}", index + 1),
            };
            // A service's heading as it is read (`custom: pd-1` is `custom:pd-1`): two
            // columns for one service would both be written, the last one winning.
            let heading =
                Service::parse_header(name).map_or_else(|| name.to_string(), |s| s.to_string());
            if let Some(first) = seen_columns.insert(heading, index) {
                errors.push(column_error(format!(
                    "the same heading as column {}",
                    first + 1
                )));
                columns.push(None);
                continue;
            }
            if name.eq_ignore_ascii_case(EMAIL_COLUMN)
                || name.eq_ignore_ascii_case(EMAIL_COLUMN_ALIAS)
            {
                if email_column.is_some() {
                    errors.push(column_error("a second email column".into()));
                } else {
                    email_column = Some(index);
                }
                columns.push(None);
            } else if name.eq_ignore_ascii_case(SYMFLOW_ID_COLUMN) {
                columns.push(None);
            } else if let Some(service) = Service::parse_header(name) {
                if let Err(message) = self.check_declared(&service, force) {
                    errors.push(column_error(message));
                }
                columns.push(Some(service));
            } else {
                errors.push(column_error(format!(
                    "not a service: headings are `{EMAIL_COLUMN}` (the email), `{SYMFLOW_ID_COLUMN}` (ignored) or `service_type:external_id`, e.g. `custom:aaabbcccddee`"
                )));
                columns.push(None);
            }
        }
        let Some(email_column) = email_column else {
            errors.push(ImportError {
                line: header_line,
                message: format!(
                    "no email column: one column must be headed `{EMAIL_COLUMN}` (or `{EMAIL_COLUMN_ALIAS}`)"
                ),
            });
            return Err(errors);
        };

        let existing = match self.store.users() {
            Ok(users) => users,
            Err(e) => {
                errors.push(ImportError {
                    line: 0,
                    message: e.to_string(),
                });
                return Err(errors);
            }
        };
        let existing: HashMap<String, BTreeMap<Service, String>> = existing
            .into_iter()
            .map(|u| {
                (
                    u.email.to_ascii_lowercase(),
                    u.identities
                        .iter()
                        .map(|i| (Service::of(i), i.user_id.clone()))
                        .collect(),
                )
            })
            .collect();

        let mut plan = ImportPlan::default();
        let mut emails_seen: HashMap<String, u64> = HashMap::new();
        for record in records {
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    errors.push(csv_error(text, &e));
                    continue;
                }
            };
            let line = record.position().map_or(0, |p| line_of(text, p));
            let row_error = |message: String| ImportError { line, message };
            if record.len() != header.len() {
                errors.push(row_error(format!(
                    "{} field(s), but the header has {}",
                    record.len(),
                    header.len()
                )));
                continue;
            }
            let email = match valid_email(&record[email_column]) {
                Ok(email) => email.to_string(),
                Err(message) => {
                    errors.push(row_error(message));
                    continue;
                }
            };
            let key = email.to_ascii_lowercase();
            if let Some(first) = emails_seen.insert(key.clone(), line) {
                errors.push(row_error(format!(
                    "{email} is already on line {first} (emails are compared ignoring case)"
                )));
                continue;
            }
            let current = existing.get(&key);
            if current.is_none() {
                plan.new_users.push(email.clone());
            }
            for (index, service) in columns.iter().enumerate() {
                let Some(service) = service else { continue };
                let cell = record[index].trim();
                let previous = current.and_then(|c| c.get(service)).cloned();
                if cell.is_empty() {
                    if let Some(user_id) = previous {
                        plan.kept.push(identity(&email, service, &user_id));
                    }
                    continue;
                }
                if let Err(message) = valid_value(&format!("column `{service}`"), cell) {
                    errors.push(row_error(message));
                    continue;
                }
                let wanted = identity(&email, service, cell);
                match previous {
                    None => plan.created.push(wanted),
                    Some(p) if p == cell => plan.unchanged.push(wanted),
                    Some(p) => plan.updated.push((wanted, p)),
                }
            }
        }
        if errors.is_empty() {
            Ok(plan)
        } else {
            Err(errors)
        }
    }
}

fn identity(email: &str, service: &Service, user_id: &str) -> StoredIdentity {
    StoredIdentity {
        email: email.to_string(),
        service: service.kind.clone(),
        service_id: service.external_id.clone(),
        user_id: user_id.to_string(),
    }
}

fn write_identities(out: &mut dyn Write, identities: &[StoredIdentity]) -> std::io::Result<()> {
    let mut rows = vec![vec!["service".to_string(), "user_id".to_string()]];
    rows.extend(
        identities
            .iter()
            .map(|i| vec![format!("{}:{}", i.service, i.service_id), i.user_id.clone()]),
    );
    write_table(out, &rows)?;
    writeln!(out, "{} identity(ies)", identities.len())
}

fn write_table(out: &mut dyn Write, rows: &[Vec<String>]) -> std::io::Result<()> {
    // Plugins persist identities with text of their choosing: a cell stays on its line.
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| escape_control(c).into_owned()).collect())
        .collect();
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    Ok(())
}

/// An email is `local@domain`, without spaces or control characters.
pub fn valid_email(email: &str) -> Result<&str, String> {
    let email = email.trim();
    let bad = || {
        if email.is_empty() {
            "no email".to_string()
        } else {
            format!("`{email}` is not an email address")
        }
    };
    if !crate::store::is_email_address(email) {
        return Err(bad());
    }
    Ok(email)
}

fn valid_value<'v>(what: &str, value: &'v str) -> Result<&'v str, String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{what} contains a control character"));
    }
    Ok(value)
}

mod import;

pub use import::{ImportError, ImportPlan};
use import::{csv_error, line_of};

#[cfg(test)]
mod tests;
