//! Output to stdout that survives a reader going away.
//!
//! `println!` panics when stdout is a pipe whose reader has exited
//! (`nvmf perf … | head -1`): Rust ignores SIGPIPE, so the write fails with
//! EPIPE and the macro turns that into a panic. Putting SIGPIPE back to its
//! default would not do here: the sockets are written with `writev`, which has
//! no MSG_NOSIGNAL, so a peer's reset would kill the process. These helpers
//! drop output nobody reads instead, as nvme-cli's output does.

use std::io::Write;

/// Writes `s` to stdout as it is; a closed pipe is not an error.
pub fn emit(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes()).and_then(|()| out.flush());
}

/// `println!` for the CLI's results: formats a line and writes it with [`emit`].
macro_rules! outln {
    () => {
        $crate::stdout::emit("\n")
    };
    ($($arg:tt)*) => {
        $crate::stdout::emit(&format!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;
