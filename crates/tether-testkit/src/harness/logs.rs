//! Capture of the child's output: every line of stdout and stderr, parsed as JSON, kept in
//! arrival order for the whole life of the process.
//!
//! One thread per pipe reads lines (so the child never blocks on a full pipe, whatever the
//! test's runtime is doing) and hands them to a collector thread, the only writer of the
//! shared list. Readers get snapshots through a `watch` channel, which also wakes
//! [`LogCapture::wait_for`] on every new line and tells it when the child's output has ended.

use std::io::{self, BufRead, BufReader, Read};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

/// The lines captured so far, shared with the collector thread.
#[derive(Debug)]
pub(crate) struct LogCapture {
    lines: watch::Receiver<Vec<Value>>,
}

impl LogCapture {
    /// Starts reading `stdout` and `stderr` until both reach end of file.
    pub(crate) fn start(
        stdout: impl Read + Send + 'static,
        stderr: impl Read + Send + 'static,
    ) -> io::Result<Self> {
        let (line_tx, line_rx) = mpsc::channel();
        spawn_reader("stdout", stdout, line_tx.clone())?;
        spawn_reader("stderr", stderr, line_tx)?;
        let (log_tx, lines) = watch::channel(Vec::new());
        thread::Builder::new()
            .name("tether-log-collector".into())
            // Ends when both readers have ended; dropping `log_tx` then wakes every waiter.
            .spawn(move || {
                for line in line_rx {
                    log_tx.send_modify(|lines| lines.push(line));
                }
            })?;
        Ok(Self { lines })
    }

    /// Every line so far.
    pub(crate) fn snapshot(&self) -> Vec<Value> {
        self.lines.borrow().clone()
    }

    /// How many lines have arrived so far: a mark for [`LogCapture::wait_for`].
    pub(crate) fn len(&self) -> usize {
        self.lines.borrow().len()
    }

    /// The last line so far matching `pred`.
    pub(crate) fn find_last(&self, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        self.lines.borrow().iter().rev().find(|line| pred(line)).cloned()
    }

    /// The last `count` lines, one per line, for error messages.
    pub(crate) fn tail(&self, count: usize) -> String {
        let lines = self.lines.borrow();
        let start = lines.len().saturating_sub(count);
        lines[start..].iter().map(|line| format!("  {line}\n")).collect()
    }

    /// Waits up to `deadline` for the output to end (both pipes closed, every line
    /// collected); false if it has not.
    pub(crate) async fn wait_ended(&self, deadline: Duration) -> bool {
        let mut lines = self.lines.clone();
        let ended = async { while lines.changed().await.is_ok() {} };
        tokio::time::timeout(deadline, ended).await.is_ok()
    }

    /// The first line at index `since` or later matching `pred`, with its index; waits for
    /// new lines until `deadline` has passed or the output has ended (→ `None`).
    pub(crate) async fn wait_for(
        &self,
        since: usize,
        pred: impl Fn(&Value) -> bool,
        deadline: Duration,
    ) -> Option<(usize, Value)> {
        let mut lines = self.lines.clone();
        let mut checked = since;
        let wait = async {
            loop {
                if let Some(found) = scan(&mut lines, &mut checked, &pred) {
                    return Some(found);
                }
                if lines.changed().await.is_err() {
                    // Output ended: whatever arrived last is all there will be.
                    return scan(&mut lines, &mut checked, &pred);
                }
            }
        };
        tokio::time::timeout(deadline, wait).await.ok().flatten()
    }
}

/// Looks at the lines from `checked` on, then moves `checked` past them.
fn scan(
    lines: &mut watch::Receiver<Vec<Value>>,
    checked: &mut usize,
    pred: &impl Fn(&Value) -> bool,
) -> Option<(usize, Value)> {
    let lines = lines.borrow_and_update();
    let start = *checked;
    *checked = lines.len().max(start);
    let new = lines.get(start..)?;
    let offset = new.iter().position(pred)?;
    Some((start + offset, new[offset].clone()))
}

fn spawn_reader(
    stream: &'static str,
    pipe: impl Read + Send + 'static,
    lines: mpsc::Sender<Value>,
) -> io::Result<()> {
    thread::Builder::new().name(format!("tether-{stream}")).spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        // Until end of file, a read error or the collector is gone.
        while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
            if lines.send(parse_line(stream, &buf)).is_err() {
                return;
            }
            buf.clear();
        }
    })?;
    Ok(())
}

/// A JSON object line as is; anything else as `{"raw": line, "stream": "stdout"|"stderr"}`.
fn parse_line(stream: &str, bytes: &[u8]) -> Value {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end_matches(['\n', '\r']);
    match serde_json::from_str::<Value>(text) {
        Ok(value @ Value::Object(_)) => value,
        _ => json!({ "raw": text, "stream": stream }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_are_kept_and_other_lines_wrapped_as_raw() {
        let line = parse_line("stdout", b"{\"message\":\"listener bound\"}\n");
        assert_eq!(line["message"], "listener bound");

        let raw = parse_line("stderr", b"thread 'main' panicked\r\n");
        assert_eq!(raw, json!({ "raw": "thread 'main' panicked", "stream": "stderr" }));

        let scalar = parse_line("stdout", b"42\n");
        assert_eq!(scalar["raw"], "42");
    }

    #[tokio::test]
    async fn wait_for_finds_lines_from_the_mark_and_ends_with_the_output() {
        let out: &[u8] = b"{\"n\":1}\n{\"n\":2}\nplain\n";
        let capture = LogCapture::start(out, io::empty()).unwrap();

        let second = capture.wait_for(0, |line| line["n"] == 2, Duration::from_secs(5)).await;
        assert_eq!(second, Some((1, json!({ "n": 2 }))));

        let after_mark = capture.wait_for(2, |line| line["n"] == 1, Duration::from_secs(5)).await;
        assert_eq!(after_mark, None, "output ended without another n=1");
        assert_eq!(capture.len(), 3);
        assert_eq!(capture.find_last(|line| line.get("raw").is_some()).unwrap()["raw"], "plain");
        assert!(capture.wait_ended(Duration::from_secs(5)).await, "both inputs ended");
    }
}
