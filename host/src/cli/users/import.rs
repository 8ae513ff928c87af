//! An import, worked out before anything is written: the rows that are wrong (each with its
//! line), and the plan of what would change, which `--dry-run` prints and a real import
//! commits in one transaction.

use std::fmt;
use std::io::Write;

use crate::cli::escape::escape_control;
use crate::store::{StoreChange, StoredIdentity};

/// The line a record starts on. The csv reader counts a record from the end of the one
/// before, so blank lines in between would be blamed; skip them.
pub(super) fn line_of(text: &str, position: &csv::Position) -> u64 {
    let start = (position.byte() as usize).min(text.len());
    let blank = text.as_bytes()[start..]
        .iter()
        .take_while(|b| matches!(b, b'\n' | b'\r'))
        .filter(|b| **b == b'\n')
        .count();
    position.line() + blank as u64
}

pub(super) fn csv_error(text: &str, e: &csv::Error) -> ImportError {
    let line = e.position().map_or(0, |p| line_of(text, p));
    let message = match e.kind() {
        csv::ErrorKind::Utf8 { err, .. } => format!("not valid UTF-8 (field {})", err.field() + 1),
        _ => format!("not valid CSV: {e}"),
    };
    ImportError { line, message }
}

/// One bad row (or heading) of an import file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    pub line: u64,
    pub message: String,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.line, self.message)
    }
}

/// What an import changes, worked out before anything is written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportPlan {
    pub new_users: Vec<String>,
    pub created: Vec<StoredIdentity>,
    /// The identity as it will be, and the user id it replaces.
    pub updated: Vec<(StoredIdentity, String)>,
    pub unchanged: Vec<StoredIdentity>,
    /// Existing identities under an empty cell: an import never deletes.
    pub kept: Vec<StoredIdentity>,
}

impl ImportPlan {
    pub fn changes(&self) -> Vec<StoreChange> {
        self.new_users
            .iter()
            .map(|email| StoreChange::EnsureUser {
                email: email.clone(),
            })
            .chain(
                self.created
                    .iter()
                    .chain(self.updated.iter().map(|(i, _)| i))
                    .cloned()
                    .map(StoreChange::SetIdentity),
            )
            .collect()
    }

    /// The plan, a line a change. Emails and ids are escaped: a plugin persisted some of
    /// them (`identities.persist` checks only their length and NUL), and none may start a
    /// line of its own or reach the terminal raw.
    pub fn write(&self, out: &mut dyn Write) -> std::io::Result<()> {
        for email in &self.new_users {
            writeln!(out, "create user   {}", escape_control(email))?;
        }
        for i in &self.created {
            writeln!(out, "create        {}", Shown(i))?;
        }
        for (i, previous) in &self.updated {
            writeln!(
                out,
                "update        {} (was {})",
                Shown(i),
                escape_control(previous)
            )?;
        }
        for i in &self.kept {
            writeln!(
                out,
                "keep          {} (empty cell; delete with `warden users delete-identity`)",
                Shown(i)
            )?;
        }
        writeln!(
            out,
            "{} user(s) to create, {} identity(ies) to create, {} to update, {} unchanged, {} kept under empty cells",
            self.new_users.len(),
            self.created.len(),
            self.updated.len(),
            self.unchanged.len(),
            self.kept.len()
        )
    }
}

/// An identity as `EMAIL SERVICE:SERVICE_ID = USER_ID`, each part escaped.
struct Shown<'a>(&'a StoredIdentity);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = self.0;
        write!(
            f,
            "{} {}:{} = {}",
            escape_control(&i.email),
            escape_control(&i.service),
            escape_control(&i.service_id),
            escape_control(&i.user_id)
        )
    }
}
