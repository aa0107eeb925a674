//! The build's own tools: tools/ordered-cc, the linker driver .cargo/config.toml names for
//! x86_64 Linux, which links the release ma-idp binary with its start-up functions first.
//! Each check links a small program through it with rustc, as cargo would, and reads where
//! the linker put its functions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

const PROGRAM: &str = r#"
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn ordered_first_a() -> u32 { std::hint::black_box(1) }
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn ordered_first_b() -> u32 { std::hint::black_box(2) }
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn ordered_first_c() -> u32 { std::hint::black_box(3) }
#[inline(never)]
pub fn ordered_generic<T: Default + std::fmt::Debug>() -> usize {
    std::hint::black_box(format!("{:?}", T::default())).len()
}
fn main() {
    let generics = ordered_generic::<u8>() + ordered_generic::<Vec<(u64, String)>>();
    let firsts = ordered_first_a() + ordered_first_b() + ordered_first_c();
    println!("{}", firsts as usize + generics - 3);
}
"#;

/// Run rustc on PROGRAM with tools/ordered-cc as its linker, to `out` (a path under `dir`),
/// with `list` as the start-up list and `path` (if any) first on PATH, where a `cc` shim
/// may stand in for the real one.
fn rustc(dir: &Path, out: &Path, list: &str, path: Option<&Path>) -> std::process::ExitStatus {
    let src = dir.join("program.rs");
    std::fs::write(&src, PROGRAM).unwrap();
    let list_path = dir.join("list.txt");
    std::fs::write(&list_path, list).unwrap();
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let mut c = Command::new(rustc);
    c.arg("--edition=2024")
        .arg("-Copt-level=1")
        .arg("-Ccodegen-units=1")
        .arg(format!(
            "-Clinker={}",
            repo().join("tools/ordered-cc").display()
        ))
        .arg("-o")
        .arg(out)
        .arg(&src)
        .env("MA_IDP_STARTUP_ORDER", &list_path)
        .env("MA_IDP_STARTUP_ORDER_KEEP", "1");
    if let Some(p) = path {
        let old = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![p.to_path_buf()];
        paths.extend(std::env::split_paths(&old));
        c.env("PATH", std::env::join_paths(paths).unwrap());
    }
    c.status().expect("rustc runs")
}

/// Link PROGRAM through tools/ordered-cc to `out` (a path under `dir`) with `list` as the
/// start-up list; the address and size (as nm prints it) of each of its functions named
/// `ordered_…`, after checking that it runs.
fn link(dir: &Path, out: &str, list: &str) -> HashMap<String, (u64, String)> {
    link_with(dir, out, list, None)
}

fn link_with(
    dir: &Path,
    out: &str,
    list: &str,
    path: Option<&Path>,
) -> HashMap<String, (u64, String)> {
    let out = dir.join(out);
    let status = rustc(dir, &out, list, path);
    assert!(status.success(), "rustc with tools/ordered-cc failed");
    let run = Command::new(&out).output().expect("the program runs");
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), "6");
    let nm = Command::new("nm")
        .arg("--defined-only")
        .arg("-S")
        .arg(&out)
        .output()
        .expect("nm runs");
    String::from_utf8_lossy(&nm.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let [addr, size, _, name] = f[..] else {
                return None;
            };
            name.contains("ordered_").then(|| {
                (
                    name.to_string(),
                    (u64::from_str_radix(addr, 16).unwrap(), size.to_string()),
                )
            })
        })
        .collect()
}

/// The symbols tools/ordered-cc chose for the last release link under `dir` (kept because
/// `link` sets MA_IDP_STARTUP_ORDER_KEEP).
fn chosen(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("target/release/deps/ma_idp-0123.startup-order"))
        .expect("the symbols chosen were kept")
        .lines()
        .map(str::to_string)
        .collect()
}

/// Whether rustc links with LLD here (its default on x86_64 Linux since 1.90): the ordering
/// needs it, and tools/ordered-cc leaves other linkers' links alone.
fn links_with_lld() -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m.rs");
    std::fs::write(&src, "fn main() {}").unwrap();
    let out = Command::new(rustc)
        .arg("--print=link-args")
        .arg("-o")
        .arg(dir.path().join("m"))
        .arg(&src)
        .output()
        .expect("rustc runs");
    String::from_utf8_lossy(&out.stdout).contains("-fuse-ld=lld")
}

/// Whether a test that needs LLD skips here (saying so).
fn skip_without_lld() -> bool {
    let skip = !links_with_lld();
    if skip {
        eprintln!("SKIPPED: rustc does not link with LLD here; tools/ordered-cc then only runs cc");
    }
    skip
}

/// `tools/ordered-cc --select BINARY` with `dir`'s list (as `rustc` wrote it): what it would
/// link first, as "SYMBOL KEY HOW" lines.
fn select(dir: &Path, binary: &str) -> Vec<String> {
    let out = Command::new("sh")
        .arg(repo().join("tools/ordered-cc"))
        .arg("--select")
        .arg(dir.join(binary))
        .env("MA_IDP_STARTUP_ORDER", dir.join("list.txt"))
        .output()
        .expect("sh runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn the_release_ma_idp_binary_has_its_listed_functions_first() {
    if skip_without_lld() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Where the linker puts the three functions by itself (this path is never reordered).
    let by_address = |m: &HashMap<String, (u64, String)>| {
        let mut v: Vec<(u64, String)> = m
            .iter()
            .filter(|(n, _)| n.starts_with("ordered_first_"))
            .map(|(n, (a, _))| (*a, n.clone()))
            .collect();
        v.sort();
        v.into_iter().map(|(_, n)| n).collect::<Vec<_>>()
    };
    let linked = link(dir.path(), "target/debug/deps/ma_idp-0123", "\n");
    let plain = by_address(&linked);
    assert_eq!(plain.len(), 3, "{plain:?}");
    // The list asks for the last two, reversed, before the rest, as tools/startup-order writes
    // them (these names have no hashes to strip): one with its size, one with a size it does
    // not have (so every symbol of its key is taken), between a comment and a name the
    // program does not have.
    let list = format!(
        "# a comment\n{} {}\nnot_in_the_program 0000000000000010\n{} ffffffffffffffff\n",
        plain[2], linked[&plain[2]].1, plain[1]
    );
    let ordered = by_address(&link(dir.path(), "target/release/deps/ma_idp-0123", &list));
    assert_eq!(
        ordered,
        vec![plain[2].clone(), plain[1].clone(), plain[0].clone()],
        "the release ma-idp binary has the listed functions first, in the list's order"
    );
    // Any other output (a debug build, another binary) is linked as cc would link it.
    for other in [
        "target/debug/deps/ma_idp-0123",
        "target/release/deps/other-0123",
    ] {
        let left = by_address(&link(dir.path(), other, &list));
        assert_eq!(left, plain, "{other} is left alone");
    }
}

#[test]
fn a_listed_size_picks_one_instance_of_a_generic_function() {
    if skip_without_lld() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The two instances of `ordered_generic` differ only by their symbols' hashes, so they
    // share one key (tools/symbol-key.awk drops the hash), and by their sizes.
    let linked = link(dir.path(), "target/debug/deps/ma_idp-0123", "\n");
    let mut instances: Vec<(&String, &(u64, String))> = linked
        .iter()
        .filter(|(n, _)| n.contains("ordered_generic"))
        .collect();
    assert_eq!(instances.len(), 2, "{linked:?}");
    // The one the linker puts later by itself is listed, so that its coming first shows.
    instances.sort_by_key(|(_, (a, _))| std::cmp::Reverse(*a));
    let (one, other) = (instances[0], instances[1]);
    assert_ne!(
        one.1.1, other.1.1,
        "the test needs instances of different sizes"
    );
    let key = |name: &str| {
        let h = name.rfind("17h").expect("a legacy-mangled name");
        format!("{}E", &name[..h])
    };
    assert_eq!(key(one.0), key(other.0));
    let list = format!("{} {}\n", key(one.0), one.1.1);
    let ordered = link(dir.path(), "target/release/deps/ma_idp-0123", &list);
    // What tools/ordered-cc gave the linker: the instance of the listed size, not the other.
    assert_eq!(chosen(dir.path()), vec![one.0.clone()]);
    // `--select` (which the benchmark's report reads) says the same of the linked binary.
    let k = key(one.0);
    assert_eq!(
        select(dir.path(), "target/release/deps/ma_idp-0123"),
        vec![format!("{} {k} exact", one.0)]
    );
    let text_start = ordered.values().map(|(a, _)| *a).min().unwrap();
    assert_eq!(ordered[one.0].0, text_start, "{ordered:?}");

    // A list from another build, where neither size is found: every instance of the key.
    let list = format!("{} ffffffffffffffff\n", key(one.0));
    link(dir.path(), "target/release/deps/ma_idp-0123", &list);
    let mut chosen = chosen(dir.path());
    chosen.sort();
    let mut both = vec![one.0.clone(), other.0.clone()];
    both.sort();
    assert_eq!(chosen, both);
    let mut selected = select(dir.path(), "target/release/deps/ma_idp-0123");
    selected.sort();
    let both: Vec<String> = both.iter().map(|n| format!("{n} {k} any")).collect();
    assert_eq!(selected, both);
}

/// A `cc` in a directory of its own under `dir` that runs the real one, but fails when
/// `fail_when` is among its arguments, after deleting its output if `delete` (as LLD does
/// early in a link).
fn cc_shim(dir: &Path, fail_when: &str, delete: bool) -> PathBuf {
    let real = Command::new("sh")
        .args(["-c", "command -v cc"])
        .output()
        .expect("sh runs");
    let real = String::from_utf8_lossy(&real.stdout).trim().to_string();
    assert!(!real.is_empty(), "no cc on PATH");
    let bin = dir.join("shim");
    std::fs::create_dir_all(&bin).unwrap();
    let shim = bin.join("cc");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\nprev=\nfor a in \"$@\"; do [ \"$prev\" = -o ] && out=$a; prev=$a; done\ncase \"$*\" in *{fail_when}*) {} echo shim refuses >&2; exit 1 ;; esac\nexec {real} \"$@\"\n",
            if delete { "rm -f \"$out\";" } else { "" }
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn a_failed_link_fails_and_a_failed_reordering_keeps_the_first_link() {
    if skip_without_lld() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let plain = link(dir.path(), "target/debug/deps/ma_idp-0123", "\n");
    let list = "ordered_first_c\nordered_first_b\n";

    // The second link fails, before the linker replaced the first link's file or after it
    // deleted it: the first link's binary stays, whole (it runs: link_with checks) and as the
    // linker laid it out by itself.
    for delete in [false, true] {
        let shim = cc_shim(
            &dir.path().join(format!("second-{delete}")),
            "symbol-ordering-file",
            delete,
        );
        let kept = link_with(
            dir.path(),
            "target/release/deps/ma_idp-0123",
            list,
            Some(&shim),
        );
        let at = |m: &HashMap<String, (u64, String)>, n: &str| m[n].0;
        for (a, b) in [
            ("ordered_first_a", "ordered_first_b"),
            ("ordered_first_b", "ordered_first_c"),
        ] {
            assert_eq!(
                at(&kept, a) < at(&kept, b),
                at(&plain, a) < at(&plain, b),
                "{kept:?}"
            );
        }
        assert!(
            !dir.path()
                .join("target/release/deps/ma_idp-0123.unordered")
                .exists(),
            "the copy kept aside is removed"
        );
    }

    // Every link fails: so does rustc, and no binary is left.
    let shim = cc_shim(&dir.path().join("always"), "-o", false);
    let out = dir.path().join("target/release/deps/ma_idp-4567");
    assert!(!rustc(dir.path(), &out, list, Some(&shim)).success());
    assert!(!out.exists());
}

#[test]
fn the_start_up_list_is_there_and_names_functions() {
    let list = std::fs::read_to_string(repo().join("tools/startup-order.txt"))
        .expect("tools/startup-order.txt exists");
    // Each line a key and a size (hexadecimal, as nm prints it).
    let names: Vec<&str> = list
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert!(
                f.len() == 2 && u64::from_str_radix(f[1], 16).is_ok(),
                "a key and a size: {l}"
            );
            f[0]
        })
        .collect();
    assert!(names.len() > 1000, "{} names", names.len());
    // Written without what changes from build to build (tools/symbol-key.awk).
    for n in &names {
        assert!(!n.contains(".llvm."), "{n}");
        let hashed = n.match_indices("17h").any(|(i, _)| {
            let rest = &n.as_bytes()[i + 3..];
            rest.len() > 16 && rest[..16].iter().all(u8::is_ascii_hexdigit) && rest[16] == b'E'
        });
        assert!(!hashed, "a legacy mangling hash left in {n}");
    }
    // ma-idp's own start-up is in it.
    assert!(
        names.iter().any(|n| n.contains("ma_idp")),
        "no ma_idp function listed"
    );
}
