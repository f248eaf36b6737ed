//! The cost of waking a sleeping server on this machine, with no NVMe in the way.
//!
//! A request/response ping-pong over loopback TCP: the server answers every
//! `--req`-byte request with `--resp` bytes, either sleeping in a blocking
//! `read` until the request arrives (`--mode block`, what a target that does
//! not poll pays) or spinning on a non-blocking socket (`--mode spin`, what
//! SPDK's reactor does). The client spins, as `spdk_nvme_perf` does, or with
//! `--mode block` sleeps too, as `nvmf perf` without `--hipri` does.
//! The difference between the two modes' round trips is the floor that a
//! queue depth 1 read on a target that does not poll cannot go below: run by
//! `bench/wake-floor.sh`, which pins the two processes to different cores;
//! the figures are in docs/performance.md.
//!
//! ```text
//! wake_floor server --port P --mode block|spin --resp BYTES
//! wake_floor client --port P --mode block|spin --req BYTES --resp BYTES --count N
//! ```

use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

/// Options of either role, parsed from `--name value` pairs.
struct Opts {
    port: u16,
    mode: String,
    req: usize,
    resp: usize,
    count: usize,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        port: 4599,
        mode: "spin".into(),
        req: 72,
        resp: 4120,
        count: 20_000,
    };
    let mut it = args.iter();
    while let Some(k) = it.next() {
        let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
        let num = || v.parse::<usize>().map_err(|e| format!("{k} {v}: {e}"));
        match k.as_str() {
            "--port" => o.port = v.parse().map_err(|e| format!("--port {v}: {e}"))?,
            "--mode" => o.mode = v.clone(),
            "--req" => o.req = num()?.max(1),
            "--resp" => o.resp = num()?.max(1),
            "--count" => o.count = num()?.max(1),
            _ => return Err(format!("unknown option {k}")),
        }
    }
    if o.mode != "block" && o.mode != "spin" {
        return Err(format!("--mode must be block or spin, not {}", o.mode));
    }
    Ok(o)
}

/// Reads exactly `buf.len()` bytes; on a non-blocking socket it spins on
/// `WouldBlock`. Returns false at end of stream.
fn read_full(s: &mut TcpStream, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) => return Ok(false),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Writes all of `buf`, spinning on `WouldBlock` (a non-blocking socket).
fn write_full(s: &mut TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match s.write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn server(o: &Opts) -> io::Result<()> {
    let l = TcpListener::bind(("127.0.0.1", o.port))?;
    let (mut s, _) = l.accept()?;
    s.set_nodelay(true)?;
    s.set_nonblocking(o.mode == "spin")?;
    let mut req = vec![0u8; o.req];
    let resp = vec![0u8; o.resp];
    while read_full(&mut s, &mut req)? {
        write_full(&mut s, &resp)?;
    }
    Ok(())
}

fn client(o: &Opts) -> io::Result<()> {
    // The server may still be starting: try for up to 5 s.
    let start = Instant::now();
    let mut s = loop {
        match TcpStream::connect(("127.0.0.1", o.port)) {
            Ok(s) => break s,
            Err(_) if start.elapsed().as_secs() < 5 => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    };
    s.set_nodelay(true)?;
    s.set_nonblocking(o.mode == "spin")?;
    let req = vec![0u8; o.req];
    let mut resp = vec![0u8; o.resp];
    // A tenth as many round trips first, to warm caches and the connection.
    for _ in 0..o.count / 10 {
        write_full(&mut s, &req)?;
        read_full(&mut s, &mut resp)?;
    }
    let mut lat = Vec::with_capacity(o.count);
    for _ in 0..o.count {
        let t = Instant::now();
        write_full(&mut s, &req)?;
        if !read_full(&mut s, &mut resp)? {
            return Err(io::Error::new(ErrorKind::UnexpectedEof, "server closed"));
        }
        lat.push(t.elapsed().as_nanos() as f64 / 1000.0);
    }
    let mean = lat.iter().sum::<f64>() / lat.len() as f64;
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "round trips {} mean_us {:.1} p50_us {:.1} p99_us {:.1}",
        lat.len(),
        mean,
        pct(0.50),
        pct(0.99)
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: wake_floor server|client [--port P] [--mode block|spin] [--req B] [--resp B] [--count N]";
    let Some((role, rest)) = args.split_first() else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let o = match parse(rest) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("wake_floor: {e}\n{usage}");
            std::process::exit(2);
        }
    };
    let r = match role.as_str() {
        "server" => server(&o),
        "client" => client(&o),
        _ => {
            eprintln!("wake_floor: the role is server or client, not {role}\n{usage}");
            std::process::exit(2);
        }
    };
    if let Err(e) = r {
        eprintln!("wake_floor {role}: {e}");
        std::process::exit(1);
    }
}
