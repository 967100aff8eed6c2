//! The command line (clap). Every command takes `--data-dir` and `--config`.

use crate::telemetry::LogFormat;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "gatehouse", version, about = "Self-hosted, all-in-one security server", propagate_version = true)]
pub struct Cli {
    /// Data folder: database, generated keys and certificate [default: ./gatehouse-data]
    #[arg(long, global = true, value_name = "DIR", env = "GATEHOUSE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Configuration file (TOML); GATEHOUSE_* environment variables override it
    #[arg(long, global = true, value_name = "FILE", env = "GATEHOUSE_CONFIG")]
    pub config: Option<PathBuf>,

    /// Log format (overrides log.format)
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (zero configuration: https://127.0.0.1:8443 with generated keys)
    Serve {
        /// Address to listen on (overrides server.listen); port 0 picks a free port
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<SocketAddr>,
    },
    /// Create the data folder, master key, certificate, database and first admin, then exit
    Init,
    /// Validate the configuration and the files it names; exit non-zero with the fix
    CheckConfig,
    /// Apply pending database migrations and exit
    Migrate,
    /// Print the OpenAPI document (JSON) to standard output
    Openapi,
    /// Copy the database to FILE with SQLite's online backup (safe while the server runs)
    Backup {
        /// Destination file; must not exist
        file: PathBuf,
    },
    /// Replace the database with the backup FILE (checked first; the server must be stopped)
    Restore {
        /// A file written by `gatehouse backup`
        file: PathBuf,
    },
    /// Manage platform accounts
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Audit log tools
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// JWT signing keys and master keys
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The vault of sealed values
    Vault {
        #[command(subcommand)]
        command: VaultCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum VaultCommand {
    /// Open every data key and every sealed value; report what fails (never a value)
    Verify,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Publish a new signing key now (in auth.jwt_algorithm). It appears in
    /// /.well-known/jwks.json at once and signs after the publication window
    /// (2 × auth.jwks_max_age_seconds); the old key stays until its tokens have expired.
    /// Safe while the server runs: it picks the key up within 15 seconds.
    Rotate,
    /// Add a new master key and re-wrap every data key under it, in batches
    /// (vault.rewrap_batch_size per transaction). Safe while the server runs; after a crash, run
    /// it again to finish. The old key moves to <data_dir>/master-keys/ until `keys retire`.
    RotateMaster,
    /// Delete an older master key's file; refused while any data key is still wrapped by it
    Retire {
        /// The key id (`mk-…`), as `rotate-master` printed it
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a platform admin, or reset an existing account's password and make it admin
    AddAdmin {
        /// The admin's email address
        #[arg(long)]
        email: String,
        /// File holding the password (at least 12 characters); `-` reads standard input
        #[arg(long, value_name = "FILE")]
        password_file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the signed checkpoints and walk the hash chain; name the first broken record
    Verify {
        /// A checkpoint exported earlier (`GET /v1/audit/checkpoints`, one item as JSON) that the
        /// log must still contain; repeat for several
        #[arg(long = "anchor", value_name = "FILE")]
        anchors: Vec<std::path::PathBuf>,
    },
}
