//! The availability oracle: once the cluster is whole again after the final
//! heal (every host that still exists running, the network lossless and
//! unpartitioned), a prism answers "not ready" or "unavailable" only inside
//! a bounded window, and after it only where the ground truth says it must
//! (no intact copy on any running store, fewer running stores than the
//! write quorum, a delete of the same bytes racing an upload).
//!
//! The window opens at the heal, or, when the authority lost its state, at
//! the end of the recovery the design allows it: `recovery_window` after it
//! started empty, four windows when a node the lost state knew will never
//! come back (a wiped id, a lost store), since the authority waits that long
//! for it. Per seed, the time from the window's opening to the last refusal
//! is measured and reported; a refusal later than the bound is a violation.

use crate::clients::{Clients, Op, Pending};
use crate::oracle::{Oracle, ViolationKind};
use crate::world::World;
use stretchfs_core::hash::ContentHash;
use stretchfs_core::{ClientError, Time};
use stretchfs_transport_sim::HostId;

impl Oracle {
    /// Judges a "not ready" or "unavailable" answer to a request issued
    /// after the final heal.
    pub fn on_refusal(
        &mut self,
        w: &World,
        clients: &Clients,
        prism: HostId,
        pending: &Pending,
        e: &ClientError,
    ) {
        let why = match e {
            ClientError::NotReady => "not ready",
            ClientError::Unavailable(why) => why,
            _ => return,
        };
        let whole = w.hosts.iter().all(|h| h.lost || h.is_up());
        if pending.issued_at < self.heal_at
            || !whole
            || self.excused(w, clients, &pending.op, pending.issued_at)
        {
            return;
        }
        let late = w.now.since(self.serving_from(w));
        self.latest_refusal = self.latest_refusal.max(late);
        let e = self.measured.refusals_after_heal.entry(why).or_default();
        e.0 += 1;
        e.1 = e.1.max(late);
        if late > self.availability_bound {
            self.violate(
                w.now,
                ViolationKind::Unavailable,
                format!(
                    "host {prism} answered {why:?} {late:?} after the prisms should serve again (bound {:?}) to a request issued at {}",
                    self.availability_bound, pending.issued_at
                ),
            );
        }
    }

    /// A refusal the ground truth calls for: nothing to deliver from, too
    /// few stores to take a write (running, not drained), or a delete
    /// racing an upload.
    fn excused(&self, w: &World, clients: &Clients, op: &Op, issued_at: Time) -> bool {
        let running_stores = w
            .hosts
            .iter()
            .enumerate()
            .filter(|(i, h)| w.cfg.hosts[*i].roles.store && !h.lost && h.is_up())
            .filter(|(i, _)| !self.drained.contains(i))
            .count();
        match op {
            // A delete of the same bytes racing the upload may win.
            Op::Upload { hash } => {
                running_stores < self.write_quorum || deleted_meanwhile(clients, hash, issued_at)
            }
            Op::Purchase { hash, .. } => !intact_anywhere(w, hash),
            Op::Deliver { n, .. } => !intact_anywhere(w, &clients.purchases[*n].hash),
            _ => false,
        }
    }

    /// When every prism should serve again: once the cluster is whole (the
    /// heal, or a host's later restart), or at the end of the recovery an
    /// authority that started empty is allowed.
    fn serving_from(&self, w: &World) -> Time {
        let whole = w
            .hosts
            .iter()
            .filter(|h| !h.lost)
            .map(|h| h.stable_since())
            .fold(self.heal_at, Time::max);
        let (Some(wipe), Some(start)) = (self.wipes.last(), self.authority_started) else {
            return whole;
        };
        if start < *wipe {
            return whole;
        }
        let never_back = self
            .retired
            .iter()
            .any(|id| w.node_hosts.get(id).is_some_and(|h| *h != 0));
        let windows = if never_back { 4 } else { 2 };
        whole.max(start + self.recovery_window * windows)
    }
}

fn intact_anywhere(w: &World, hash: &ContentHash) -> bool {
    w.hosts
        .iter()
        .filter(|h| !h.lost && h.is_up())
        .any(|h| h.content.intact(hash))
}

/// A delete of `hash` was asked shortly before the request (or during it)
/// and had not been acknowledged when it was issued: its drops may still be
/// going out. A delete asked longer ago than `RACE` has had its effect.
fn deleted_meanwhile(clients: &Clients, hash: &ContentHash, issued_at: Time) -> bool {
    clients.deletions.iter().any(|d| {
        d.hash == *hash
            && issued_at.since(d.issued_at) < RACE
            && d.settled_at.is_none_or(|s| s >= issued_at)
    })
}

/// A prism's ask for a delete, its retries, and the drop orders it sets off
/// (resent every second until answered): well past all of them.
const RACE: stretchfs_core::Duration = stretchfs_core::Duration::from_secs(15);
