//! The "container" behind `pods/exec` and `pods/attach`: a deterministic echo
//! machine that understands a handful of commands, and the exit statuses
//! kubelet reports for it.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

/// Output of a running program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    Stdout(Bytes),
    Stderr(Bytes),
}

/// What the fake container runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// Prints fixed bytes to stdout and stderr, then exits with `code`.
    Print {
        stdout: String,
        stderr: String,
        code: i32,
    },
    /// Copies stdin to stdout until EOF.
    Cat,
    /// Sleeps (bounded), then exits 0.
    Sleep(Duration),
}

/// Longest `sleep` we honour, so nothing hangs a test run.
const MAX_SLEEP: Duration = Duration::from_secs(30);

impl Program {
    /// Interprets `argv` the way a minimal shell image would. `pod` is the
    /// pod name (the container's hostname).
    pub fn parse(argv: &[String], pod: &str) -> Program {
        let ok = |s: String| Program::Print {
            stdout: s,
            stderr: String::new(),
            code: 0,
        };
        let Some(cmd) = argv.first() else {
            return ok(String::new());
        };
        let args = &argv[1..];
        let base = cmd.rsplit('/').next().unwrap_or(cmd);
        match base {
            "echo" => {
                let (newline, words) = match args.first().map(String::as_str) {
                    Some("-n") => (false, &args[1..]),
                    _ => (true, args),
                };
                let mut s = words.join(" ");
                if newline {
                    s.push('\n');
                }
                ok(s)
            }
            "printf" => ok(printf(args)),
            "cat" if args.is_empty() || args.iter().all(|a| a == "-") => Program::Cat,
            "cat" => Program::Print {
                stdout: String::new(),
                stderr: args
                    .iter()
                    .map(|a| format!("cat: {a}: No such file or directory\n"))
                    .collect(),
                code: 1,
            },
            "true" => ok(String::new()),
            "false" => Program::Print {
                stdout: String::new(),
                stderr: String::new(),
                code: 1,
            },
            "hostname" => ok(format!("{pod}\n")),
            "env" | "printenv" => ok(format!(
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nHOSTNAME={pod}\nHOME=/root\nKUBERNETES_SERVICE_HOST=10.96.0.1\nKUBERNETES_SERVICE_PORT=443\n"
            )),
            "sleep" => {
                let secs = args
                    .first()
                    .and_then(|a| a.parse::<f64>().ok())
                    .unwrap_or(0.0);
                let d = Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(MAX_SLEEP);
                Program::Sleep(d.min(MAX_SLEEP))
            }
            "sh" | "bash" | "ash" | "dash" if args.first().map(String::as_str) == Some("-c") => {
                let script = args.get(1).map(String::as_str).unwrap_or("");
                shell(script, pod)
            }
            _ => Program::Print {
                stdout: String::new(),
                stderr: format!("sh: {cmd}: command not found\n"),
                code: 127,
            },
        }
    }

    /// Runs the program: reads `stdin` (a closed channel is EOF), writes to
    /// `out`, returns the exit code. Stops early when `out` is gone.
    pub async fn run(&self, mut stdin: mpsc::Receiver<Bytes>, out: mpsc::Sender<Out>) -> i32 {
        match self {
            Program::Print {
                stdout,
                stderr,
                code,
            } => {
                if !stdout.is_empty() {
                    let _ = out.send(Out::Stdout(Bytes::from(stdout.clone()))).await;
                }
                if !stderr.is_empty() {
                    let _ = out.send(Out::Stderr(Bytes::from(stderr.clone()))).await;
                }
                *code
            }
            Program::Cat => {
                while let Some(chunk) = stdin.recv().await {
                    if out.send(Out::Stdout(chunk)).await.is_err() {
                        break;
                    }
                }
                0
            }
            Program::Sleep(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(*d) => {}
                    _ = out.closed() => {}
                }
                0
            }
        }
    }
}

/// Starts `program`. With `tty`, a pty's line discipline sits between the
/// client and the program, as in a real container: input `\r` becomes `\n`
/// (ICRNL) and is echoed (ECHO), `^D` ends input, output `\n` becomes `\r\n`
/// (ONLCR). Returns the exit code's task and the output; the output ends
/// when the program has ended and all of its output is out.
pub fn spawn(
    program: Program,
    tty: bool,
    mut stdin: mpsc::Receiver<Bytes>,
) -> (tokio::task::JoinHandle<i32>, mpsc::Receiver<Out>) {
    let (out_tx, out_rx) = mpsc::channel::<Out>(16);
    if !tty {
        let job = tokio::spawn(async move { program.run(stdin, out_tx).await });
        return (job, out_rx);
    }
    let (prog_in_tx, prog_in_rx) = mpsc::channel::<Bytes>(16);
    let (prog_out_tx, mut prog_out_rx) = mpsc::channel::<Out>(16);
    let echo_tx = out_tx.clone();
    tokio::spawn(async move {
        loop {
            let chunk = tokio::select! {
                c = stdin.recv() => c,
                // The program ended (dropped its stdin): stop echoing so the
                // output can end too.
                _ = prog_in_tx.closed() => None,
            };
            let Some(chunk) = chunk else { break };
            let input = tty_input(&chunk);
            if !input.echo.is_empty() && echo_tx.send(Out::Stdout(input.echo)).await.is_err() {
                break;
            }
            if !input.to_program.is_empty() && prog_in_tx.send(input.to_program).await.is_err() {
                break;
            }
            if input.eof {
                break;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(o) = prog_out_rx.recv().await {
            let o = match o {
                Out::Stdout(b) => Out::Stdout(onlcr(&b)),
                Out::Stderr(b) => Out::Stderr(onlcr(&b)),
            };
            if out_tx.send(o).await.is_err() {
                break;
            }
        }
    });
    let job = tokio::spawn(async move { program.run(prog_in_rx, prog_out_tx).await });
    (job, out_rx)
}

/// One chunk of terminal input after the line discipline.
#[derive(Debug, PartialEq, Eq)]
pub struct TtyInput {
    pub to_program: Bytes,
    pub echo: Bytes,
    /// `^D` seen: the program's stdin ends.
    pub eof: bool,
}

/// ICRNL + ECHO (newlines echoed as `\r\n`) + `^D` as end of input.
pub fn tty_input(chunk: &[u8]) -> TtyInput {
    let mut to_program = Vec::with_capacity(chunk.len());
    let mut echo = Vec::with_capacity(chunk.len() + 4);
    for &b in chunk {
        match b {
            0x04 => {
                return TtyInput {
                    to_program: to_program.into(),
                    echo: echo.into(),
                    eof: true,
                };
            }
            b'\r' | b'\n' => {
                to_program.push(b'\n');
                echo.extend_from_slice(b"\r\n");
            }
            b => {
                to_program.push(b);
                echo.push(b);
            }
        }
    }
    TtyInput {
        to_program: to_program.into(),
        echo: echo.into(),
        eof: false,
    }
}

/// ONLCR: `\n` → `\r\n`.
pub fn onlcr(b: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(b.len() + 8);
    for &c in b {
        if c == b'\n' {
            out.push(b'\r');
        }
        out.push(c);
    }
    out.into()
}

/// `sh -c SCRIPT`: `exit N`, or one simple command (words split on
/// whitespace, single/double quotes grouping).
fn shell(script: &str, pod: &str) -> Program {
    let words = split_words(script);
    match words.first().map(String::as_str) {
        None => Program::Print {
            stdout: String::new(),
            stderr: String::new(),
            code: 0,
        },
        Some("exit") => {
            let code = match words.get(1) {
                None => 0,
                Some(n) => match n.parse::<i64>() {
                    Ok(n) => n.rem_euclid(256) as i32,
                    Err(_) => {
                        return Program::Print {
                            stdout: String::new(),
                            stderr: format!("sh: 1: exit: Illegal number: {n}\n"),
                            code: 2,
                        };
                    }
                },
            };
            Program::Print {
                stdout: String::new(),
                stderr: String::new(),
                code,
            }
        }
        Some(_) => Program::parse(&words, pod),
    }
}

fn split_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
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

/// `printf FORMAT ARGS...` with `%s`, `%d`, `%%` and `\n`/`\t`/`\\` escapes.
fn printf(args: &[String]) -> String {
    let Some(fmt) = args.first() else {
        return String::new();
    };
    let mut rest = args[1..].iter();
    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('\\') => out.push('\\'),
                Some(o) => {
                    out.push('\\');
                    out.push(o);
                }
                None => out.push('\\'),
            },
            '%' => match chars.next() {
                Some('s') | Some('d') => {
                    out.push_str(rest.next().map(String::as_str).unwrap_or(""))
                }
                Some('%') => out.push('%'),
                Some(o) => {
                    out.push('%');
                    out.push(o);
                }
                None => out.push('%'),
            },
            c => out.push(c),
        }
    }
    out
}

/// The status kubelet writes on the error channel when the process ends:
/// `None` for success, else (message, exit code).
pub fn exit_message(argv: &[String], code: i32) -> Option<String> {
    (code != 0).then(|| {
        format!("command terminated with non-zero exit code: error executing command {}, exit code {code}", go_list(argv))
    })
}

/// The v4+ JSON status for the error channel, byte-for-byte the shape kubelet
/// sends.
pub fn status_json(argv: &[String], code: i32) -> Vec<u8> {
    let v = match exit_message(argv, code) {
        None => serde_json::json!({"metadata": {}, "status": "Success"}),
        Some(message) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Go's `%v` of a `[]string`.
fn go_list(argv: &[String]) -> String {
    format!("[{}]", argv.join(" "))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    async fn run(a: &[&str], stdin: &[&str]) -> (String, String, i32) {
        let (in_tx, in_rx) = mpsc::channel(8);
        for s in stdin {
            in_tx.send(Bytes::from(s.to_string())).await.unwrap();
        }
        drop(in_tx);
        let (tx, mut rx) = mpsc::channel(8);
        let code = Program::parse(&argv(a), "pod-1").run(in_rx, tx).await;
        let (mut o, mut e) = (String::new(), String::new());
        while let Some(x) = rx.recv().await {
            match x {
                Out::Stdout(b) => o.push_str(std::str::from_utf8(&b).unwrap()),
                Out::Stderr(b) => e.push_str(std::str::from_utf8(&b).unwrap()),
            }
        }
        (o, e, code)
    }

    #[tokio::test]
    async fn commands_behave_like_a_tiny_shell() {
        assert_eq!(
            run(&["echo", "hi", "there"], &[]).await,
            ("hi there\n".into(), "".into(), 0)
        );
        assert_eq!(run(&["echo", "-n", "x"], &[]).await.0, "x");
        assert_eq!(
            run(&["cat"], &["a", "b\n"]).await,
            ("ab\n".into(), "".into(), 0)
        );
        assert_eq!(run(&["sh", "-c", "exit 3"], &[]).await.2, 3);
        assert_eq!(
            run(&["/bin/sh", "-c", "echo 'a  b'"], &[]).await.0,
            "a  b\n"
        );
        assert_eq!(run(&["false"], &[]).await.2, 1);
        assert_eq!(run(&["hostname"], &[]).await.0, "pod-1\n");
        assert_eq!(run(&["printf", "%s-%d\\n", "a", "7"], &[]).await.0, "a-7\n");
        let (o, e, c) = run(&["nosuch"], &[]).await;
        assert_eq!((o.as_str(), c), ("", 127));
        assert!(e.contains("nosuch: command not found"));
        assert!(run(&["env"], &[]).await.0.contains("HOSTNAME=pod-1\n"));
    }

    #[test]
    fn tty_line_discipline() {
        let i = tty_input(b"ab\rc\x04zz");
        assert_eq!(i.to_program, Bytes::from_static(b"ab\nc"));
        assert_eq!(i.echo, Bytes::from_static(b"ab\r\nc"));
        assert!(i.eof);
        assert!(!tty_input(b"x").eof);
        assert_eq!(onlcr(b"a\nb\n"), Bytes::from_static(b"a\r\nb\r\n"));
    }

    #[tokio::test]
    async fn tty_echoes_and_translates_and_ends_with_the_program() {
        let (in_tx, in_rx) = mpsc::channel(8);
        let (job, mut out) = spawn(Program::Cat, true, in_rx);
        in_tx.send(Bytes::from_static(b"hi\r")).await.unwrap();
        in_tx.send(Bytes::from_static(b"\x04")).await.unwrap();
        let mut got = Vec::new();
        while let Some(o) = out.recv().await {
            match o {
                Out::Stdout(b) => got.extend_from_slice(&b),
                Out::Stderr(_) => panic!("no stderr"),
            }
        }
        assert_eq!(job.await.unwrap(), 0);
        // Echo and cat's output interleave; both are there, translated.
        assert_eq!(got.len(), "hi\r\nhi\r\n".len());
        assert!(String::from_utf8(got).unwrap().contains("hi\r\n"));
        // A program that ignores stdin ends although the client's stdin stays open.
        let (_keep_open, in_rx) = mpsc::channel::<Bytes>(8);
        let (job, mut out) = spawn(Program::parse(&argv(&["echo", "x"]), "p"), true, in_rx);
        assert_eq!(
            out.recv().await,
            Some(Out::Stdout(Bytes::from_static(b"x\r\n")))
        );
        assert_eq!(out.recv().await, None);
        assert_eq!(job.await.unwrap(), 0);
    }

    #[test]
    fn status_json_matches_kubelet() {
        assert_eq!(
            status_json(&argv(&["true"]), 0),
            br#"{"metadata":{},"status":"Success"}"#.to_vec()
        );
        let v: serde_json::Value =
            serde_json::from_slice(&status_json(&argv(&["sh", "-c", "exit 3"]), 3)).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        assert!(v["message"].as_str().unwrap().contains("[sh -c exit 3]"));
    }
}
