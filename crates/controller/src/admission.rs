//! Connection admission: connection limits per address and in total, and a
//! slowdown for addresses that keep sending malformed PDUs.
//!
//! A malformed PDU ends its connection at once (NVMe/TCP 1.0 §3.6.2.3), so a
//! flooding peer reconnects and tries again; each round costs the target an
//! accept, a task, an ICResp and a C2HTermReq. Measured without a slowdown, one
//! peer doing that serially made 4,600 connections a second and cut a
//! well-behaved host's IOPS by 48 % (crates/cli/tests/flood.rs). So an address
//! that misbehaves `STRIKES_BEFORE_SLOWDOWN` times within `STRIKE_WINDOW` gets
//! its new connections served one per `interval` (growing with its strikes up to
//! `MAX_INTERVAL`), however many it opens at once: they wait, unread, until their
//! turn. Connections already running are never touched, and a host that errs
//! once in a while is never slowed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Strikes are counted over this window; a quiet window forgets them.
pub const STRIKE_WINDOW: Duration = Duration::from_secs(10);
/// Misbehaving connections an address may have per window before slowing down.
pub const STRIKES_BEFORE_SLOWDOWN: u32 = 8;
/// Interval between connections served per eight strikes.
pub const INTERVAL_STEP: Duration = Duration::from_millis(10);
/// The longest interval between an address's connections.
pub const MAX_INTERVAL: Duration = Duration::from_millis(200);

/// Connection counts and misbehaviour records.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    total: usize,
    per_host: HashMap<IpAddr, usize>,
    strikes: HashMap<IpAddr, Strikes>,
}

#[derive(Debug, Clone, Copy)]
struct Strikes {
    count: u32,
    window_start: Instant,
    next_slot: Instant,
}

/// A connection's place in the counts; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct Ticket {
    adm: Arc<Admission>,
    ip: IpAddr,
    /// Wait this long before serving the connection (a slowed-down address).
    pub delay: Duration,
}

impl Admission {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a connection from `ip` unless a limit is reached.
    pub(crate) fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        max_total: usize,
        max_per_host: usize,
        now: Instant,
    ) -> Option<Ticket> {
        let mut g = self.lock();
        let n = g.per_host.get(&ip).copied().unwrap_or(0);
        if g.total >= max_total || n >= max_per_host {
            return None;
        }
        g.total += 1;
        *g.per_host.entry(ip).or_insert(0) += 1;
        let delay = match g.strikes.get_mut(&ip) {
            Some(s) if now.duration_since(s.window_start) < STRIKE_WINDOW => {
                match interval(s.count) {
                    Some(iv) => {
                        let slot = s.next_slot.max(now);
                        s.next_slot = slot + iv;
                        slot - now
                    }
                    None => Duration::ZERO,
                }
            }
            _ => Duration::ZERO,
        };
        Some(Ticket {
            adm: self.clone(),
            ip,
            delay,
        })
    }

    /// Records that a connection from `ip` misbehaved. Returns the strike count
    /// when it just reached the slowdown threshold (for one log line).
    pub(crate) fn strike(&self, ip: IpAddr, now: Instant) -> Option<u32> {
        let mut g = self.lock();
        if g.strikes.len() >= 4096 {
            g.strikes
                .retain(|_, s| now.duration_since(s.window_start) < STRIKE_WINDOW);
        }
        let fresh = Strikes {
            count: 0,
            window_start: now,
            next_slot: now,
        };
        let s = g.strikes.entry(ip).or_insert(fresh);
        if now.duration_since(s.window_start) >= STRIKE_WINDOW {
            *s = fresh;
        }
        s.count += 1;
        (s.count == STRIKES_BEFORE_SLOWDOWN).then_some(s.count)
    }
}

/// The interval between an address's connections after `strikes` in a window.
fn interval(strikes: u32) -> Option<Duration> {
    if strikes < STRIKES_BEFORE_SLOWDOWN {
        return None;
    }
    Some((INTERVAL_STEP * (strikes / STRIKES_BEFORE_SLOWDOWN)).min(MAX_INTERVAL))
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut g = self.adm.lock();
        g.total = g.total.saturating_sub(1);
        if let Some(n) = g.per_host.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                g.per_host.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn limits_per_host_and_total() {
        let a = Arc::new(Admission::default());
        let now = Instant::now();
        let t1 = a.admit(ip(1), 3, 2, now).unwrap();
        let _t2 = a.admit(ip(1), 3, 2, now).unwrap();
        assert!(a.admit(ip(1), 3, 2, now).is_none(), "per host");
        let _t3 = a.admit(ip(2), 3, 2, now).unwrap();
        assert!(a.admit(ip(3), 3, 2, now).is_none(), "total");
        drop(t1);
        assert!(a.admit(ip(1), 3, 2, now).is_some());
    }

    #[test]
    fn occasional_errors_are_not_slowed() {
        let a = Arc::new(Admission::default());
        let now = Instant::now();
        for _ in 0..STRIKES_BEFORE_SLOWDOWN - 1 {
            a.strike(ip(1), now);
        }
        assert_eq!(a.admit(ip(1), 10, 10, now).unwrap().delay, Duration::ZERO);
    }

    #[test]
    fn a_flooding_address_is_served_one_connection_per_interval() {
        let a = Arc::new(Admission::default());
        let now = Instant::now();
        let mut reached = None;
        for _ in 0..STRIKES_BEFORE_SLOWDOWN * 2 {
            reached = reached.or(a.strike(ip(1), now));
        }
        assert_eq!(reached, Some(STRIKES_BEFORE_SLOWDOWN));
        // 16 strikes: 20 ms apart, however many connections arrive at once.
        let delays: Vec<_> = (0..3)
            .map(|_| a.admit(ip(1), 10, 10, now).unwrap().delay)
            .collect();
        assert_eq!(
            delays,
            [0, 20, 40].map(Duration::from_millis).to_vec(),
            "slots"
        );
        // Another address is not affected.
        assert_eq!(a.admit(ip(2), 10, 10, now).unwrap().delay, Duration::ZERO);
        // A quiet window forgets the strikes.
        let later = now + STRIKE_WINDOW;
        assert_eq!(a.admit(ip(1), 10, 10, later).unwrap().delay, Duration::ZERO);
        a.strike(ip(1), later);
        assert_eq!(a.admit(ip(1), 10, 10, later).unwrap().delay, Duration::ZERO);
    }

    #[test]
    fn the_interval_is_capped() {
        assert_eq!(interval(1000), Some(MAX_INTERVAL));
        assert_eq!(interval(STRIKES_BEFORE_SLOWDOWN), Some(INTERVAL_STEP));
    }
}
