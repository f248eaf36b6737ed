//! The lock that orders a namespace's writes against fused Compare and Write
//! (NVMe Base 2.0 §3.4.2).
//!
//! Every command that writes holds it shared; a fused pair holds it
//! exclusively across its compare and its write, so no queue writes the
//! namespace in between. A write sent to the kernel through io_uring
//! (crate::uring) holds its share until the completion comes back, on whatever
//! thread that is, so the shared guard is owned (`Arc`) and `Send`, which
//! `std::sync::RwLock`'s guards are not.
//!
//! An exclusive waiter stops new shares, so a steady stream of writes cannot
//! starve a fused pair.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct State {
    /// Shares held.
    shared: usize,
    /// The exclusive hold is taken.
    exclusive: bool,
    /// Exclusive holds waited for.
    waiting: usize,
}

/// Shared/exclusive lock with owned shared guards.
#[derive(Debug, Default)]
pub struct WriteOrder {
    state: Mutex<State>,
    changed: Condvar,
}

/// A share of a [`WriteOrder`], released on drop.
#[derive(Debug)]
pub struct SharedHold(Arc<WriteOrder>);

/// The exclusive hold of a [`WriteOrder`], released on drop.
#[derive(Debug)]
pub struct ExclusiveHold<'a>(&'a WriteOrder);

impl WriteOrder {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A share, waiting while a fused pair holds or waits for the lock.
    pub fn shared(self: &Arc<Self>) -> SharedHold {
        let mut s = self.lock();
        while s.exclusive || s.waiting > 0 {
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.shared += 1;
        SharedHold(self.clone())
    }

    /// A share if one can be had without waiting (for callers on an async
    /// task, which must not block).
    pub fn try_shared(self: &Arc<Self>) -> Option<SharedHold> {
        let mut s = self.lock();
        if s.exclusive || s.waiting > 0 {
            return None;
        }
        s.shared += 1;
        Some(SharedHold(self.clone()))
    }

    /// The exclusive hold, once every share is released.
    pub fn exclusive(&self) -> ExclusiveHold<'_> {
        let mut s = self.lock();
        s.waiting += 1;
        while s.exclusive || s.shared > 0 {
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.waiting -= 1;
        s.exclusive = true;
        ExclusiveHold(self)
    }
}

impl Drop for SharedHold {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.shared -= 1;
        if s.shared == 0 && s.waiting > 0 {
            self.0.changed.notify_all();
        }
    }
}

impl Drop for ExclusiveHold<'_> {
    fn drop(&mut self) {
        self.0.lock().exclusive = false;
        self.0.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[test]
    fn shares_coexist_and_exclusive_waits_for_them() {
        let l = Arc::new(WriteOrder::default());
        let a = l.shared();
        let b = l.try_shared().expect("a second share");
        let got = Arc::new(AtomicBool::new(false));
        let t = {
            let (l, got) = (l.clone(), got.clone());
            std::thread::spawn(move || {
                let _x = l.exclusive();
                got.store(true, Ordering::SeqCst);
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !got.load(Ordering::SeqCst),
            "exclusive while shares are held"
        );
        // A waiting exclusive hold stops new shares (no starvation).
        assert!(l.try_shared().is_none());
        drop(a);
        std::thread::sleep(Duration::from_millis(20));
        assert!(!got.load(Ordering::SeqCst));
        // The share moves to another thread and is released there.
        std::thread::spawn(move || drop(b)).join().unwrap();
        t.join().unwrap();
        assert!(got.load(Ordering::SeqCst));
        assert!(l.try_shared().is_some());
    }

    #[test]
    fn shares_wait_for_the_exclusive_hold() {
        let l = Arc::new(WriteOrder::default());
        let x = l.exclusive();
        assert!(l.try_shared().is_none());
        let t = {
            let l = l.clone();
            std::thread::spawn(move || drop(l.shared()))
        };
        std::thread::sleep(Duration::from_millis(30));
        assert!(!t.is_finished());
        drop(x);
        t.join().unwrap();
    }
}
