//! The daemon's command line: help, version, configuration checks with file and line in the
//! error, and a clean exit when the front-end goes away.

mod common;

use std::process::Command;

use common::{config_path, Daemon, DAEMON, TIMEOUT};
use harness_vhost_user::{shared_memory, VhostUserTransport};

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(DAEMON)
        .args(args)
        .output()
        .expect("run daemon");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn scratch(name: &str, text: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!(
        "fwipc-scmi-vhost-cli-{}-{name}",
        std::process::id()
    ));
    std::fs::write(&p, text).expect("write scratch config");
    p
}

#[test]
fn help_and_version() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for s in ["--socket-path", "--config", "--check", "vhost-user", "SCMI"] {
        assert!(out.contains(s), "--help lacks {s}:\n{out}");
    }
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("fwipc-scmi-vhost "), "{out}");
}

#[test]
fn check_prints_what_the_config_describes() {
    let cfg = config_path("configs/linux-guest.toml");
    let (code, out, err) = run(&["--config", cfg.to_str().unwrap(), "--check"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("vendor \"fwipc\", sub-vendor \"linux-test\", 2 sensors, 2 clocks, 1 perf, 2 power, 2 reset, 1 voltage domains"),
        "{out}"
    );
}

#[test]
fn bad_configs_are_reported_with_file_and_line() {
    let syntax = scratch("syntax.toml", "vendor = \"v\"\n\n[[clocks]\nname = \"c\"\n");
    let (code, _, err) = run(&["-c", syntax.to_str().unwrap(), "-s", "/nonexistent/x.sock"]);
    assert_eq!(code, 2);
    assert!(err.contains(&format!("{}:3: ", syntax.display())), "{err}");

    let semantic = scratch(
        "semantic.toml",
        "vendor = \"v\"\n\n[[perf_domains]]\nname = \"p\"\nlevels = [1, 2]\nlevel = 3\n",
    );
    let (code, _, err) = run(&["-c", semantic.to_str().unwrap(), "--check"]);
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!(
            "{}:3: perf_domains[0] \"p\": level 3",
            semantic.display()
        )),
        "{err}"
    );

    let (code, _, err) = run(&["-c", "/nonexistent/fwipc.toml", "--check"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("/nonexistent/fwipc.toml: cannot read"),
        "{err}"
    );

    let (code, _, err) = run(&["-c", syntax.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    let _ = std::fs::remove_file(syntax);
    let _ = std::fs::remove_file(semantic);

    // No socket path and no --check.
    let cfg = config_path("configs/linux-guest.toml");
    let (code, _, err) = run(&["-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("--socket-path"), "{err}");
}

#[test]
fn exits_zero_when_the_front_end_hangs_up() {
    let mut d = Daemon::spawn(&config_path("configs/linux-guest.toml")).expect("spawn");
    let t = VhostUserTransport::connect(d.socket(), shared_memory(), TIMEOUT).expect("connect");
    assert!(d.exited().is_none(), "serving");
    drop(t);
    let st = d
        .wait_exit(TIMEOUT)
        .expect("daemon exits after the hang-up");
    assert_eq!(st.code(), Some(0), "log:\n{}", d.log());
    assert!(!d.socket().exists(), "socket removed");
}
