//! The target's control socket: a Unix stream socket taking one-line text
//! commands, so that an operator (or a cluster manager driving an HA pair)
//! can change ANA states live without a configuration file (quick mode) and
//! without a reload. `nvmf ana-state` is its client.
//!
//! Protocol: each request is one line, each answer one line starting with
//! `ok` or `error`:
//!
//! ```text
//! ana-state ADDR:PORT GROUP STATE   ->  ok changed | ok unchanged | error MESSAGE
//! ana-state ADDR:PORT GROUP         ->  ok STATE
//! ```
//!
//! ADDR:PORT is a listen address as configured, GROUP 1..=128, STATE one of
//! optimized, non-optimized, inaccessible, persistent-loss, change. A change
//! raises the ANA Change notice as a reload does. The socket is created with
//! mode 0600 (whoever may change paths may take storage away), a stale
//! socket file left by a previous run is replaced.

use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{info, warn};

use crate::ana::{notify_changed, AnaState};
use crate::registry::Registry;

/// Longest request line accepted.
const MAX_LINE: u64 = 1024;

/// Runs one request against the registry; returns the answer line (without newline).
pub fn handle(reg: &Registry, line: &str) -> String {
    let mut w = line.split_whitespace();
    match (w.next(), w.next(), w.next(), w.next(), w.next()) {
        (Some("ana-state"), Some(port), Some(group), state, None) => {
            let port = match port.parse() {
                Ok(p) => p,
                Err(e) => return format!("error {e}"),
            };
            let group = match crate::ana::parse_group(group) {
                Ok(g) => g,
                Err(e) => return format!("error {e}"),
            };
            let Some(state) = state else {
                return match reg.ana.state_of(&port, group) {
                    Some(s) => format!("ok {s}"),
                    None => format!("error {port} is not a listen address of this target"),
                };
            };
            let state: AnaState = match state.parse() {
                Ok(s) => s,
                Err(e) => return format!("error {e}"),
            };
            match reg.ana.set(&port, group, state) {
                Ok(Some(changed)) => {
                    info!(%port, group, %state, "ANA state set through the control socket");
                    notify_changed(reg, &[changed]);
                    "ok changed".into()
                }
                Ok(None) => "ok unchanged".into(),
                Err(e) => format!("error {e}"),
            }
        }
        _ => "error unknown request (expected: ana-state ADDR:PORT GROUP [STATE])".into(),
    }
}

/// Binds the control socket at `path` (mode 0600, replacing a stale one).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if m.file_type().is_socket() {
            std::fs::remove_file(path)?;
        }
    }
    let l = UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Serves requests on `listener` until the process ends.
pub async fn serve(reg: Arc<Registry>, listener: UnixListener) {
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                let reg = reg.clone();
                tokio::spawn(async move {
                    if let Err(e) = session(&reg, s).await {
                        warn!("control socket: {e}");
                    }
                });
            }
            Err(e) => {
                warn!("control socket accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn session(reg: &Registry, s: UnixStream) -> std::io::Result<()> {
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    loop {
        let mut line = String::new();
        let n = (&mut r).take(MAX_LINE).read_line(&mut line).await?;
        if n == 0 {
            return Ok(());
        }
        let answer = if line.ends_with('\n') || n < MAX_LINE as usize {
            handle(reg, line.trim())
        } else {
            "error request line too long".into()
        };
        w.write_all(format!("{answer}\n").as_bytes()).await?;
        if answer.starts_with("error request line too long") {
            // Drain (bounded) before closing: closing a socket with unread
            // data resets it, and the client would lose the answer.
            w.shutdown().await?;
            let mut rest = (&mut r).take(1 << 20);
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(1),
                tokio::io::copy(&mut rest, &mut tokio::io::sink()),
            )
            .await;
            return Ok(());
        }
    }
}

/// The client side: sends one request line to the socket at `path` and
/// returns the answer line.
pub async fn request(path: &Path, line: &str) -> std::io::Result<String> {
    let s = UnixStream::connect(path).await?;
    let (r, mut w) = s.into_split();
    w.write_all(format!("{line}\n").as_bytes()).await?;
    w.shutdown().await?;
    let mut answer = String::new();
    BufReader::new(r)
        .take(MAX_LINE)
        .read_line(&mut answer)
        .await?;
    Ok(answer.trim_end().to_string())
}
