//! Static checks of the deployment files (docker-compose.yml, Dockerfile, .dockerignore,
//! deploy/) and of the README against the code. No Docker engine is needed: the files are
//! parsed and compared with what ma-idp actually reads — its settings, its environment
//! variables, its command line.
//!
//! One check goes further: it runs ma-idp's own settings loader in a child process with the
//! environment docker-compose.yml gives the ma-idp container (after compose's `${VAR}`
//! interpolation with sample `.env` values), so a value ma-idp cannot parse fails here and not
//! on a household's server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use clap::CommandFactory;
use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

// ---------------------------------------------------------------------------------------------
// helpers

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    let p = repo().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

fn compose() -> Yaml {
    serde_yaml_ng::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is YAML")
}

fn service<'a>(compose: &'a Yaml, name: &str) -> &'a Yaml {
    compose
        .get("services")
        .and_then(|s| s.get(name))
        .unwrap_or_else(|| panic!("docker-compose.yml has no service {name:?}"))
}

fn yaml_str(v: &Yaml) -> String {
    match v {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Null => String::new(),
        other => panic!("expected a scalar, found {other:?}"),
    }
}

fn yaml_list(v: Option<&Yaml>) -> Vec<&Yaml> {
    match v {
        Some(Yaml::Sequence(s)) => s.iter().collect(),
        _ => Vec::new(),
    }
}

/// A service's `environment`, in either of compose's two forms (mapping or `KEY=VALUE` list).
fn environment(svc: &Yaml) -> BTreeMap<String, String> {
    match svc.get("environment") {
        None => BTreeMap::new(),
        Some(Yaml::Mapping(m)) => m.iter().map(|(k, v)| (yaml_str(k), yaml_str(v))).collect(),
        Some(Yaml::Sequence(items)) => items
            .iter()
            .map(|i| {
                let s = yaml_str(i);
                match s.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (s, String::new()),
                }
            })
            .collect(),
        Some(other) => panic!("environment must be a mapping or a list, found {other:?}"),
    }
}

/// The words of a `healthcheck.test`, in either form (list, or one shell string).
fn healthcheck_words(svc: &Yaml) -> Vec<String> {
    let test = svc
        .get("healthcheck")
        .and_then(|h| h.get("test"))
        .expect("service has a healthcheck with a test");
    match test {
        Yaml::Sequence(s) => s.iter().map(yaml_str).collect(),
        Yaml::String(s) => s.split_whitespace().map(str::to_string).collect(),
        other => panic!("healthcheck.test must be a list or a string, found {other:?}"),
    }
}

/// docker compose's variable interpolation (`$$`, `$VAR`, `${VAR}`, `${VAR:-default}`,
/// `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`, `${VAR:+alt}`, `${VAR+alt}`), enough to
/// see what a container receives.
fn interpolate(s: &str, vars: &BTreeMap<&str, &str>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix('{') {
            let end = r
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {s:?}"))?;
            let expr = &r[..end];
            rest = &r[end + 1..];
            let name_len = expr
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expr.len());
            let (name, op) = expr.split_at(name_len);
            let value = vars.get(name).copied();
            let set_nonempty = value.is_some_and(|v| !v.is_empty());
            let resolved = if op.is_empty() {
                value.unwrap_or("").to_string()
            } else if let Some(d) = op.strip_prefix(":-") {
                if set_nonempty { value.unwrap() } else { d }.to_string()
            } else if let Some(d) = op.strip_prefix('-') {
                value.unwrap_or(d).to_string()
            } else if let Some(e) = op.strip_prefix(":?") {
                if !set_nonempty {
                    return Err(format!("{name}: {e}"));
                }
                value.unwrap().to_string()
            } else if let Some(e) = op.strip_prefix('?') {
                value.ok_or_else(|| format!("{name}: {e}"))?.to_string()
            } else if let Some(a) = op.strip_prefix(":+") {
                if set_nonempty { a } else { "" }.to_string()
            } else if let Some(a) = op.strip_prefix('+') {
                if value.is_some() { a } else { "" }.to_string()
            } else {
                return Err(format!("unsupported interpolation ${{{expr}}} in {s:?}"));
            };
            out.push_str(&resolved);
        } else {
            let name_len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let (name, r) = rest.split_at(name_len);
            out.push_str(vars.get(name).copied().unwrap_or(""));
            rest = r;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// What a household's `.env` holds (see the top of docker-compose.yml).
fn sample_dotenv() -> (String, BTreeMap<&'static str, String>) {
    let master = base64::engine::general_purpose::STANDARD.encode([0x5au8; 32]);
    let vars = BTreeMap::from([
        (
            "POSTGRES_PASSWORD",
            "0123456789abcdef0123456789abcdef0123456789abcdef".to_string(),
        ),
        ("MA_IDP_HOST", "idp.example.org".to_string()),
        ("MA_IDP_MASTER_KEY", master.clone()),
    ]);
    (master, vars)
}

/// Flatten a serialized `Settings` into the environment variable names figment maps onto it
/// (`MA_IDP_` + upper-cased key, nested keys joined with `__`).
fn flatten_env(prefix: &str, v: &Json, out: &mut BTreeSet<String>) {
    if let Json::Object(m) = v {
        for (k, child) in m {
            let name = format!("{prefix}{}", k.to_ascii_uppercase());
            if child.is_object() {
                flatten_env(&format!("{name}__"), child, out);
            } else {
                out.insert(name);
            }
        }
    }
}

/// Every `MA_IDP_*` variable ma-idp reads: one per setting, plus the master key (never
/// serialized) and the configuration file path.
fn known_env_vars() -> BTreeSet<String> {
    let json = serde_json::to_value(ma_idp::Settings::default()).unwrap();
    let mut out = BTreeSet::new();
    flatten_env("MA_IDP_", &json, &mut out);
    out.insert("MA_IDP_MASTER_KEY".into());
    out.insert("MA_IDP_CONFIG".into());
    out
}

/// Dotted setting keys (`argon2.m_cost`), as written in the TOML file.
fn setting_keys() -> Vec<String> {
    fn walk(prefix: &str, v: &Json, out: &mut Vec<String>) {
        if let Json::Object(m) = v {
            for (k, child) in m {
                let key = format!("{prefix}{k}");
                if child.is_object() {
                    walk(&format!("{key}."), child, out);
                } else {
                    out.push(key);
                }
            }
        }
    }
    let mut out = vec!["master_key".to_string()];
    walk(
        "",
        &serde_json::to_value(ma_idp::Settings::default()).unwrap(),
        &mut out,
    );
    out
}

fn clap_env_vars(cmd: &clap::Command, out: &mut BTreeSet<String>) {
    for a in cmd.get_arguments() {
        if let Some(e) = a.get_env() {
            out.insert(e.to_string_lossy().into_owned());
        }
    }
    for s in cmd.get_subcommands() {
        clap_env_vars(s, out);
    }
}

// ---------------------------------------------------------------------------------------------
// the environment ma-idp reads

#[test]
fn known_env_vars_cover_the_command_line() {
    let known = known_env_vars();
    for must in [
        "MA_IDP_LISTEN",
        "MA_IDP_PUBLIC_URL",
        "MA_IDP_DATABASE_URL",
        "MA_IDP_DATA_DIR",
        "MA_IDP_TRUSTED_PROXIES",
        "MA_IDP_DEFAULT_TENANT",
        "MA_IDP_ARGON2__M_COST",
    ] {
        assert!(known.contains(must), "{must} missing from {known:?}");
    }
    // Every variable the command line reads is a setting too, so both agree on its meaning.
    let mut from_clap = BTreeSet::new();
    clap_env_vars(&ma_idp::cli::Cli::command(), &mut from_clap);
    assert!(!from_clap.is_empty());
    for e in &from_clap {
        assert!(
            known.contains(e),
            "the CLI reads {e}, which is not a setting"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// docker-compose.yml

#[test]
fn compose_has_postgres_ma_idp_and_caddy() {
    let c = compose();
    let services = c
        .get("services")
        .and_then(Yaml::as_mapping)
        .expect("services mapping");
    let names: BTreeSet<String> = services.keys().map(yaml_str).collect();
    for n in ["postgres", "ma-idp", "caddy"] {
        assert!(names.contains(n), "service {n} missing; have {names:?}");
    }
}

#[test]
fn compose_postgres_has_a_volume_and_a_healthcheck() {
    let c = compose();
    let pg = service(&c, "postgres");
    let image = yaml_str(pg.get("image").expect("postgres image"));
    assert!(image.starts_with("postgres:"), "image {image}");
    let vols: Vec<String> = yaml_list(pg.get("volumes"))
        .into_iter()
        .map(yaml_str)
        .collect();
    assert!(
        vols.iter()
            .any(|v| v.ends_with(":/var/lib/postgresql/data")),
        "postgres data must live on a volume: {vols:?}"
    );
    let hc = healthcheck_words(pg).join(" ");
    assert!(hc.contains("pg_isready"), "healthcheck: {hc}");
    let env = environment(pg);
    for k in ["POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"] {
        assert!(env.contains_key(k), "postgres env lacks {k}");
    }
}

#[test]
fn compose_ma_idp_builds_here_waits_for_postgres_and_is_checked() {
    let c = compose();
    let svc = service(&c, "ma-idp");

    // Built from this repository's Dockerfile.
    let build = svc.get("build").expect("ma-idp has build");
    let (context, dockerfile) = match build {
        Yaml::String(s) => (s.clone(), "Dockerfile".to_string()),
        Yaml::Mapping(_) => (
            build
                .get("context")
                .map(yaml_str)
                .unwrap_or_else(|| ".".into()),
            build
                .get("dockerfile")
                .map(yaml_str)
                .unwrap_or_else(|| "Dockerfile".into()),
        ),
        other => panic!("build: {other:?}"),
    };
    assert!(context == "." || context == "./", "build context {context}");
    assert!(repo().join(&dockerfile).is_file(), "{dockerfile} missing");

    // Starts only once PostgreSQL answers.
    let cond = svc
        .get("depends_on")
        .and_then(|d| d.get("postgres"))
        .and_then(|p| p.get("condition"))
        .map(yaml_str);
    assert_eq!(cond.as_deref(), Some("service_healthy"));

    // Readiness, not mere liveness.
    let hc = healthcheck_words(svc).join(" ");
    assert!(hc.contains(":8096/ready"), "healthcheck: {hc}");

    assert_eq!(
        svc.get("restart").map(yaml_str).as_deref(),
        Some("unless-stopped")
    );
    // The public endpoints are reached only through the proxy; the admin UI has its own
    // listener, published on this machine's loopback only (never through Caddy).
    let ports: Vec<String> = yaml_list(svc.get("ports"))
        .into_iter()
        .map(yaml_str)
        .collect();
    assert_eq!(
        ports,
        vec!["127.0.0.1:8097:8097".to_string()],
        "ma-idp publishes only the admin port, on loopback; Caddy publishes the rest"
    );
    let env = svc.get("environment").expect("ma-idp environment");
    assert_eq!(
        env.get("MA_IDP_ADMIN_LISTEN").map(yaml_str).as_deref(),
        Some("0.0.0.0:8097"),
        "the admin UI is on its own listener, so the public one answers 404 for /admin"
    );
    let vols: Vec<String> = yaml_list(svc.get("volumes"))
        .into_iter()
        .map(yaml_str)
        .collect();
    assert!(vols.iter().any(|v| v.ends_with(":/data")), "{vols:?}");
}

#[test]
fn compose_ma_idp_sets_only_variables_ma_idp_reads() {
    let c = compose();
    let env = environment(service(&c, "ma-idp"));
    let known = known_env_vars();
    let mut seen = 0;
    for name in env.keys().filter(|k| k.starts_with("MA_IDP_")) {
        seen += 1;
        assert!(
            known.contains(name),
            "docker-compose.yml sets {name}, which ma-idp does not read; it reads {known:?}"
        );
    }
    assert!(seen > 0);
    for must in [
        "MA_IDP_DATABASE_URL",
        "MA_IDP_PUBLIC_URL",
        "MA_IDP_LISTEN",
        "MA_IDP_MASTER_KEY",
    ] {
        assert!(env.contains_key(must), "ma-idp env lacks {must}");
    }
}

#[test]
fn compose_database_url_matches_the_postgres_service() {
    let c = compose();
    let (_, dotenv) = sample_dotenv();
    let vars: BTreeMap<&str, &str> = dotenv.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let pg = environment(service(&c, "postgres"));
    let pg_user = interpolate(&pg["POSTGRES_USER"], &vars).unwrap();
    let pg_pass = interpolate(&pg["POSTGRES_PASSWORD"], &vars).unwrap();
    let pg_db = interpolate(&pg["POSTGRES_DB"], &vars).unwrap();
    let env = environment(service(&c, "ma-idp"));
    let url = interpolate(&env["MA_IDP_DATABASE_URL"], &vars).unwrap();
    let u = url::Url::parse(&url).unwrap();
    assert_eq!(u.scheme(), "postgres");
    assert_eq!(u.username(), pg_user);
    assert_eq!(u.password(), Some(pg_pass.as_str()));
    assert_eq!(u.host_str(), Some("postgres"), "the compose service name");
    assert_eq!(u.port(), Some(5432));
    assert_eq!(u.path(), format!("/{pg_db}"));
}

#[test]
fn compose_refuses_to_start_without_its_secrets() {
    let c = compose();
    let env = environment(service(&c, "ma-idp"));
    let (_, mut dotenv) = sample_dotenv();
    for missing in ["POSTGRES_PASSWORD", "MA_IDP_HOST", "MA_IDP_MASTER_KEY"] {
        let saved = dotenv.remove(missing).unwrap();
        let vars: BTreeMap<&str, &str> = dotenv.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let failed = env.values().any(|v| interpolate(v, &vars).is_err());
        assert!(
            failed,
            "ma-idp would start with {missing} unset; use ${{{missing}:?...}}"
        );
        dotenv.insert(missing, saved);
    }
}

#[test]
fn compose_caddy_publishes_443_with_the_repo_caddyfile() {
    let c = compose();
    let caddy = service(&c, "caddy");
    let image = yaml_str(caddy.get("image").expect("caddy image"));
    assert!(image.starts_with("caddy:"), "{image}");
    let published: Vec<String> = yaml_list(caddy.get("ports"))
        .into_iter()
        .map(|p| match p {
            Yaml::Mapping(_) => p.get("published").map(yaml_str).unwrap_or_default(),
            other => {
                let s = yaml_str(other);
                let s = s.split('/').next().unwrap_or_default().to_string();
                let parts: Vec<&str> = s.split(':').collect();
                // [ip:]published:target
                parts[parts.len().saturating_sub(2)].to_string()
            }
        })
        .collect();
    assert!(published.iter().any(|p| p == "443"), "{published:?}");
    assert!(
        published.iter().any(|p| p == "80"),
        "ACME needs 80 too: {published:?}"
    );
    let vols: Vec<String> = yaml_list(caddy.get("volumes"))
        .into_iter()
        .map(yaml_str)
        .collect();
    let caddyfile = vols
        .iter()
        .find(|v| v.contains(":/etc/caddy/Caddyfile"))
        .expect("the Caddyfile is mounted");
    let host_path = caddyfile.split(':').next().unwrap();
    assert!(repo().join(host_path).is_file(), "{host_path} missing");
    assert!(
        vols.iter().any(|v| v.ends_with(":/data")),
        "Caddy's certificates must survive a restart: {vols:?}"
    );
    // Caddy proxies to the ma-idp service.
    let env = environment(caddy);
    let caddy_file = read("deploy/Caddyfile");
    assert!(caddy_file.contains("reverse_proxy"));
    assert!(
        env.values().any(|v| v == "ma-idp:8096") || caddy_file.contains("ma-idp:8096"),
        "Caddy must reach ma-idp:8096"
    );
}

/// The child half of `compose_environment_parses_as_settings`: does nothing unless started by
/// it.
#[test]
fn compose_env_child() {
    if std::env::var("MA_IDP_DEPLOY_TEST_CHILD").is_err() {
        return;
    }
    let s = ma_idp::Settings::load(None).unwrap_or_else(|e| panic!("settings: {e}"));
    s.validate().unwrap();
    let mut json = serde_json::to_value(&s).unwrap();
    json["master_key"] = serde_json::json!(s.master_key);
    json["effective_database_url"] = serde_json::json!(s.database_url());
    println!("SETTINGS_JSON:{json}");
}

#[test]
fn compose_environment_parses_as_settings() {
    let c = compose();
    let env = environment(service(&c, "ma-idp"));
    let (master, dotenv) = sample_dotenv();
    let vars: BTreeMap<&str, &str> = dotenv.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "compose_env_child",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MA_IDP_") {
            cmd.env_remove(k);
        }
    }
    let mut expected = BTreeMap::new();
    for (k, v) in &env {
        let value = interpolate(v, &vars).unwrap();
        cmd.env(k, &value);
        expected.insert(k.clone(), value);
    }
    // Set last so a compose variable of the same name cannot clear it.
    cmd.env("MA_IDP_DEPLOY_TEST_CHILD", "1");
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ma-idp cannot load the compose environment:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("SETTINGS_JSON:").map(|(_, json)| json))
        .unwrap_or_else(|| panic!("child printed no settings:\n{stdout}"));
    let s: Json = serde_json::from_str(line).unwrap();

    assert_eq!(s["public_url"], "https://idp.example.org");
    assert_eq!(s["listen"], "0.0.0.0:8096");
    assert_eq!(s["master_key"], master.as_str());
    assert_eq!(
        s["database_url"].as_str(),
        expected.get("MA_IDP_DATABASE_URL").map(String::as_str)
    );
    assert_eq!(s["effective_database_url"], s["database_url"]);
    if let Some(t) = s["default_tenant"].as_str() {
        assert!(
            t.is_empty(),
            "no default tenant in the sample .env, got {t:?}"
        );
    }

    // Trusted proxies: exact IP addresses (ma-idp ignores anything else), including the
    // address Caddy has on the compose network.
    let proxies: Vec<String> = s["trusted_proxies"]
        .as_array()
        .expect("trusted_proxies is a list")
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    for p in &proxies {
        assert!(
            p.parse::<IpAddr>().is_ok(),
            "trusted proxy {p:?} is not an IP address (ranges are not supported)"
        );
    }
    let caddy_ip = service(&c, "caddy")
        .get("networks")
        .and_then(Yaml::as_mapping)
        .and_then(|m| m.values().find_map(|n| n.get("ipv4_address")))
        .map(yaml_str);
    if let Some(ip) = caddy_ip {
        assert!(
            proxies.contains(&ip),
            "Caddy has {ip} but trusted_proxies is {proxies:?}"
        );
    }

    // The master key format the compose file recommends (`openssl rand -base64 32`) loads.
    let dir = tempfile::tempdir().unwrap();
    ma_idp::tokens::MasterKey::load_or_create(Some(&master), dir.path()).unwrap();
    assert!(
        !dir.path().join("master.key").exists(),
        "an environment key must not create a key file"
    );
}

// ---------------------------------------------------------------------------------------------
// Dockerfile and .dockerignore

/// Dockerfile instructions of the last stage, continuation lines joined.
fn dockerfile_instructions() -> Vec<(String, String)> {
    let text = read("Dockerfile");
    let mut joined: Vec<String> = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        // Comments (and parser directives) are dropped, also inside continuations.
        if t.starts_with('#') {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
        } else {
            cur.push_str(t);
            if !cur.trim().is_empty() {
                joined.push(std::mem::take(&mut cur));
            }
            cur.clear();
        }
    }
    let all: Vec<(String, String)> = joined
        .into_iter()
        .filter_map(|l| {
            let (i, rest) = l.trim().split_once(char::is_whitespace)?;
            Some((i.to_ascii_uppercase(), rest.trim().to_string()))
        })
        .collect();
    let last_from = all.iter().rposition(|(i, _)| i == "FROM").expect("a FROM");
    let mut out = all[last_from..].to_vec();
    // Keep the build stage's RUN lines too, tagged, for the build-command check.
    for (i, r) in &all[..last_from] {
        if i == "RUN" {
            out.push(("BUILD-RUN".into(), r.clone()));
        }
    }
    out
}

fn exec_form(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_else(|_| panic!("use the exec (JSON) form, not {s:?}"))
}

#[test]
fn dockerfile_runs_ma_idp_serve_on_8096() {
    let ins = dockerfile_instructions();
    let get = |name: &str| -> Vec<&String> {
        ins.iter()
            .filter(|(i, _)| i == name)
            .map(|(_, r)| r)
            .collect()
    };
    assert!(
        get("EXPOSE")
            .iter()
            .any(|e| e.split_whitespace().any(|p| p == "8096" || p == "8096/tcp")),
        "EXPOSE 8096"
    );
    let entry = exec_form(get("ENTRYPOINT").last().expect("ENTRYPOINT"));
    let cmd = get("CMD").last().map(|c| exec_form(c)).unwrap_or_default();
    let argv: Vec<String> = entry.into_iter().chain(cmd).collect();
    assert_eq!(argv, ["ma-idp", "serve"]);

    // Listens on all interfaces inside the container, with data in the volume.
    let env_line = get("ENV")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        env_line.contains("MA_IDP_LISTEN=0.0.0.0:8096"),
        "{env_line}"
    );
    assert!(env_line.contains("MA_IDP_DATA_DIR=/data"), "{env_line}");
    let known = known_env_vars();
    for word in env_line.split_whitespace() {
        if let Some((k, _)) = word.split_once('=')
            && k.starts_with("MA_IDP_")
        {
            assert!(
                known.contains(k),
                "the Dockerfile sets {k}, which ma-idp does not read"
            );
        }
    }
    assert!(get("VOLUME").iter().any(|v| v.contains("/data")));
    let hc = get("HEALTHCHECK")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(hc.contains(":8096/ready"), "HEALTHCHECK on /ready: {hc}");
    let user = get("USER").last().map(|u| u.to_string()).expect("a USER");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "runs as root: {user}"
    );

    // Builds the package and binary that exist.
    let build = get("BUILD-RUN")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        build.contains("cargo build --release -p ma-idp --locked"),
        "{build}"
    );
    let server = read("server/Cargo.toml");
    assert!(server.contains("name = \"ma-idp\""));
    assert!(build.contains("target/release/ma-idp"));
}

#[test]
fn dockerignore_keeps_secrets_out_and_sources_in() {
    let text = read(".dockerignore");
    let patterns: BTreeSet<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_start_matches('/').trim_end_matches('/').to_string())
        .collect();
    for must in ["target", "data", ".git", ".env"] {
        assert!(patterns.contains(must), ".dockerignore lacks {must}");
    }
    // The workspace (every member), the lock file and the embedded assets must reach the build.
    let mut needed = workspace_members(&read("Cargo.toml"));
    needed.extend(["Cargo.toml", "Cargo.lock", "templates", "static"].map(String::from));
    for n in &needed {
        assert!(
            !patterns.contains(n.as_str()),
            ".dockerignore excludes {n}, which the build needs"
        );
        assert!(repo().join(n).exists(), "{n} does not exist");
    }
}

/// Just enough of Cargo.toml to list the workspace members.
fn workspace_members(cargo_toml: &str) -> Vec<String> {
    let start = cargo_toml
        .find("members")
        .expect("workspace members in Cargo.toml");
    let rest = &cargo_toml[start..];
    let open = rest.find('[').unwrap();
    let close = rest.find(']').unwrap();
    rest[open + 1..close]
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_string())
        .filter(|m| !m.is_empty())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// deploy/

#[test]
fn deploy_examples_forward_the_client_address() {
    let nginx = read("deploy/nginx.conf");
    for must in [
        "listen 443 ssl",
        "proxy_pass http://127.0.0.1:8096",
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "trusted_proxies",
        "public_url",
    ] {
        assert!(nginx.contains(must), "deploy/nginx.conf lacks {must:?}");
    }
    let caddy = read("deploy/Caddyfile");
    assert!(caddy.contains("{$MA_IDP_HOST}"));
    assert!(caddy.contains("reverse_proxy"));
    // The metrics are not for the internet (on one listener, ma-idp serves them with the rest).
    assert!(
        nginx.contains("location = /metrics {\n        return 404;"),
        "{nginx}"
    );
    let respond = caddy
        .find("respond /metrics 404")
        .expect("Caddy hides /metrics");
    assert!(
        respond < caddy.find("\treverse_proxy").unwrap_or(0),
        "{caddy}"
    );
}

// ---------------------------------------------------------------------------------------------
// README

fn readme() -> String {
    read("README.md")
}

#[test]
fn readme_has_the_two_quick_start_commands() {
    let r = readme();
    for cmd in ["cargo run --release -p ma-idp -- serve", "bash .ci/run"] {
        assert!(
            r.lines().any(|l| l.trim() == cmd),
            "README.md must show `{cmd}` on a line of its own"
        );
    }
}

#[test]
fn readme_documents_every_setting() {
    let r = readme();
    for key in setting_keys() {
        assert!(
            r.contains(&format!("`{key}`")),
            "README.md does not document the setting `{key}`"
        );
    }
}

#[test]
fn readme_names_only_environment_variables_that_exist() {
    let r = readme();
    let known = known_env_vars();
    // Not ma-idp settings, named in the README for what they are: the test suite's PostgreSQL,
    // the .env of docker-compose.yml, and Caddy's upstream.
    let others = ["MA_IDP_TEST_PG", "MA_IDP_HOST", "MA_IDP_UPSTREAM"];
    let re = regex::Regex::new(r"MA_IDP_[A-Z0-9_]*[A-Z0-9]").unwrap();
    for m in re.find_iter(&r) {
        let name = m.as_str();
        assert!(
            known.contains(name) || others.contains(&name),
            "README.md names {name}, which ma-idp does not read"
        );
    }
}

/// Split a shell line into words, honouring single and double quotes.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut in_word = false;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                in_word = true;
            }
            None if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            None => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// Check `ma-idp ARGS...` against the real command line: subcommands and `--flags` exist.
fn check_invocation(args: &[String], source: &str) {
    let mut cmd = ma_idp::cli::Cli::command();
    cmd.build();
    let mut cur = &cmd;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if let Some(flag) = a.strip_prefix("--") {
            let (name, inline_value) = match flag.split_once('=') {
                Some((n, _)) => (n, true),
                None => (flag, false),
            };
            if name == "help" || name == "version" {
                i += 1;
                continue;
            }
            let arg = cur
                .get_arguments()
                .find(|x| x.get_long() == Some(name))
                .unwrap_or_else(|| {
                    panic!(
                        "README: `{source}` uses --{name}, which `{}` does not have",
                        cur.get_name()
                    )
                });
            let takes_value = arg.get_action().takes_values();
            i += if takes_value && !inline_value { 2 } else { 1 };
        } else if a.starts_with('-') && a.len() > 1 {
            // -h, -V: the only short options.
            i += 1;
        } else if let Some(sub) = cur.find_subcommand(a) {
            cur = sub;
            i += 1;
        } else {
            assert!(
                cur.get_positionals().next().is_some(),
                "README: `{source}`: `{}` has no subcommand or argument {a:?}",
                cur.get_name()
            );
            i += 1;
        }
    }
    let asks_for_help = args
        .iter()
        .any(|a| matches!(a.as_str(), "--help" | "-h" | "--version" | "-V"));
    assert!(
        !cur.has_subcommands() || asks_for_help,
        "README: `{source}` stops at `{}`, which needs a subcommand",
        cur.get_name()
    );
}

/// The `ma-idp ...` invocations in a README line (code blocks and `inline code`).
fn invocations(line: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for segment in line.split(['|', ';']).flat_map(|s| s.split("&&")) {
        let words = shell_words(segment.trim().trim_start_matches("$ "));
        // `cargo run ... -- ARGS`
        if words.first().map(String::as_str) == Some("cargo")
            && let Some(p) = words.iter().position(|w| w == "--")
            && words.iter().any(|w| w == "ma-idp")
        {
            out.push(words[p + 1..].to_vec());
            continue;
        }
        // `docker compose exec ma-idp ma-idp ARGS`, `./target/release/ma-idp ARGS`, `ma-idp ARGS`
        if let Some(p) = words
            .iter()
            .position(|w| w == "ma-idp" || w.ends_with("/ma-idp"))
        {
            let after = &words[p + 1..];
            let rest = if after.first().map(String::as_str) == Some("ma-idp") {
                &after[1..]
            } else {
                after
            };
            // Skip prose like `ma-idp is ...`: only lines whose next word is a subcommand or
            // a flag are invocations.
            if let Some(first) = rest.first()
                && (first.starts_with("--")
                    || ma_idp::cli::Cli::command().find_subcommand(first).is_some())
            {
                out.push(rest.to_vec());
            }
        }
    }
    out
}

#[test]
fn readme_commands_use_real_subcommands_and_flags() {
    let r = readme();
    let mut in_code = false;
    let mut checked = 0;
    let inline = regex::Regex::new(r"`([^`]+)`").unwrap();
    for line in r.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        let candidates: Vec<String> = if in_code {
            vec![line.to_string()]
        } else {
            inline
                .captures_iter(line)
                .map(|c| c[1].to_string())
                .filter(|c| c.starts_with("ma-idp ") || c.starts_with("cargo run"))
                .collect()
        };
        for c in candidates {
            // Placeholders such as `ma-idp client create ...` are prose.
            let c = c.replace("...", "");
            for inv in invocations(&c) {
                check_invocation(&inv, c.trim());
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 8,
        "only {checked} ma-idp commands found in README.md"
    );
}
