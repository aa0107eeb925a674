//! The markdown report.
use std::fmt::Write as _;

use crate::floors::TxnFloor;
use crate::load::{Kind, PhaseResult};
use crate::{ARGON2_M_KIB, ARGON2_P, ARGON2_RUNS, ARGON2_T, BackendResult, RunInfo};

fn mib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
        .unwrap_or_else(|| "n/a".into())
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(x) if x < 10.0 => format!("{x:.2}"),
        Some(x) => format!("{x:.1}"),
        None => "–".into(),
    }
}

/// The last round ran at under half the rate of the first.
fn falls_by_half(rates_in_order: &[f64]) -> bool {
    match (rates_in_order.first(), rates_in_order.last()) {
        (Some(first), Some(last)) if rates_in_order.len() > 1 => *last < first / 2.0,
        _ => false,
    }
}

fn rate(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn floor_line(f: &TxnFloor) -> String {
    let mut s = format!(
        "{} tx/s, p50 {} ms, p99 {} ms ({})",
        rate(f.tps),
        ms(f.p50_ms),
        ms(f.p99_ms),
        f.how
    );
    if f.errors > 0 {
        let _ = write!(s, "; {} failed", f.errors);
        if let Some(e) = &f.error_sample {
            let _ = write!(s, " (e.g. {e})");
        }
    }
    s
}

/// Password sign-ins per second if every core did nothing but hash: cores ÷ one hash's time.
fn sign_in_ceiling(info: &RunInfo, hash_secs: f64) -> f64 {
    info.cores as f64 / hash_secs
}

/// The floor a scenario is compared with, as (value per second, what it is).
fn floor_for(p: &PhaseResult, info: &RunInfo, b: &BackendResult) -> Option<(f64, String)> {
    match p.kind {
        Kind::Refresh | Kind::CodeExchange => b
            .floor
            .as_ref()
            .map(|f| (f.tps, format!("{} tx/s transaction floor", rate(f.tps)))),
        Kind::ClientCredentials => info.es256_per_core.map(|e| {
            let v = e * info.cores as f64;
            (
                v,
                format!("{} ES256 signs/s ({} cores)", rate(v), info.cores),
            )
        }),
        Kind::SignIn => {
            // The round's own hash when it was timed, else the run's.
            let (s, when) = match p.hash_floor_secs {
                Some(s) => (s, "one hash timed just before this round"),
                None => (info.argon2_secs?, "the floors' hash"),
            };
            let v = sign_in_ceiling(info, s);
            Some((
                v,
                format!(
                    "{} argon2id/s ceiling ({} cores / {:.1} ms, {when})",
                    rate(v),
                    info.cores,
                    s * 1000.0
                ),
            ))
        }
        _ => None,
    }
}

pub fn render(info: &RunInfo, results: &[BackendResult]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# ma-idp benchmarks\n");
    let _ = writeln!(
        o,
        "Produced by the `ma-idp-bench` workspace member (`bench/`): it builds the release binary, \
         runs `ma-idp serve` as a child process on each database, drives it over loopback, and \
         measures the floors below in the same run. Re-run with:\n\n```sh\n{}\n```\n",
        info.command
    );
    let _ = writeln!(o, "## Run\n");
    let _ = writeln!(o, "| | |\n| --- | --- |");
    let _ = writeln!(o, "| date | {} |", info.date);
    let _ = writeln!(o, "| git commit | {} |", info.commit);
    let _ = writeln!(o, "| ma-idp binary | {} |", info.binary);
    let _ = writeln!(
        o,
        "| machine | {}, {} cores (nproc), {} RAM, Linux {} |",
        info.cpu,
        info.cores,
        info.ram_gib
            .map(|g| format!("{g:.1} GiB"))
            .unwrap_or_else(|| "?".into()),
        info.kernel
    );
    let _ = writeln!(
        o,
        "| scheduler | {} |",
        match info.autogroup {
            Some(true) =>
                "autogroup on (`kernel.sched_autogroup_enabled=1`, the default of Debian's and Ubuntu's kernels): every session is a scheduling group of its own, and PostgreSQL starts each backend in a session of its own, so each backend competes with the whole of ma-idp as an equal",
            Some(false) =>
                "autogroup off (`kernel.sched_autogroup_enabled=0`): every thread competes on its own, ma-idp's `SCHED_IDLE` hash threads beside PostgreSQL's backends too",
            None => "no autogroup in this kernel",
        }
    );
    let _ = writeln!(o, "| toolchain | {} |", info.rustc);
    if let Some(layout) = &info.startup_layout {
        let _ = writeln!(o, "| start-up code layout | {layout} |");
    }
    let _ = writeln!(
        o,
        "| load average (1, 5, 15 min) | at start {}; at end {} |",
        info.load_start, info.load_end
    );
    let _ = writeln!(
        o,
        "| load | {} concurrent clients (tokio tasks, each with its own keep-alive connection), {} s per scenario, on the same machine as the server; discovery, JWKS, `client_credentials`, introspection and password sign-in through a minimal HTTP/1.1 client (`bench/src/raw.rs`: a fixed request plus the cookies the server set, the answer read by its length), the other browser and token flows through reqwest |",
        info.concurrency,
        info.duration.as_secs()
    );
    let _ = writeln!(
        o,
        "| ma-idp configuration | defaults: HTTP workers = cores, database pool 8 on SQLite and 16 on PostgreSQL, argon2id m={ARGON2_M_KIB} KiB t={ARGON2_T} p={ARGON2_P} with hashes at once = cores, `RUST_LOG=warn`, plain HTTP on 127.0.0.1 |"
    );
    if info.ip_limits_off {
        let _ = writeln!(
            o,
            "| per-client-IP rate limits | off (`{}` = 0): all the load comes from 127.0.0.1 and would otherwise measure 429s, and the signed-out authorize page scenario starts more sessions than the cap on unfinished sign-ins; the per-account lockout stays on (the benchmark never sends a wrong password) |",
            crate::IP_LIMITS.join("`, `")
        );
    }
    if !info.server_env.is_empty() {
        let _ = writeln!(
            o,
            "| extra environment for ma-idp | `{}` |",
            info.server_env.join(" ")
        );
    }
    let _ = writeln!(
        o,
        "| data | tenant `bench`, {} members (worker *i* signs in as member *i*), one confidential Alexa client (`--alexa`, `--client-credentials`) |",
        info.users
    );
    let _ = writeln!(
        o,
        "\n**Noise.** The machine has {} cores, shared by ma-idp, the database and the load generator; \
         anything else running shows in the load averages above and in \"host busy\", and a virtual \
         machine's host may be busy without showing here. \
         Treat the numbers as a lower bound and as relative, not as capacity planning. \
         \"ma-idp CPU\" (user + system time of the ma-idp process from /proc/PID/stat, per \
         completed request) is less sensitive to this than req/s; \"load-gen CPU\" is the same for \
         this benchmark's own process; \"host busy\" is the whole machine's CPU use during the \
         scenario (100% = all cores busy), which includes the database and other users.\n",
        info.cores
    );

    let _ = writeln!(o, "## Floors (same run)\n");
    let _ = writeln!(o, "| floor | measured |\n| --- | --- |");
    match info.es256_per_core {
        Some(e) => {
            let _ = writeln!(
                o,
                "| ES256 signature (aws-lc-rs, P-256 fixed, 300-byte message, one thread, 2 s) | {} signs/s per core; × {} cores = {} /s |",
                rate(e),
                info.cores,
                rate(e * info.cores as f64)
            );
        }
        None => {
            let _ = writeln!(o, "| ES256 signature | failed |");
        }
    }
    match info.argon2_secs {
        Some(s) => {
            let _ = writeln!(
                o,
                "| argon2id hash (argon2 0.5, m={ARGON2_M_KIB} KiB, t={ARGON2_T}, p={ARGON2_P}; memory reused from hash to hash as ma-idp's hash threads reuse it; median of {ARGON2_RUNS}) | {:.1} ms → password sign-in ceiling = {} cores / {:.1} ms = {} /s |",
                s * 1000.0,
                info.cores,
                s * 1000.0,
                rate(sign_in_ceiling(info, s))
            );
        }
        None => {
            let _ = writeln!(o, "| argon2id hash | failed |");
        }
    }
    if let (Some(par), Some(s)) = (info.argon2_parallel, info.argon2_secs) {
        let _ = writeln!(
            o,
            "| argon2id, {} threads hashing at once (3 s, each reusing its memory) | {} hashes/s = {:.2} of the ceiling above: what every core hashing can do (shared caches and memory bandwidth) |",
            info.cores,
            rate(par),
            par / sign_in_ceiling(info, s)
        );
    }
    for b in results {
        if let Some(f) = &b.floor {
            let _ = writeln!(
                o,
                "| {} durable transaction (BEGIN; UPDATE 1 row; INSERT 1 row; COMMIT), {} concurrent | {} |",
                b.backend.name(),
                info.concurrency,
                floor_line(f)
            );
        }
        if let Some(f) = &b.floor_alt {
            let _ = writeln!(
                o,
                "| {} same transaction through sea-orm/sqlx (ma-idp's driver) | {} |",
                b.backend.name(),
                floor_line(f)
            );
        }
    }
    let _ = writeln!(o);

    for b in results {
        let _ = writeln!(o, "## {} {}\n", b.backend.name(), b.version);
        if !b.settings.is_empty() {
            let _ = writeln!(o, "Database settings: {}.\n", b.settings);
        }
        let _ = writeln!(
            o,
            "| scenario | req/s | p50 ms | p99 ms | errors | ma-idp CPU ms/req | load-gen CPU ms/req | host busy | ma-idp peak RSS | ma-idp RSS after | vs floor |"
        );
        let _ = writeln!(
            o,
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
        );
        for p in &b.phases {
            let vs = match floor_for(p, info, b) {
                Some((v, what)) if v > 0.0 => format!("{:.2} of {what}", p.rate() / v),
                _ => "–".into(),
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {:.0}% | {} | {} | {} |",
                p.kind.label(),
                rate(p.rate()),
                ms(p.quantile_ms(0.5)),
                ms(p.quantile_ms(0.99)),
                p.error_count(),
                ms(p.cpu_ms_per_request()),
                ms(p.client_cpu_ms_per_request()),
                p.host_busy * 100.0,
                mib(p.peak_kib),
                mib(p.rss_after_kib),
                vs
            );
        }
        let _ = writeln!(o);
        if info.rounds > 1 {
            let spread: Vec<String> = b
                .phases
                .iter()
                .map(|m| {
                    let mut rates: Vec<f64> = b
                        .all_phases
                        .iter()
                        .filter(|p| p.kind == m.kind)
                        .map(|p| p.rate())
                        .collect();
                    rates.sort_by(f64::total_cmp);
                    let all: Vec<String> = rates.iter().map(|r| rate(*r)).collect();
                    format!("{} {}", m.kind.key(), all.join(" / "))
                })
                .collect();
            let _ = writeln!(
                o,
                "- {} rounds of every scenario, one after the other on the same server; each row above is the scenario's median round by req/s (its latencies, CPU and memory are that round's). req/s of every round, lowest first: {}",
                info.rounds,
                spread.join("; ")
            );
            let sign_ins: Vec<String> = b
                .all_phases
                .iter()
                .filter(|p| p.kind == Kind::SignIn)
                .filter_map(|p| {
                    let s = p.hash_floor_secs?;
                    let ceiling = sign_in_ceiling(info, s);
                    Some(format!(
                        "{:.2} ({:.1}/s of {:.1}/s; one hash {:.1} ms)",
                        p.rate() / ceiling,
                        p.rate(),
                        ceiling,
                        s * 1000.0
                    ))
                })
                .collect();
            if !sign_ins.is_empty() {
                let _ = writeln!(
                    o,
                    "- password sign-ins against the ceiling timed just before each round (one argon2id hash, median of {ARGON2_RUNS}; on a shared machine the hash's speed drifts during a run), every round in order: {}",
                    sign_ins.join(" / ")
                );
            }
            // A scenario that slows round after round has a path that grows with the data the
            // earlier rounds left (one round, or an A/B of single rounds, cannot show it).
            let falling: Vec<String> = b
                .phases
                .iter()
                .filter_map(|m| {
                    let in_order: Vec<f64> = b
                        .all_phases
                        .iter()
                        .filter(|p| p.kind == m.kind)
                        .map(|p| p.rate())
                        .collect();
                    falls_by_half(&in_order).then(|| {
                        let all: Vec<String> = in_order.iter().map(|r| rate(*r)).collect();
                        format!("{} {}", m.kind.key(), all.join(" → "))
                    })
                })
                .collect();
            if !falling.is_empty() {
                let _ = writeln!(
                    o,
                    "- **slower round after round** (req/s in the order run; the last round under half the first): {}. Some path there grows with the data the earlier rounds left.",
                    falling.join("; ")
                );
            }
        }
        let _ = writeln!(
            o,
            "- start to /ready (spawn → first 200, polled every 2 ms): empty database (runs the migrations) **{:.0} ms**; existing database **{:.0} ms**",
            b.ready_fresh.as_secs_f64() * 1000.0,
            b.ready_existing.as_secs_f64() * 1000.0
        );
        if let Some(d) = b.stop_after {
            let _ = writeln!(
                o,
                "- SIGTERM to exit after the load: {:.0} ms",
                d.as_secs_f64() * 1000.0
            );
        }
        let _ = writeln!(
            o,
            "- RSS (VmRSS): idle after the first start {}; idle after the second start {}; after the load {} (anonymous {}, file-backed {}); peak (VmHWM) {}",
            mib(b.rss_idle_fresh_kib),
            mib(b.rss_idle_kib),
            mib(b.rss_after_kib),
            mib(b.rss_anon_kib),
            mib(b.rss_file_kib),
            mib(b.hwm_kib)
        );
        let _ = writeln!(
            o,
            "- ma-idp CPU by thread, ms per completed request (from /proc/PID/task; `argon2` = password hash threads, `actix-rt|system` = HTTP workers, `sqlx-sqlite-wor` = SQLite connection threads, `tokio-runtime-w` = the async runtime's workers):"
        );
        for p in &b.phases {
            if p.ok == 0 || p.thread_cpu.is_empty() {
                continue;
            }
            let parts: Vec<String> = p
                .thread_cpu
                .iter()
                .take(5)
                .map(|(name, d)| format!("{name} {:.3}", d.as_secs_f64() * 1000.0 / p.ok as f64))
                .collect();
            let _ = writeln!(o, "  - {}: {}", p.kind.key(), parts.join(", "));
        }
        let _ = writeln!(
            o,
            "- ma-idp context switches by thread, per completed request, voluntary / involuntary (from /proc/PID/task/TID/status): a voluntary one is a thread waiting (for a request, a database answer, a hash), so most are followed by a wake-up; an involuntary one is a thread taken off its core while it could still run, mostly for another thread woken there (or at the end of its time slice) — for the hash threads, each costs a hash more than the woken thread's own work (caches, the switches):"
        );
        for p in &b.phases {
            if p.ok == 0 || p.thread_switches.is_empty() {
                continue;
            }
            let per = |n: u64| n as f64 / p.ok as f64;
            let parts: Vec<String> = p
                .thread_switches
                .iter()
                .take(5)
                .map(|(name, v, i)| format!("{name} {:.1} / {:.1}", per(*v), per(*i)))
                .collect();
            let _ = writeln!(o, "  - {}: {}", p.kind.key(), parts.join(", "));
        }
        let normal_client = "one client on a thread and runtime of its own, at normal priority like the rest of the load generator";
        let rt_client = "a second client beside it, its thread under SCHED_FIFO: its own wake-ups never wait for a CPU, so its latency leaves out its own scheduling";
        let hashing = if b.idle_hash_rates.is_empty() {
            String::new()
        } else {
            let mut rates = b.idle_hash_rates.clone();
            rates.sort_by(f64::total_cmp);
            format!(
                "Beside {} SCHED_IDLE argon2 threads ({:.0} hashes/s) and no other request: what the hashing alone does to the probe",
                info.cores,
                rates[rates.len() / 2]
            )
        };
        // The target is the storm's; beside the hashing alone the ratio only explains it.
        let storm_target = " (target ≤ 2×)";
        for (probe, who, during, what, target) in [
            (
                &b.jwks_probe,
                normal_client,
                "during the storm",
                "JWKS during the password sign-in storm",
                storm_target,
            ),
            (
                &b.jwks_probe_rt,
                rt_client,
                "during the storm",
                "JWKS during the password sign-in storm",
                storm_target,
            ),
            (
                &b.jwks_probe_hashing,
                normal_client,
                "beside the hashing",
                hashing.as_str(),
                "",
            ),
            (
                &b.jwks_probe_hashing_rt,
                "the SCHED_FIFO client",
                "beside the hashing",
                hashing.as_str(),
                "",
            ),
        ] {
            let ratio = |(rest, storm): &(crate::load::Probe, crate::load::Probe)| {
                storm.quantile_ms(0.99).unwrap_or(f64::NAN)
                    / rest.quantile_ms(0.99).unwrap_or(f64::NAN)
            };
            let mut by_ratio: Vec<&(crate::load::Probe, crate::load::Probe)> =
                probe.iter().collect();
            by_ratio.sort_by(|a, b| ratio(a).total_cmp(&ratio(b)));
            let Some((rest, storm)) = by_ratio.get(by_ratio.len() / 2).copied() else {
                continue;
            };
            let (r, st) = (
                rest.quantile_ms(0.99).unwrap_or(f64::NAN),
                storm.quantile_ms(0.99).unwrap_or(f64::NAN),
            );
            let rounds = if by_ratio.len() > 1 {
                let all: Vec<String> = by_ratio
                    .iter()
                    .map(|p| format!("{:.2}×", ratio(p)))
                    .collect();
                format!(
                    " (the median of {} rounds; every round, lowest first: {})",
                    by_ratio.len(),
                    all.join(", ")
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                o,
                "- {what} ({who}; one request every {} ms, {} s each): p99 at rest **{:.2} ms** (p50 {:.2}), {during} **{:.2} ms** (p50 {:.2}) = {:.2}× at rest{target}{rounds}; errors {} / {}",
                crate::PROBE_INTERVAL.as_millis(),
                b.probe_seconds,
                r,
                rest.quantile_ms(0.5).unwrap_or(f64::NAN),
                st,
                storm.quantile_ms(0.5).unwrap_or(f64::NAN),
                st / r,
                rest.errors,
                storm.errors
            );
        }
        if !b.storm_rates.is_empty() {
            let rates: Vec<String> = b
                .storm_rates
                .iter()
                .map(|(r, _)| format!("{r:.1}"))
                .collect();
            let errors: u64 = b.storm_rates.iter().map(|(_, e)| e).sum();
            let _ = writeln!(
                o,
                "- The sign-in storm the JWKS probes ran beside is a sign-in scenario of its own, before the timed one in the table (which runs alone, like every other scenario): {} sign-ins/s (every round, in order), errors {errors}",
                rates.join(" / ")
            );
        }
        for p in &b.all_phases {
            if p.error_count() > 0 {
                let kinds: Vec<String> =
                    p.errors.iter().map(|(k, v)| format!("{v} × {k}")).collect();
                let _ = writeln!(o, "- errors in {}: {}", p.kind.key(), kinds.join(", "));
                for s in &p.samples {
                    let _ = writeln!(o, "  - `{}`", s.replace('`', "'"));
                }
            }
        }
        for p in &b.all_phases {
            if !p.setup_failures.is_empty() {
                let n: u64 = p.setup_failures.values().sum();
                let _ = writeln!(
                    o,
                    "- set-up of {} (untimed, retried up to 5 times per worker): {n} failed attempts{}",
                    p.kind.key(),
                    if p.workers_missing > 0 {
                        format!(
                            "; {} of the workers never got going, so this scenario ran with fewer clients",
                            p.workers_missing
                        )
                    } else {
                        "; every worker got going".into()
                    }
                );
                for (s, c) in p.setup_failures.iter().take(3) {
                    let _ = writeln!(o, "  - {c} × `{}`", s.replace('`', "'"));
                }
            }
        }
        for n in &b.notes {
            let _ = writeln!(o, "- {n}");
        }
        if b.log_problems.is_empty() {
            let _ = writeln!(o, "- ma-idp logged no warnings or errors (RUST_LOG=warn).");
        } else {
            let _ = writeln!(
                o,
                "- ma-idp logged {} warning/error lines (RUST_LOG=warn), by message:",
                b.log_problems.len()
            );
            // Grouped by message, without the timestamp.
            let mut groups: Vec<(String, usize)> = Vec::new();
            for l in &b.log_problems {
                let l = strip_ansi(l);
                let msg = l.split_once(' ').map(|(_, m)| m.trim()).unwrap_or(&l);
                let msg: String = msg.chars().take(300).collect();
                match groups.iter_mut().find(|(m, _)| *m == msg) {
                    Some((_, n)) => *n += 1,
                    None => groups.push((msg, 1)),
                }
            }
            for (m, n) in groups.iter().take(8) {
                let _ = writeln!(o, "  - {n} × `{}`", m.replace('`', "'"));
            }
        }
        let _ = writeln!(o);
    }
    let _ = writeln!(
        o,
        "Scenario notes: the refresh scenario gives each worker its own chain, started through a real \
         authorize → sign-in → consent → code → token flow before the clock starts, and always presents \
         the token the previous answer returned. The authorize-redirect scenario signs each worker's \
         browser in once, then repeats the same authorization request; consent is remembered, so every \
         request issues a code (collected). The code-exchange scenario then redeems those codes (32 workers \
         sharing the queue; it ends early if the codes run out). The signed-out authorize page is \
         fetched without cookies, as a first visit, so each request also creates a browser session. \
         Password sign-in repeats `action=login` on one pending request per worker (with \
         `prompt=consent`); each sign-in answers with the consent page, as at a first linking \
         (its CSRF token, which a sign-in renews, is the one the next sign-in sends). Latencies are of \
         successful requests; req/s counts successful requests; requests still in flight when the time \
         is up are not counted."
    );
    if let Some(p) = &info.perf_note {
        let _ = writeln!(
            o,
            "\nA `perf record` profile of ma-idp was taken during the `{p}` scenario (see perf-*.txt)."
        );
    }
    o
}

/// Without terminal colour escapes (ESC [ ... m).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::falls_by_half;

    #[test]
    fn a_scenario_falling_by_half_is_flagged() {
        // The SQLite refresh of the run that found the `IN (subquery)` regression.
        assert!(falls_by_half(&[2160.0, 110.0, 55.4]));
        assert!(falls_by_half(&[2000.0, 999.0]));
        // Ordinary spread, a slow first round, or a single round: not flagged.
        assert!(!falls_by_half(&[2228.0, 1973.0, 2170.0]));
        assert!(!falls_by_half(&[55.0, 2160.0]));
        assert!(!falls_by_half(&[2000.0, 1000.0]));
        assert!(!falls_by_half(&[2160.0]));
        assert!(!falls_by_half(&[]));
    }
}
