//! The command line (see DESIGN.md "Command line"). Commands that create something accept
//! `--json` and then print one JSON object on stdout; logs go to stderr.
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::clock::SystemClock;
use crate::config::Settings;
use crate::error::Error;
use crate::secrets::Secret;
use crate::services::{ClientSpec, Services};

#[derive(Parser, Debug)]
#[command(
    name = "ma-idp",
    version,
    about = "Identity provider for Music Assistant households (OAuth 2.0 / OpenID Connect)"
)]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(long, global = true, env = "MA_IDP_CONFIG")]
    pub config: Option<PathBuf>,
    /// Database URL: postgres://... or sqlite://...; default SQLite in the data directory.
    #[arg(long, global = true, env = "MA_IDP_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Data directory (SQLite database, master key file).
    #[arg(long, global = true, env = "MA_IDP_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

// Parsed once per run: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum ProviderCmd {
    /// Add a provider to a tenant; prints the redirect URI to register at the upstream.
    /// The client secret is read from standard input with --client-secret-stdin.
    Add {
        #[arg(long)]
        tenant: String,
        /// `amazon` (Login with Amazon) or `oidc` (any OpenID Connect provider).
        #[arg(long)]
        kind: String,
        /// The name in URLs; defaults to the kind.
        #[arg(long)]
        slug: Option<String>,
        /// The name on the sign-in button, e.g. "Amazon".
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        client_id: String,
        #[arg(long)]
        client_secret_stdin: bool,
        /// Amazon: NA, EU or FE (default NA).
        #[arg(long)]
        region: Option<String>,
        /// OIDC: the issuer URL (discovery).
        #[arg(long)]
        issuer: Option<String>,
        /// Scopes, space-separated (Amazon: profile or profile:user_id).
        #[arg(long)]
        scope: Option<String>,
        #[arg(long)]
        authorization_endpoint: Option<String>,
        #[arg(long)]
        token_endpoint: Option<String>,
        /// Amazon: the profile endpoint; OIDC: userinfo.
        #[arg(long)]
        userinfo_endpoint: Option<String>,
        #[arg(long)]
        jwks_uri: Option<String>,
        /// Create a member on the first sign-in of an unlinked identity (off by default).
        #[arg(long)]
        auto_create: bool,
        /// Link an unlinked identity to the member with the same e-mail when the upstream
        /// says it is verified (off by default).
        #[arg(long)]
        link_by_email: bool,
        #[arg(long)]
        json: bool,
    },
    /// List a tenant's providers.
    List {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        json: bool,
    },
    /// Change a provider's settings; only the options given change (its kind and slug stay).
    /// A new client secret is read from standard input with --client-secret-stdin. An empty
    /// endpoint (e.g. --token-endpoint "") clears that override.
    Set {
        #[arg(long)]
        tenant: String,
        /// The provider's slug.
        slug: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        client_id: Option<String>,
        #[arg(long, conflicts_with = "no_client_secret")]
        client_secret_stdin: bool,
        /// Forget the stored client secret (a public upstream client).
        #[arg(long)]
        no_client_secret: bool,
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        issuer: Option<String>,
        #[arg(long)]
        scope: Option<String>,
        #[arg(long)]
        authorization_endpoint: Option<String>,
        #[arg(long)]
        token_endpoint: Option<String>,
        #[arg(long)]
        userinfo_endpoint: Option<String>,
        #[arg(long)]
        jwks_uri: Option<String>,
        #[arg(long)]
        auto_create: Option<bool>,
        #[arg(long)]
        link_by_email: Option<bool>,
        /// false: no sign-in button and no sign-ins with it; its links stay.
        #[arg(long)]
        enabled: Option<bool>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a provider and unlink every identity linked through it.
    Remove {
        #[arg(long)]
        tenant: String,
        /// The provider's slug.
        slug: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the server (migrates first unless --no-migrate).
    Serve {
        #[arg(long, env = "MA_IDP_LISTEN")]
        listen: Option<String>,
        #[arg(long, env = "MA_IDP_PUBLIC_URL")]
        public_url: Option<String>,
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply migrations and exit.
    Migrate,
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Manage users.
    #[command(subcommand)]
    User(UserCmd),
    /// Manage OAuth clients.
    #[command(subcommand)]
    Client(ClientCmd),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Manage upstream sign-in providers (Login with Amazon, OpenID Connect).
    #[command(subcommand)]
    Provider(ProviderCmd),
    /// Work with tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Copy the SQLite database to FILE while ma-idp runs (a consistent snapshot). For
    /// PostgreSQL use pg_dump (see the README).
    Backup {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Replace the SQLite database with a backup. Stop ma-idp first.
    Restore {
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
    },
}

/// `token verify`'s token: `None` for "read it from standard input". Never in a `Debug`.
#[derive(Clone)]
pub struct TokenArg(Option<String>);

impl std::str::FromStr for TokenArg {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(TokenArg((s != "-").then(|| s.to_string())))
    }
}

impl std::fmt::Debug for TokenArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "TokenArg(..)"
        } else {
            "TokenArg(stdin)"
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Check an access token offline against the issuer's JWKS: exit 0 and print its claims,
    /// or exit 1 with the reason.
    Verify {
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        audience: String,
        /// A scope the token must carry.
        #[arg(long)]
        scope: Option<String>,
        /// The token; omitted or `-`, it is read from standard input (a token on the command
        /// line shows in the process list and the shell's history).
        #[arg(default_value = "-", hide_default_value = true)]
        token: TokenArg,
    },
}

#[derive(Subcommand, Debug)]
pub enum TenantCmd {
    /// Create a tenant (a household) with its signing keys.
    Create {
        slug: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Change a tenant's settings.
    Set {
        slug: String,
        #[arg(long)]
        name: Option<String>,
        /// Refuse password sign-in; members sign in with passkeys.
        #[arg(long, value_name = "BOOL")]
        passkeys_required: Option<bool>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Create a user; the password is read from standard input with --password-stdin.
    Create {
        #[arg(long)]
        tenant: String,
        username: String,
        #[arg(long)]
        password_stdin: bool,
        /// An operator: signs in to the admin UI and manages every tenant.
        #[arg(long, conflicts_with = "tenant_admin")]
        admin: bool,
        /// An admin of this tenant only.
        #[arg(long)]
        tenant_admin: bool,
        #[arg(long)]
        json: bool,
    },
    /// Print a one-time link with which a member enrolls a passkey (no password needed).
    EnrollLink {
        #[arg(long)]
        tenant: String,
        username: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct ClientCreate {
    #[arg(long)]
    pub tenant: String,
    #[arg(long)]
    pub name: String,
    /// Register the three regional Alexa redirect URIs for this Vendor ID.
    #[arg(long, value_name = "VENDOR_ID")]
    pub alexa: Option<String>,
    #[arg(long = "redirect-uri", value_name = "URI")]
    pub redirect_uris: Vec<String>,
    /// A public client (no secret, PKCE required).
    #[arg(long)]
    pub public: bool,
    /// Choose the client_id instead of a random one.
    #[arg(long)]
    pub client_id: Option<String>,
    /// Allowed scopes (repeat); default: openid profile email offline_access music.control music.read user:read.
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// The access token's `aud` (default music-assistant).
    #[arg(long)]
    pub audience: Option<String>,
    /// Also allow the client_credentials grant.
    #[arg(long)]
    pub client_credentials: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum ClientCmd {
    /// Create a client. Its secret is printed once.
    Create(ClientCreate),
}

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Sign with the next signing keys (published since the last rotation) and publish new
    /// next keys; old keys stay published until their tokens have expired. Refused while the
    /// next keys are younger than the JWKS's cache time (300 s, plus the server's 5 s key cache)
    /// unless `--force`.
    Rotate {
        #[arg(long)]
        tenant: String,
        /// Rotate even if the next keys were published moments ago (a key is compromised):
        /// resource servers holding an older JWKS refuse the new tokens until they refetch.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
}

/// Logging as `RUST_LOG`, else the `log` setting, says; a filter that does not parse is an
/// error naming where it came from (it was replaced by `info` without a word).
fn init_logging(settings: &Settings) -> anyhow::Result<()> {
    let (source, mut filter) = match std::env::var("RUST_LOG") {
        Ok(f) => ("RUST_LOG", f),
        Err(_) => ("the log setting (MA_IDP_LOG)", settings.log.clone()),
    };
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&filter) {
        anyhow::bail!(
            "{source} is not a log filter ({e}): {filter:?}; e.g. \"info\" or \"info,ma_idp=debug\""
        );
    }
    // SQL statements can carry hashes and sealed keys: keep the database layers quiet
    // unless asked for by name.
    for noisy in ["sqlx", "sea_orm", "sea_orm_migration"] {
        if !filter.contains(noisy) {
            filter.push_str(&format!(",{noisy}=warn"));
        }
    }
    let env = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,sea_orm=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env)
        .with_writer(std::io::stderr);
    let _ = if settings.log_json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    Ok(())
}

fn describe(e: &anyhow::Error) -> String {
    match e.downcast_ref::<Error>() {
        Some(Error::OAuth { description, .. }) => description.clone(),
        Some(Error::Page { message, .. }) => message.clone(),
        _ => format!("{e:#}"),
    }
}

pub fn main() -> ExitCode {
    crate::memory::tune_allocator();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

fn settings_for(cli: &Cli) -> anyhow::Result<Settings> {
    let mut s = Settings::load(cli.config.as_deref())?;
    if let Some(u) = &cli.database_url {
        s.database_url = Some(u.clone());
    }
    if let Some(d) = &cli.data_dir {
        s.data_dir = d.clone();
    }
    if let Cmd::Serve {
        listen, public_url, ..
    } = &cli.cmd
    {
        if let Some(l) = listen {
            s.listen = l.clone();
        }
        if let Some(p) = public_url {
            s.public_url = p.clone();
        }
    }
    s.validate().map_err(|e| anyhow::anyhow!(e))?;
    Ok(s)
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Cmd::Token(TokenCmd::Verify {
        issuer,
        audience,
        scope,
        token,
    }) = &cli.cmd
    {
        let token = match token.0.as_deref() {
            Some(t) => t.to_string(),
            None => {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                s
            }
        };
        return verify_token(issuer, audience, scope.as_deref(), &token);
    }
    let settings = settings_for(&cli)?;
    init_logging(&settings)?;
    if let Cmd::Restore { from } = &cli.cmd {
        return restore(&settings, from);
    }
    if let Cmd::Serve { no_migrate, .. } = cli.cmd {
        return actix_web::rt::System::new().block_on(serve(settings, no_migrate));
    }
    // Opening a database that is not there creates an empty one: a backup would save that
    // (a wrong --data-dir or working directory) and say it backed up.
    if let Cmd::Backup { .. } = &cli.cmd
        && let Ok(db) = sqlite_path(&settings)
        && !db.exists()
    {
        anyhow::bail!(
            "no database at {} (check --data-dir or database_url): nothing to back up",
            db.display()
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let services = Services::init(settings, Arc::new(SystemClock)).await?;
        // A backup copies the database as it is: it must not change the schema under the
        // server that may be serving it (an ma-idp of another version).
        if !matches!(cli.cmd, Cmd::Backup { .. }) {
            services.store.migrate().await?;
        }
        let out = command(&services, cli.cmd).await;
        services.store.clone().close().await.ok();
        out
    })
}

/// The SQLite file behind the configured database URL.
fn sqlite_path(settings: &Settings) -> anyhow::Result<PathBuf> {
    let url = settings.database_url();
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| {
            anyhow::anyhow!("restore is for SQLite; for PostgreSQL use pg_restore (see the README)")
        })?;
    Ok(PathBuf::from(rest.split('?').next().unwrap_or(rest)))
}

/// The lock file beside a SQLite database (its name with `.lock` appended): `ma-idp serve`
/// holds it shared while it runs, `restore` exclusively while it replaces the database. The
/// system releases it when the process ends, however it ends (no stale lock after a crash).
fn sqlite_lock(db: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(PathBuf::from(name))
}

/// For `serve` on a SQLite file: the shared lock that keeps `restore` from replacing the
/// database under this server (held until the returned file drops). `None` on PostgreSQL or
/// an in-memory database.
fn serving_lock(settings: &Settings) -> anyhow::Result<Option<std::fs::File>> {
    let Ok(db) = sqlite_path(settings) else {
        return Ok(None);
    };
    if db.as_os_str().to_string_lossy().starts_with(':')
        || settings.database_url().contains("mode=memory")
    {
        return Ok(None);
    }
    let f = sqlite_lock(&db)
        .map_err(|e| anyhow::anyhow!("cannot open the lock file beside {}: {e}", db.display()))?;
    match f.try_lock_shared() {
        Ok(()) => Ok(Some(f)),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "a restore of {} is running: start ma-idp when it has finished",
            db.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            anyhow::bail!("cannot lock the lock file beside {}: {e}", db.display())
        }
    }
}

fn restore(settings: &Settings, from: &std::path::Path) -> anyhow::Result<()> {
    let target = sqlite_path(settings)?;
    // A server still serving this database would keep writing to the file (and its WAL) we
    // replace: refuse while one holds its lock.
    let lock = sqlite_lock(&target).map_err(|e| {
        anyhow::anyhow!("cannot open the lock file beside {}: {e}", target.display())
    })?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "ma-idp is serving {} (or another restore runs): stop it first",
            target.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            anyhow::bail!("cannot lock the lock file beside {}: {e}", target.display())
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Check the backup is an ma-idp database before touching anything.
    rt.block_on(async {
        let url = format!("sqlite://{}?mode=ro", from.display());
        let store = crate::store::Store::from_connection(sea_orm::Database::connect(&url).await?);
        let ok = store.has_table("tenants").await?;
        store.close().await.ok();
        if !ok {
            anyhow::bail!("{} is not an ma-idp database", from.display());
        }
        Ok(())
    })?;
    let tmp = target.with_extension("db.restoring");
    std::fs::copy(from, &tmp)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    // The old database's write-ahead log and shared memory (and a rollback journal) must go:
    // replayed onto the restored file they would mix old pages into it.
    for side in sqlite_side_files(&target) {
        match std::fs::remove_file(&side) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                anyhow::bail!("cannot remove {}: {e}", side.display())
            }
            _ => {}
        }
    }
    std::fs::rename(&tmp, &target)?;
    eprintln!("restored {} from {}", target.display(), from.display());
    drop(lock);
    Ok(())
}

/// SQLite's files beside a database file: its name with `-wal`, `-shm` and `-journal` appended
/// (`idp.sqlite` → `idp.sqlite-wal`; not the extension replaced).
fn sqlite_side_files(db: &std::path::Path) -> [PathBuf; 3] {
    ["-wal", "-shm", "-journal"].map(|suffix| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    })
}

fn verify_token(
    issuer: &str,
    audience: &str,
    scope: Option<&str>,
    token: &str,
) -> anyhow::Result<()> {
    let mut cfg = ma_idp_validator::Config::new(issuer, audience);
    cfg.required_scope = scope.map(str::to_string);
    let v = ma_idp_validator::Validator::new(cfg);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let claims = rt
        .block_on(v.validate(token.trim()))
        .map_err(|e| anyhow::anyhow!("token rejected: {e}"))?;
    println!("{}", serde_json::to_string_pretty(&claims)?);
    Ok(())
}

async fn serve(settings: Settings, no_migrate: bool) -> anyhow::Result<()> {
    let listen = settings.listen.clone();
    let services = Services::init(settings, Arc::new(SystemClock)).await?;
    // Held while serving (dropped when `serve` returns).
    let _serving = serving_lock(&services.settings)?;
    if !no_migrate {
        services.store.migrate().await?;
    }
    if services.keys.master_key_opens().await? == Some(false) {
        anyhow::bail!(
            "the master key does not open this database's signing keys: ma-idp was started with \
             another master key (MA_IDP_MASTER_KEY, or {}) than the one this database was made \
             with. Start it with the database's own master key (keep a copy beside every backup)",
            services.settings.data_dir.join("master.key").display()
        );
    }
    if services.store.autovacuum_off().await {
        tracing::warn!(
            "PostgreSQL's autovacuum is off: ma-idp's tables will bloat and its query plans go stale as they grow (turn autovacuum on, or run VACUUM ANALYZE regularly)"
        );
    }
    if services.settings.plain_http_off_loopback() {
        tracing::warn!(
            public_url = %services.settings.public_url,
            "public_url is plain http on a host other than this machine: browsers send its cookies and passwords unencrypted and refuse passkeys; serve it over https (a TLS reverse proxy) and set public_url to the https address"
        );
    }
    let listener = std::net::TcpListener::bind(&listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let tenants = services.tenants_with_keys().await?;
    tracing::info!(listen = %listen, public_url = %services.settings.public_url, "ma-idp serving");
    if tenants.is_empty() {
        eprintln!(
            "ma-idp is running at {} — no tenant yet. Create one:\n  ma-idp tenant create home --name \"Our home\"",
            services.settings.public_url
        );
    }
    for t in &tenants {
        eprintln!("tenant {:<16} issuer {}", t.slug, services.issuer(t));
    }
    let admin = match services.settings.admin_listen() {
        Some(a) => {
            let l = std::net::TcpListener::bind(a)
                .map_err(|e| anyhow::anyhow!("cannot listen on {a} (admin_listen): {e}"))?;
            eprintln!("admin UI at {}/admin", services.settings.admin_base_url());
            Some(crate::app::build_admin_server(services.clone(), l)?)
        }
        None => None,
    };
    if let Some(path) = services.setup_link_if_needed().await? {
        // Printed for the person starting the server, never logged: it creates the operator.
        eprintln!(
            "No operator account yet. Open this one-time link (valid 24 hours) to create it:\n  {}{path}",
            services.settings.admin_base_url()
        );
    }
    let server = crate::app::build_server(services.clone(), listener)?;
    actix_web::rt::spawn(crate::app::housekeeping(services));
    match admin {
        Some(a) => {
            let (r1, r2) = futures_util::future::join(server, a).await;
            r1?;
            r2?;
        }
        None => server.await?,
    }
    Ok(())
}

fn print(json_out: bool, value: serde_json::Value, text: String) {
    if json_out {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

async fn command(svc: &Services, cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Serve { .. } | Cmd::Token(_) | Cmd::Restore { .. } => Ok(()),
        Cmd::Backup { out } => {
            // Made empty and readable by its owner only before anything is written to it
            // (SQLite's `VACUUM INTO` writes into an empty file): it will hold password
            // hashes and sealed keys.
            let mut file = std::fs::OpenOptions::new();
            file.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                file.mode(0o600);
            }
            file.open(&out).map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => {
                    anyhow::anyhow!("{} already exists; choose a new file", out.display())
                }
                _ => anyhow::anyhow!("cannot create {}: {e}", out.display()),
            })?;
            if let Err(e) = svc.store.backup_sqlite(&out).await {
                let _ = std::fs::remove_file(&out);
                return Err(e.into());
            }
            // It holds password hashes and sealed keys: readable by its owner only.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o600))?;
            }
            eprintln!(
                "backed up the database to {}\nAlso keep a copy of the master key ({} or MA_IDP_MASTER_KEY): without it the backup's keys and client secrets are useless.",
                out.display(),
                svc.settings.data_dir.join("master.key").display()
            );
            Ok(())
        }
        Cmd::Migrate => {
            eprintln!("migrations applied");
            Ok(())
        }
        Cmd::Tenant(TenantCmd::Create { slug, name, json }) => {
            let t = svc.create_tenant(&slug, name.as_deref(), "cli").await?;
            let issuer = svc.issuer(&t);
            print(
                json,
                json!({"id": t.id, "slug": t.slug, "name": t.name, "issuer": issuer,
                       "discovery": format!("{issuer}/.well-known/openid-configuration")}),
                format!("created tenant {} ({})\nissuer: {issuer}", t.slug, t.name),
            );
            Ok(())
        }
        Cmd::Tenant(TenantCmd::Set {
            slug,
            name,
            passkeys_required,
            json,
        }) => {
            let t = svc.tenant(&slug).await?;
            let t = svc
                .update_tenant(&t, name.as_deref(), passkeys_required, "cli")
                .await?;
            print(
                json,
                json!({"slug": t.slug, "name": t.name, "passkeys_required": t.passkeys_required}),
                format!(
                    "tenant {}: name {:?}, passkeys required: {}",
                    t.slug, t.name, t.passkeys_required
                ),
            );
            Ok(())
        }
        Cmd::User(UserCmd::EnrollLink {
            tenant,
            username,
            json,
        }) => {
            let t = svc.tenant(&tenant).await?;
            let u = svc
                .store
                .user_by_username(&t.id, &crate::login::normalize_username(&username))
                .await?
                .ok_or_else(|| anyhow::anyhow!("no user {username:?} in tenant {tenant}"))?;
            let (url, expires_at) = svc.create_enrollment_link(&t, &u, "cli").await?;
            print(
                json,
                json!({"tenant": t.slug, "username": u.username, "url": url, "expires_at": expires_at}),
                format!(
                    "enrollment link for {} (works once, expires {}):\n{url}",
                    u.username,
                    crate::http::pages::format_time(expires_at)
                ),
            );
            Ok(())
        }
        Cmd::User(UserCmd::Create {
            tenant,
            username,
            password_stdin,
            admin,
            tenant_admin,
            json,
        }) => {
            let t = svc.tenant(&tenant).await?;
            let password = if password_stdin {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                let trimmed = s.trim_end_matches(['\r', '\n']).to_string();
                s.clear();
                Some(Secret::new(trimmed))
            } else {
                None
            };
            let role = match (admin, tenant_admin) {
                (true, _) => "operator",
                (false, true) => "admin",
                (false, false) => "member",
            };
            let u = svc
                .create_user_with(
                    &t,
                    crate::services::NewUserSpec {
                        username: username.clone(),
                        display_name: None,
                        email: None,
                        role: role.to_string(),
                    },
                    password.as_ref(),
                    "cli",
                )
                .await?;
            print(
                json,
                json!({"id": u.id, "tenant": t.slug, "username": u.username, "role": u.role,
                       "has_password": password.is_some()}),
                format!("created user {} in {} ({})", u.username, t.slug, u.role),
            );
            Ok(())
        }
        Cmd::Client(ClientCmd::Create(c)) => {
            let t = svc.tenant(&c.tenant).await?;
            let created = svc
                .create_client(
                    &t,
                    ClientSpec {
                        name: c.name,
                        client_id: c.client_id,
                        redirect_uris: c.redirect_uris,
                        alexa_vendor_id: c.alexa,
                        public: c.public,
                        scopes: (!c.scopes.is_empty()).then_some(c.scopes),
                        audience: c.audience,
                        client_credentials: c.client_credentials,
                    },
                    "cli",
                )
                .await?;
            let base = svc.settings.base_url().to_string();
            let issuer = svc.issuer(&t);
            let m = &created.client;
            let secret = created.secret.as_ref().map(|s| s.expose().to_string());
            let value = json!({
                "tenant": t.slug,
                "client_id": m.client_id,
                "client_secret": secret,
                "name": m.name,
                "public": m.public,
                "redirect_uris": created.redirect_uris,
                "scopes": m.scopes,
                "audience": m.audience,
                "authorization_uri": format!("{issuer}/authorize"),
                "token_uri": format!("{issuer}/token"),
                "alexa_authorization_uri": format!("{base}/alexa/authorize"),
                "alexa_token_uri": format!("{base}/alexa/token"),
                "issuer": issuer,
            });
            let mut text = format!(
                "created client {} ({})\nclient_id:     {}\n",
                m.name,
                if m.public { "public" } else { "confidential" },
                m.client_id
            );
            if let Some(s) = &secret {
                text.push_str(&format!(
                    "client_secret: {s}   (shown once: store it now)\n"
                ));
            }
            text.push_str(&format!(
                "authorization: {issuer}/authorize\ntoken:         {issuer}/token\nscopes:        {}\n",
                m.scopes
            ));
            for u in &created.redirect_uris {
                text.push_str(&format!("redirect_uri:  {u}\n"));
            }
            print(c.json, value, text.trim_end().to_string());
            Ok(())
        }
        Cmd::Provider(ProviderCmd::Add {
            tenant,
            kind,
            slug,
            name,
            client_id,
            client_secret_stdin,
            region,
            issuer,
            scope,
            authorization_endpoint,
            token_endpoint,
            userinfo_endpoint,
            jwks_uri,
            auto_create,
            link_by_email,
            json,
        }) => {
            let t = svc.tenant(&tenant).await?;
            let secret = if client_secret_stdin {
                Some(client_secret_from_stdin()?)
            } else {
                None
            };
            let slug = slug.unwrap_or_else(|| kind.clone());
            let default_name = match kind.as_str() {
                "amazon" => "Amazon".to_string(),
                _ => slug.clone(),
            };
            let p = svc
                .add_provider(
                    &t,
                    crate::federation::NewProvider {
                        slug,
                        kind,
                        display_name: name.unwrap_or(default_name),
                        client_id,
                        client_secret: secret,
                        scopes: scope,
                        region,
                        issuer,
                        authorization_endpoint,
                        token_endpoint,
                        userinfo_endpoint,
                        jwks_uri,
                        auto_create,
                        link_by_email,
                    },
                    "cli",
                )
                .await?;
            let redirect = svc.federation_redirect_uri(&t, &p.slug);
            print(
                json,
                json!({"id": p.id, "tenant": t.slug, "slug": p.slug, "kind": p.kind,
                       "name": p.display_name, "redirect_uri": redirect}),
                format!(
                    "added provider {} ({}) to {}; register this redirect URI at the provider:\n{redirect}",
                    p.slug, p.kind, t.slug
                ),
            );
            Ok(())
        }
        Cmd::Provider(ProviderCmd::Set {
            tenant,
            slug,
            name,
            client_id,
            client_secret_stdin,
            no_client_secret,
            region,
            issuer,
            scope,
            authorization_endpoint,
            token_endpoint,
            userinfo_endpoint,
            jwks_uri,
            auto_create,
            link_by_email,
            enabled,
            json,
        }) => {
            use crate::federation::{ProviderChange, SecretChange};
            let t = svc.tenant(&tenant).await?;
            let client_secret = if client_secret_stdin {
                Some(SecretChange::Replace(client_secret_from_stdin()?))
            } else if no_client_secret {
                Some(SecretChange::Remove)
            } else {
                None
            };
            let u = svc
                .update_provider(
                    &t,
                    &slug,
                    ProviderChange {
                        display_name: name,
                        client_id,
                        client_secret,
                        scopes: scope,
                        region,
                        issuer,
                        authorization_endpoint,
                        token_endpoint,
                        userinfo_endpoint,
                        jwks_uri,
                        auto_create,
                        link_by_email,
                        enabled,
                        // The command line changes what is stored now.
                        seen_client_id: None,
                        seen_issuer: None,
                    },
                    "cli",
                )
                .await?
                .ok_or_else(|| no_provider(&t, &slug))?;
            let (p, links_removed) = (u.provider, u.links_removed);
            print(
                json,
                json!({"tenant": t.slug, "slug": p.slug, "kind": p.kind, "name": p.display_name,
                       "client_id": p.client_id, "enabled": p.enabled,
                       "has_client_secret": p.client_secret_enc.is_some(),
                       "links_removed": links_removed}),
                if links_removed > 0 {
                    format!(
                        "changed provider {} of {}; its issuer or client ID changed, so \
                         {links_removed} linked identities were removed",
                        p.slug, t.slug
                    )
                } else {
                    format!("changed provider {} of {}", p.slug, t.slug)
                },
            );
            Ok(())
        }
        Cmd::Provider(ProviderCmd::Remove { tenant, slug, json }) => {
            let t = svc.tenant(&tenant).await?;
            let links = svc
                .remove_provider(&t, &slug, "cli")
                .await?
                .ok_or_else(|| no_provider(&t, &slug))?;
            print(
                json,
                json!({"tenant": t.slug, "slug": slug, "removed": true, "links_removed": links}),
                format!(
                    "removed provider {slug} from {} ({links} linked identities unlinked)",
                    t.slug
                ),
            );
            Ok(())
        }
        Cmd::Provider(ProviderCmd::List { tenant, json }) => {
            let t = svc.tenant(&tenant).await?;
            let ps = svc.store.providers_of_tenant(&t.id).await?;
            let list: Vec<serde_json::Value> = ps
                .iter()
                .map(|p| {
                    json!({"slug": p.slug, "kind": p.kind, "name": p.display_name,
                           "client_id": p.client_id, "enabled": p.enabled,
                           "redirect_uri": svc.federation_redirect_uri(&t, &p.slug)})
                })
                .collect();
            let text = ps
                .iter()
                .map(|p| format!("{:<16} {:<7} {}", p.slug, p.kind, p.display_name))
                .collect::<Vec<_>>()
                .join("\n");
            print(json, json!({ "providers": list }), text);
            Ok(())
        }
        Cmd::Keys(KeysCmd::Rotate {
            tenant,
            force,
            json,
        }) => {
            let t = svc.tenant(&tenant).await?;
            let kids = svc.rotate_keys(&t, "cli", force).await?;
            print(
                json,
                json!({"tenant": t.slug, "active_kids": kids}),
                format!(
                    "rotated keys of {}; now signing with {}",
                    t.slug,
                    kids.join(", ")
                ),
            );
            Ok(())
        }
    }
}

fn no_provider(t: &entity::tenant::Model, slug: &str) -> crate::error::Error {
    crate::error::Error::not_found(format!("tenant {} has no provider {slug:?}", t.slug))
}

/// An upstream client secret from standard input (surrounding white space dropped).
fn client_secret_from_stdin() -> std::io::Result<Secret> {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s)?;
    let trimmed = s.trim().to_string();
    s.clear();
    Ok(Secret::new(trimmed))
}

#[cfg(test)]
mod tests {
    use super::sqlite_side_files;
    use std::path::{Path, PathBuf};

    #[test]
    fn sqlite_side_files_append_to_the_whole_name() {
        for (db, wal) in [
            ("/var/lib/idp/idp.sqlite", "/var/lib/idp/idp.sqlite-wal"),
            ("data/ma-idp.db", "data/ma-idp.db-wal"),
            ("noext", "noext-wal"),
        ] {
            let [w, shm, journal] = sqlite_side_files(Path::new(db));
            assert_eq!(w, PathBuf::from(wal));
            assert_eq!(shm, PathBuf::from(format!("{db}-shm")));
            assert_eq!(journal, PathBuf::from(format!("{db}-journal")));
        }
    }
}
