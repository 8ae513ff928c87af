//! The `warden` command's subcommands that are more than a call into the library:
//! `warden users`, `warden new plugin`, `warden bench`, and how plugin text is printed.

pub mod bench;
pub mod build;
pub mod escape;
pub mod scaffold;
pub mod users;
