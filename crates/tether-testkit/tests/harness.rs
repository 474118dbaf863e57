//! The harness against a stand-in for the `tether` binary: a shell script that follows the
//! same command line and log contract, so the harness is tested before the real binary exists.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use tether_testkit::{HarnessError, Tether, run_check};

const DEADLINE: Duration = Duration::from_secs(5);

/// Answers `check -c FILE` and `--log-format json run -c FILE` like tether: one
/// "listener bound" line per `name = "..."` line (ports 4001, 4002, ...), "config reloaded"
/// on HUP (after the line of an admin API reload that reached the log late), "shutdown
/// complete" and exit 0 on TERM, exit 3 when the config says `crash`.
const FAKE_TETHER: &str = r#"#!/bin/sh
if [ "$1" = check ]; then
  if grep -q invalid "$3"; then echo "error: invalid config" >&2; exit 1; fi
  echo "config ok"
  exit 0
fi
config="$5"
if grep -q crash "$config"; then
  echo '{"level":"ERROR","message":"invalid config"}'
  exit 3
fi
generation=1
trap 'echo "{\"message\":\"reload failed\",\"trigger\":\"api\"}"; generation=$((generation + 1)); echo "{\"message\":\"config reloaded\",\"generation\":$generation,\"trigger\":\"signal\"}"' HUP
trap 'echo "{\"message\":\"shutdown complete\"}"; exit 0' TERM
echo "starting up" >&2
port=4000
for name in $(sed -n 's/^name = "\(.*\)"$/\1/p' "$config"); do
  port=$((port + 1))
  echo "{\"level\":\"INFO\",\"message\":\"listener bound\",\"listener\":\"$name\",\"address\":\"127.0.0.1:$port\"}"
done
while :; do sleep 1 >/dev/null 2>&1 & wait $!; done
"#;

const TWO_LISTENERS: &str = "[[listeners]]\nname = \"web\"\n\n[[listeners]]\nname = \"api\"\n";

/// Writes the script once per test process, before any test spawns one: writing an
/// executable while another thread forks makes exec fail with "text file busy". Each process
/// has its own file: under nextest every test is a process, and a shell reads its script as
/// it runs, so one process rewriting a script another one is running made that shell run
/// garbage (a flaky reload test).
fn fake_tether() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let name = format!("fake-tether-{}.sh", std::process::id());
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        let executable = std::fs::Permissions::from_mode(0o755);
        std::fs::write(&path, FAKE_TETHER)
            .and_then(|()| std::fs::set_permissions(&path, executable))
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    })
}

#[tokio::test]
async fn start_waits_for_every_listener_and_reads_their_addresses() {
    let tether = Tether::start(fake_tether(), TWO_LISTENERS).await.unwrap();

    assert_eq!(tether.listener_addr("web"), "127.0.0.1:4001".parse().unwrap());
    assert_eq!(tether.url("api"), "http://127.0.0.1:4002");
    assert_eq!(tether.try_listener_addr("missing"), None);
    assert_eq!(std::fs::read_to_string(tether.config_path()).unwrap(), TWO_LISTENERS);
    let stderr = tether.wait_for_log(|line| line["raw"] == "starting up", DEADLINE).await.unwrap();
    assert_eq!(stderr["stream"], "stderr");
    assert!(tether.rss_bytes().unwrap() > 0);
}

#[tokio::test]
async fn reload_returns_the_outcome_logged_after_its_own_signal() {
    let mut tether = Tether::start(fake_tether(), TWO_LISTENERS).await.unwrap();
    let updated = "[[listeners]]\nname = \"web\"\n";

    let first = tether.reload(updated).await.unwrap();
    let second = tether.reload(updated).await.unwrap();

    assert_eq!(first["message"], "config reloaded");
    assert_eq!(first["generation"], 2);
    assert_eq!(second["generation"], 3, "an earlier reload's line was returned");
    assert_eq!(std::fs::read_to_string(tether.config_path()).unwrap(), updated);
}

#[tokio::test]
async fn term_signal_and_wait_exit_see_a_graceful_shutdown() {
    let mut tether = Tether::start(fake_tether(), TWO_LISTENERS).await.unwrap();
    let mark = tether.log_mark();

    tether.signal("TERM").unwrap();

    let status = tether.wait_exit(DEADLINE).await.unwrap();
    assert!(status.success());
    let done = |line: &serde_json::Value| line["message"] == "shutdown complete";
    assert!(tether.wait_for_log_since(mark, done, DEADLINE).await.is_some());
    assert!(tether.wait_for_log_since(tether.log_mark(), done, DEADLINE).await.is_none());
}

#[tokio::test]
async fn start_reports_an_exit_before_the_listeners_are_bound() {
    let config = "# crash\n[[listeners]]\nname = \"web\"\n";

    let error = Tether::start(fake_tether(), config).await.unwrap_err();

    let HarnessError::Exited { status, logs, .. } = error else {
        panic!("expected Exited, got {error}");
    };
    assert_eq!(status.code(), Some(3));
    assert!(logs.contains("invalid config"), "{logs}");
}

#[tokio::test]
async fn dropping_the_handle_kills_the_process() {
    let tether = Tether::start(fake_tether(), TWO_LISTENERS).await.unwrap();
    let pid = tether.pid();
    let dir = tether.dir().to_owned();

    drop(tether);

    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "pid {pid} survived");
    assert!(!dir.exists(), "scratch directory left behind");
}

#[tokio::test]
async fn a_panic_while_the_handle_is_held_kills_the_process() {
    let tether = Tether::start(fake_tether(), TWO_LISTENERS).await.unwrap();
    let pid = tether.pid();

    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _held = tether;
        panic!("a failed assertion while tether runs");
    }));

    assert!(unwound.is_err());
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "pid {pid} survived the panic");
}

#[test]
fn run_check_reports_exit_code_and_output() {
    let ok = run_check(fake_tether(), TWO_LISTENERS).unwrap();
    assert_eq!((ok.code, ok.stdout.as_str()), (Some(0), "config ok\n"));

    let bad = run_check(fake_tether(), "# invalid\n").unwrap();
    assert_eq!(bad.code, Some(1));
    assert!(bad.stderr.contains("invalid config"), "{}", bad.stderr);
}
