//! The authority's side of the feed: one cursor per active reader. A pull
//! says where the reader is (and acknowledges everything before it); new
//! entries are pushed to every reader that pulled recently, held pulls are
//! answered when entries arrive or their wait ends, and an answer that is not
//! followed by the reader's next pull is sent again, so a lost message costs
//! one resend interval instead of a whole pull timeout.

use crate::config::FeedConfig;
use crate::feed::{FeedBody, FeedLog};
use crate::ids::NodeId;
use crate::io::Outbox;
use crate::message::Message;
use crate::time::{earliest, Duration, Time};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

#[derive(Clone, Debug)]
struct Reader {
    addr: SocketAddr,
    /// The reader's latest request id; answers carry it.
    req: u64,
    limit: u32,
    /// The reader has everything up to here (its latest `since`).
    acked: u64,
    /// We sent it everything up to here.
    sent: u64,
    last_pull: Time,
    /// A held pull waits until then for entries.
    hold_until: Option<Time>,
    /// An unacknowledged answer is sent again then.
    resend_at: Option<Time>,
    resends: u32,
    /// This reader's key in the timer index.
    timer: Option<Time>,
}

impl Reader {
    fn unacked(&self) -> bool {
        self.sent > self.acked
    }
}

/// Most resends of one answer; after that the reader's own timeout takes over.
const MAX_RESENDS: u32 = 8;

#[derive(Debug, Default)]
pub struct FeedServer {
    readers: BTreeMap<NodeId, Reader>,
    /// Each reader's next deadline (hold, resend or lease end), earliest first.
    timers: BTreeSet<(Time, NodeId)>,
    /// Entries up to here were offered to every reader.
    pushed: u64,
}

impl FeedServer {
    /// How long a reader counts as active after its last pull: long enough
    /// to keep pushing to a reader whose pulls are being lost (at 20% loss,
    /// several in a row are common), short enough to stop soon after it died.
    fn lease(cfg: &FeedConfig) -> Duration {
        cfg.pull_timeout() * 5
    }

    pub fn readers(&self) -> usize {
        self.readers.len()
    }

    #[allow(clippy::too_many_arguments)]
    pub fn on_pull(
        &mut self,
        now: Time,
        cfg: &FeedConfig,
        log: &FeedLog,
        from: NodeId,
        addr: SocketAddr,
        req: u64,
        since: u64,
        limit: u32,
        wait: Duration,
        out: &mut Outbox,
    ) {
        let r = self.readers.entry(from).or_insert(Reader {
            addr,
            req,
            limit,
            acked: since,
            sent: since,
            last_pull: now,
            hold_until: None,
            resend_at: None,
            resends: 0,
            timer: None,
        });
        r.addr = addr;
        r.req = req;
        r.limit = limit;
        r.acked = since;
        r.sent = since;
        r.last_pull = now;
        r.resend_at = None;
        r.resends = 0;
        r.hold_until = None;
        let body = log.read(since, limit);
        let nothing_new = matches!(&body, FeedBody::Entries { entries, .. } if entries.is_empty());
        if nothing_new && !wait.is_zero() {
            r.hold_until = Some(now + wait.min(cfg.long_poll * 2));
        } else {
            Self::answer(now, cfg, log, r, body, out);
        }
        Self::rearm(&mut self.timers, cfg, from, r);
    }

    fn answer(
        now: Time,
        cfg: &FeedConfig,
        log: &FeedLog,
        r: &mut Reader,
        body: FeedBody,
        out: &mut Outbox,
    ) {
        r.hold_until = None;
        if let FeedBody::Entries { entries, .. } = &body {
            if let Some(last) = entries.last() {
                r.sent = last.seq;
                r.resend_at = Some(now + cfg.resend);
            }
        }
        out.send(
            r.addr,
            Message::FeedReply {
                req: r.req,
                log: log.id(),
                body,
            },
        );
    }

    fn rearm(timers: &mut BTreeSet<(Time, NodeId)>, cfg: &FeedConfig, id: NodeId, r: &mut Reader) {
        if let Some(t) = r.timer.take() {
            timers.remove(&(t, id));
        }
        let lease_end = r.last_pull + Self::lease(cfg) + Duration::from_micros(1);
        let resend = r
            .resend_at
            .filter(|_| r.unacked() && r.resends < MAX_RESENDS);
        let t = earliest(earliest(r.hold_until, resend), Some(lease_end));
        r.timer = t;
        if let Some(t) = t {
            timers.insert((t, id));
        }
    }

    /// Handles due timers (expired holds are answered, unacknowledged answers
    /// resent, readers whose lease ran out forgotten), then pushes new entries
    /// to every reader not waiting for an acknowledgement.
    pub fn flush(&mut self, now: Time, cfg: &FeedConfig, log: &FeedLog, out: &mut Outbox) {
        while let Some(&(t, id)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            let Some(r) = self.readers.get_mut(&id) else {
                continue;
            };
            r.timer = None;
            if now.since(r.last_pull) > Self::lease(cfg) {
                self.readers.remove(&id);
                continue;
            }
            if r.unacked() {
                if r.resend_at.is_some_and(|t| t <= now) && r.resends < MAX_RESENDS {
                    r.resends += 1;
                    let body = log.read(r.acked, r.limit);
                    Self::answer(now, cfg, log, r, body, out);
                }
            } else if r.hold_until.is_some_and(|t| t <= now) {
                let body = log.read(r.sent, r.limit);
                Self::answer(now, cfg, log, r, body, out);
            }
            Self::rearm(&mut self.timers, cfg, id, r);
        }
        let head = log.head();
        if head > self.pushed {
            self.pushed = head;
            for (id, r) in self.readers.iter_mut() {
                if !r.unacked() && r.sent < head {
                    let body = log.read(r.sent, r.limit);
                    Self::answer(now, cfg, log, r, body, out);
                    Self::rearm(&mut self.timers, cfg, *id, r);
                }
            }
        }
    }

    pub fn next_deadline(&self) -> Option<Time> {
        self.timers.first().map(|(t, _)| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::Change;
    use crate::ids::{LogId, NodeId};
    use crate::io::Output;

    fn addr() -> SocketAddr {
        "10.0.0.2:7000".parse().unwrap()
    }

    fn log_with(n: u64) -> FeedLog {
        let mut log = FeedLog::new(LogId(1), 100);
        for i in 0..n {
            log.append(Change::Health {
                node: NodeId(i),
                down: true,
            });
        }
        log
    }

    fn replies(out: &mut Outbox) -> Vec<(u64, Vec<u64>, bool)> {
        let mut v = Vec::new();
        while let Some(o) = out.queue.pop_front() {
            if let Output::Send { envelope, .. } = o {
                if let Message::FeedReply {
                    req,
                    body:
                        FeedBody::Entries {
                            entries, at_end, ..
                        },
                    ..
                } = envelope.msg
                {
                    v.push((req, entries.iter().map(|e| e.seq).collect(), at_end));
                }
            }
        }
        v
    }

    fn outbox() -> Outbox {
        Outbox::new(NodeId(100), "10.0.0.1:7000".parse().unwrap())
    }

    #[test]
    fn held_pull_is_answered_when_entries_arrive() {
        let cfg = FeedConfig::default();
        let mut s = FeedServer::default();
        let mut log = log_with(2);
        let mut out = outbox();
        s.on_pull(
            Time::ZERO,
            &cfg,
            &log,
            NodeId(2),
            addr(),
            7,
            2,
            100,
            cfg.long_poll,
            &mut out,
        );
        assert!(replies(&mut out).is_empty(), "held");
        log.append(Change::NodeRemoved(NodeId(9)));
        s.flush(Time::from_millis(10), &cfg, &log, &mut out);
        assert_eq!(replies(&mut out), vec![(7, vec![3], true)]);
    }

    #[test]
    fn unacknowledged_answer_is_resent_with_the_same_request_id() {
        let cfg = FeedConfig::default();
        let mut s = FeedServer::default();
        let log = log_with(3);
        let mut out = outbox();
        s.on_pull(
            Time::ZERO,
            &cfg,
            &log,
            NodeId(2),
            addr(),
            7,
            1,
            100,
            cfg.long_poll,
            &mut out,
        );
        assert_eq!(replies(&mut out), vec![(7, vec![2, 3], true)]);
        s.flush(Time::ZERO + cfg.resend, &cfg, &log, &mut out);
        assert_eq!(replies(&mut out), vec![(7, vec![2, 3], true)], "resent");
        // The next pull acknowledges: no more resends.
        s.on_pull(
            Time::from_millis(250),
            &cfg,
            &log,
            NodeId(2),
            addr(),
            8,
            3,
            100,
            cfg.long_poll,
            &mut out,
        );
        s.flush(Time::from_millis(400), &cfg, &log, &mut out);
        assert!(replies(&mut out).is_empty());
    }

    #[test]
    fn entries_are_pushed_to_a_reader_whose_pull_was_lost() {
        let cfg = FeedConfig::default();
        let mut s = FeedServer::default();
        let mut log = log_with(1);
        let mut out = outbox();
        s.on_pull(
            Time::ZERO,
            &cfg,
            &log,
            NodeId(2),
            addr(),
            7,
            1,
            100,
            cfg.long_poll,
            &mut out,
        );
        // The hold expires and is answered empty; the reader's next pull is lost.
        s.flush(Time::ZERO + cfg.long_poll, &cfg, &log, &mut out);
        assert_eq!(replies(&mut out), vec![(7, vec![], true)]);
        log.append(Change::NodeRemoved(NodeId(9)));
        s.flush(Time::from_millis(600), &cfg, &log, &mut out);
        assert_eq!(replies(&mut out), vec![(7, vec![2], true)]);
    }

    #[test]
    fn silent_readers_are_forgotten() {
        let cfg = FeedConfig::default();
        let mut s = FeedServer::default();
        let mut log = log_with(1);
        let mut out = outbox();
        s.on_pull(
            Time::ZERO,
            &cfg,
            &log,
            NodeId(2),
            addr(),
            7,
            1,
            100,
            Duration::ZERO,
            &mut out,
        );
        let _ = replies(&mut out);
        let later = Time::ZERO + cfg.pull_timeout() * 6;
        log.append(Change::NodeRemoved(NodeId(9)));
        s.flush(later, &cfg, &log, &mut out);
        assert!(replies(&mut out).is_empty());
        assert_eq!(s.readers(), 0);
    }

    #[test]
    fn a_held_pull_is_answered_empty_at_the_end_of_its_wait_and_not_before() {
        let cfg = FeedConfig::default();
        let mut s = FeedServer::default();
        let log = log_with(1);
        let mut out = outbox();
        let wait = cfg.long_poll * 2;
        s.on_pull(
            Time::ZERO,
            &cfg,
            &log,
            NodeId(2),
            addr(),
            7,
            1,
            100,
            wait,
            &mut out,
        );
        assert_eq!(s.readers(), 1, "a held pull is a reader");
        s.flush(
            Time::ZERO + wait - Duration::from_millis(1),
            &cfg,
            &log,
            &mut out,
        );
        assert!(replies(&mut out).is_empty(), "still held");
        s.flush(Time::ZERO + wait, &cfg, &log, &mut out);
        assert_eq!(replies(&mut out), vec![(7, vec![], true)]);
    }

    /// Every message sent until `until`, flushing at each deadline.
    fn sends_until(s: &mut FeedServer, cfg: &FeedConfig, log: &FeedLog, until: Time) -> Vec<Time> {
        let mut out = outbox();
        let mut at = Vec::new();
        while let Some(t) = s.next_deadline().filter(|t| *t <= until) {
            s.flush(t, cfg, log, &mut out);
            while let Some(o) = out.queue.pop_front() {
                if matches!(o, Output::Send { .. }) {
                    at.push(t);
                }
            }
        }
        at
    }

    fn pull(s: &mut FeedServer, cfg: &FeedConfig, log: &FeedLog, since: u64, out: &mut Outbox) {
        let wait = cfg.long_poll;
        s.on_pull(
            Time::ZERO,
            cfg,
            log,
            NodeId(2),
            addr(),
            7,
            since,
            100,
            wait,
            out,
        );
    }

    #[test]
    fn an_unacknowledged_answer_is_resent_at_most_eight_times_then_the_reader_expires() {
        let cfg = FeedConfig::default();
        let mut s = FeedServer::default();
        let log = log_with(3);
        let mut out = outbox();
        pull(&mut s, &cfg, &log, 1, &mut out);
        assert_eq!(replies(&mut out).len(), 1);
        let lease = FeedServer::lease(&cfg);
        assert!(
            cfg.resend * MAX_RESENDS < lease,
            "all resends inside the lease"
        );
        let resent = sends_until(&mut s, &cfg, &log, Time::ZERO + lease * 2);
        let expected: Vec<Time> = (1..=MAX_RESENDS)
            .map(|k| Time::ZERO + cfg.resend * k)
            .collect();
        assert_eq!(resent, expected, "one resend interval apart, then silence");
        assert_eq!(s.readers(), 0, "forgotten once its lease ran out");
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn a_reader_counts_until_the_end_of_its_lease_inclusive() {
        // The last resend falls exactly at the end of the lease: the reader
        // still counts then, and is forgotten only after.
        let mut cfg = FeedConfig::default();
        let lease = FeedServer::lease(&cfg);
        cfg.resend = lease / MAX_RESENDS;
        assert_eq!(cfg.resend * MAX_RESENDS, lease);
        let mut s = FeedServer::default();
        let log = log_with(3);
        let mut out = outbox();
        pull(&mut s, &cfg, &log, 1, &mut out);
        let resent = sends_until(&mut s, &cfg, &log, Time::ZERO + lease * 2);
        assert_eq!(resent.len(), MAX_RESENDS as usize);
        assert_eq!(resent.last(), Some(&(Time::ZERO + lease)));
    }

    #[test]
    fn a_held_pull_wakes_the_server_at_its_end() {
        let cfg = FeedConfig::default();
        let mut s = FeedServer::default();
        let log = log_with(2);
        let mut out = outbox();
        pull(&mut s, &cfg, &log, 2, &mut out);
        assert!(replies(&mut out).is_empty(), "held");
        assert_eq!(s.next_deadline(), Some(Time::ZERO + cfg.long_poll));
        s.flush(Time::ZERO + cfg.long_poll, &cfg, &log, &mut out);
        assert_eq!(replies(&mut out), vec![(7, vec![], true)], "answered empty");
    }

    #[test]
    fn a_reader_told_to_take_a_snapshot_is_not_told_again_while_nothing_is_new() {
        let cfg = FeedConfig::default();
        let mut s = FeedServer::default();
        let mut log = FeedLog::new(LogId(1), 2);
        for i in 0..5 {
            log.append(Change::Health {
                node: NodeId(i),
                down: true,
            });
        }
        let mut out = outbox();
        pull(&mut s, &cfg, &log, 1, &mut out);
        let told = out
            .queue
            .drain(..)
            .filter(|o| {
                matches!(o, Output::Send { envelope, .. } if matches!(
                    envelope.msg,
                    Message::FeedReply { body: FeedBody::SnapshotRequired { .. }, .. }
                ))
            })
            .count();
        assert_eq!(told, 1);
        // The first flush offers the log's head to every reader (this server
        // has pushed nothing yet); after that, with nothing new in the log,
        // flushes push nothing to it.
        s.flush(Time::from_millis(5), &cfg, &log, &mut out);
        out.queue.clear();
        for ms in [10, 20, 30] {
            s.flush(Time::from_millis(ms), &cfg, &log, &mut out);
        }
        assert!(out.queue.is_empty(), "{:?}", out.queue);
    }
}
