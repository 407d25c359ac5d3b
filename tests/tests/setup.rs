//! The set-up on a stock machine: `make deps` and `make doctor` run with a PATH from which some
//! prerequisites are hidden (a directory of symlinks to only the allowed tools), as a new user's
//! machine would lack them. With `RG_DEPS_INSTALL=0` nothing is installed, nothing needs root or
//! the network, and each run takes well under a second.

use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::Command;

use gateway_tests::harness::{repo_root, TempDir};

/// Every command the prerequisite table checks for. `python3` is handled apart (its venv and pip
/// modules are hidden by shadowing, not by PATH).
const TOOLS: &[&str] = &[
    "git",
    "make",
    "cargo",
    "rustc",
    "cc",
    "c++",
    "cmake",
    "pkg-config",
    "curl",
    "promtool",
    "prometheus",
    "redis-server",
    "cargo-nextest",
    "kubectl",
];

/// The pseudo-tools hidden inside Python: its `venv` module (Debian's python3-venv) and pip.
const PY_MODULES: &[&str] = &["python3-venv", "pip"];

/// What a user is told to run for each prerequisite.
fn install_command(item: &str) -> &'static str {
    match item {
        "cmake" => "apt-get install -y cmake",
        "pkg-config" => "apt-get install -y pkg-config",
        "curl" => "apt-get install -y curl",
        "cc" => "apt-get install -y build-essential",
        "promtool" | "prometheus" => "apt-get install -y prometheus",
        "redis-server" => "apt-get install -y redis-server",
        "python3-venv" => "apt-get install -y python3-venv",
        "pip" => "apt-get install -y python3-pip",
        "cargo-nextest" => "cargo install --locked cargo-nextest",
        "cargo" => "sh.rustup.rs | sh   (rustup",
        "kubectl" => "dl.k8s.io/release/v1.32.4/bin/linux/amd64/kubectl",
        other => panic!("no install command expected for {other}"),
    }
}

/// `name` on the test's own PATH.
fn real(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The Python interpreter itself (not a pyenv or similar shim, which needs its own PATH).
fn real_python() -> PathBuf {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 runs (make deps installs it)");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A machine with everything but `hidden`: a bin directory of symlinks for PATH, and an empty
/// CARGO_HOME (cargo also finds subcommands such as cargo-nextest in `$CARGO_HOME/bin`).
struct Machine {
    dir: TempDir,
}

impl Machine {
    fn without(hidden: &[&str]) -> Machine {
        let dir = TempDir::new("setup");
        let bin = dir.0.join("bin");
        std::fs::create_dir_all(&bin).expect("bin dir");
        std::fs::create_dir_all(dir.0.join("cargo-home")).expect("cargo home");
        for tool in TOOLS.iter().filter(|t| !hidden.contains(t)) {
            if let Some(target) = real(tool) {
                symlink(&target, bin.join(tool)).expect("symlink a tool");
            }
        }
        if !hidden.contains(&"python3") {
            let shadowed: Vec<&str> = PY_MODULES
                .iter()
                .filter(|m| hidden.contains(m))
                .map(|m| if *m == "pip" { "pip" } else { "ensurepip" })
                .collect();
            if shadowed.is_empty() {
                symlink(real_python(), bin.join("python3")).expect("symlink python3");
            } else {
                // A Debian python3 without python3-venv lacks `ensurepip` (`python3 -m venv`
                // fails); without python3-pip it lacks `pip`: packages that fail to import,
                // found before the real ones.
                let shadow = dir.0.join("shadow");
                for module in &shadowed {
                    let pkg = shadow.join(module);
                    std::fs::create_dir_all(&pkg).expect("shadow package");
                    std::fs::write(
                        pkg.join("__init__.py"),
                        "raise ImportError('hidden by the set-up test')\n",
                    )
                    .expect("shadow module");
                }
                let wrapper = bin.join("python3");
                std::fs::write(
                    &wrapper,
                    format!(
                        "#!/bin/sh\nPYTHONPATH='{}' exec '{}' \"$@\"\n",
                        shadow.display(),
                        real_python().display()
                    ),
                )
                .expect("python3 wrapper");
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
                    .expect("chmod python3 wrapper");
            }
        }
        Machine { dir }
    }

    /// `make TARGET` in the repository on this machine with installing turned off; the exit
    /// status and everything it printed.
    fn make(&self, target: &str) -> (bool, String) {
        self.make_with(target, false)
    }

    /// `make TARGET`, with installing allowed if `install`: safe all the same, as apt-get is
    /// never on this machine's PATH (a machine that is not Debian's).
    fn make_with(&self, target: &str, install: bool) -> (bool, String) {
        let make = real("make").expect("make is installed");
        let mut cmd = Command::new(make);
        cmd.args(["-s", "--no-print-directory", target])
            .current_dir(repo_root())
            .env_clear()
            .env("PATH", self.dir.0.join("bin"))
            .env("CARGO_HOME", self.dir.0.join("cargo-home"));
        if !install {
            cmd.env("RG_DEPS_INSTALL", "0");
        }
        // rustup's proxies find their toolchains from HOME or RUSTUP_HOME.
        for (key, value) in std::env::vars_os() {
            if key == "HOME" || key.to_string_lossy().starts_with("RUSTUP_") {
                cmd.env(key, value);
            }
        }
        let out = cmd.output().expect("run make");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

/// The line that reports `item` as missing.
fn missing_line<'a>(text: &'a str, item: &str) -> Option<&'a str> {
    text.lines().find(|l| {
        let mut words = l.split_whitespace();
        words.next() == Some(item) && l.contains("missing")
    })
}

fn assert_reported(text: &str, hidden: &[&str]) {
    for item in hidden {
        let line = missing_line(text, item)
            .unwrap_or_else(|| panic!("{item} is not reported missing:\n{text}"));
        assert!(
            line.contains(install_command(item)),
            "{item}: the line does not give `{}`:\n{text}",
            install_command(item)
        );
    }
}

/// The line `make TARGET: ...` of the doctor's verdict.
fn verdict<'a>(text: &'a str, target: &str) -> &'a str {
    let prefix = format!("make {target}:");
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no verdict for make {target}:\n{text}"))
}

const BUILD_TOOLS: &[&str] = &["cmake", "pkg-config", "curl", "python3-venv", "pip"];
const TEST_TOOLS: &[&str] = &["cargo-nextest", "promtool", "prometheus", "kubectl"];

#[test]
fn deps_lists_each_missing_prerequisite_with_its_install_command_and_fails() {
    let hidden: Vec<&str> = BUILD_TOOLS.iter().chain(TEST_TOOLS).copied().collect();
    let machine = Machine::without(&hidden);
    let (ok, text) = machine.make("deps");
    assert!(!ok, "make deps succeeded with {hidden:?} hidden:\n{text}");
    assert_reported(&text, &hidden);
    for present in ["git", "cargo", "cc", "python3"] {
        assert!(
            missing_line(&text, present).is_none(),
            "{present} is there but reported missing:\n{text}"
        );
    }
    assert!(
        text.contains("nothing installed"),
        "the report does not say nothing was installed:\n{text}"
    );
}

#[test]
fn make_run_does_not_wait_for_test_only_tools_but_make_test_does() {
    let machine = Machine::without(TEST_TOOLS);
    let (ok, text) = machine.make("deps-run");
    assert!(ok, "make run's prerequisites refused:\n{text}");
    let (ok, text) = machine.make("deps");
    assert!(!ok, "make deps succeeded without {TEST_TOOLS:?}:\n{text}");
    assert_reported(&text, TEST_TOOLS);

    let (ok, text) = machine.make("doctor");
    assert!(
        !ok,
        "make doctor exited 0 while make test cannot work:\n{text}"
    );
    assert_reported(&text, TEST_TOOLS);
    assert!(verdict(&text, "gateway").ends_with("will work"), "{text}");
    assert!(verdict(&text, "run").ends_with("will work"), "{text}");
    let test = verdict(&text, "test");
    assert!(test.contains("will NOT work"), "{text}");
    for item in TEST_TOOLS {
        assert!(
            test.contains(item),
            "make test's verdict omits {item}:\n{text}"
        );
    }
}

#[test]
fn doctor_reports_versions_and_that_the_build_cannot_start() {
    let machine = Machine::without(BUILD_TOOLS);
    let (ok, text) = machine.make("doctor");
    assert!(
        !ok,
        "make doctor exited 0 with {BUILD_TOOLS:?} hidden:\n{text}"
    );
    assert_reported(&text, BUILD_TOOLS);
    // A present tool is shown with the version it reports itself.
    let git = Command::new("git").arg("--version").output().expect("git");
    let git = String::from_utf8_lossy(&git.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("git "))
        .unwrap_or_else(|| panic!("no git line:\n{text}"));
    assert!(
        line.contains(" ok ") && line.contains(git.trim()),
        "git's line lacks `{}`:\n{text}",
        git.trim()
    );
    // cmake is hidden: even the gateway alone cannot be built; pip: the models cannot be fetched.
    let gateway = verdict(&text, "gateway");
    assert!(
        gateway.contains("will NOT work") && gateway.contains("cmake"),
        "{text}"
    );
    let run = verdict(&text, "run");
    assert!(
        run.contains("will NOT work") && run.contains("pip"),
        "{text}"
    );
}

#[test]
fn without_rust_or_apt_get_deps_names_rustup_and_installs_nothing() {
    // Installing is allowed, but there is no apt-get, and without cargo no cargo install: the
    // missing items are listed, none attempted (which would fail with "command not found").
    let hidden = ["cargo", "rustc", "cmake", "cargo-nextest"];
    let machine = Machine::without(&hidden);
    let (ok, text) = machine.make_with("deps", true);
    assert!(!ok, "make deps succeeded without Rust:\n{text}");
    assert_reported(&text, &["cargo", "cmake", "cargo-nextest"]);
    assert!(
        missing_line(&text, "cmake").is_some_and(|l| l.contains("no apt-get")),
        "{text}"
    );
    assert!(
        missing_line(&text, "cargo-nextest").is_some_and(|l| l.contains("no cargo")),
        "{text}"
    );
    assert!(
        !text.contains("installing"),
        "make deps tried to install:\n{text}"
    );
}

#[test]
fn with_every_prerequisite_present_deps_and_doctor_pass() {
    let absent: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|t| real(t).is_none())
        .collect();
    assert!(
        absent.is_empty(),
        "not installed on this machine: {absent:?} (`make deps` installs them)"
    );
    let machine = Machine::without(&[]);
    let (ok, text) = machine.make("deps");
    assert!(ok, "make deps refused with everything present:\n{text}");
    assert!(text.trim().is_empty(), "make deps printed:\n{text}");
    let (ok, text) = machine.make("doctor");
    assert!(ok, "make doctor failed with everything present:\n{text}");
    assert!(!text.contains("missing"), "{text}");
    for target in ["gateway", "run", "test"] {
        assert!(verdict(&text, target).ends_with("will work"), "{text}");
    }
}
