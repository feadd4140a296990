//! Handing purchases back. When a node's replica moves to a new feed log
//! (the authority lost its state and started over), the purchases the node
//! held are sent back to the authority in batches, each retried until
//! answered; the last batch says so, which tells a recovering authority that
//! this node is done.

use crate::io::Outbox;
use crate::message::{Ask, Message};
use crate::purchase::{Purchase, Token};
use crate::time::{Duration, Time, WallTime};
use std::collections::VecDeque;
use std::net::SocketAddr;

/// Restore request ids carry this bit, so the node can route answers.
pub const RESTORE_REQ: u64 = 1 << 62;

const BATCH: usize = 1_000;

type Batch = (Vec<Purchase>, Vec<(Token, WallTime)>, bool);

#[derive(Debug, Default)]
pub struct Restore {
    batches: VecDeque<Batch>,
    nodes: Vec<crate::ids::NodeId>,
    in_flight: Option<(u64, Time)>,
    next_req: u64,
}

impl Restore {
    /// Queues what to hand back (possibly nothing). Revocations go first, so
    /// a purchase one replica still has and another saw revoked stays revoked.
    pub fn start(
        &mut self,
        purchases: Vec<Purchase>,
        revoked: Vec<(Token, WallTime)>,
        nodes: Vec<crate::ids::NodeId>,
    ) {
        self.batches.clear();
        self.in_flight = None;
        self.nodes = nodes;
        for chunk in revoked.chunks(BATCH) {
            self.batches.push_back((Vec::new(), chunk.to_vec(), false));
        }
        for chunk in purchases.chunks(BATCH) {
            self.batches.push_back((chunk.to_vec(), Vec::new(), false));
        }
        match self.batches.back_mut() {
            Some(last) => last.2 = true,
            None => self.batches.push_back((Vec::new(), Vec::new(), true)),
        }
    }

    pub fn pending(&self) -> bool {
        !self.batches.is_empty()
    }

    pub fn on_tick(&mut self, now: Time, retry: Duration, authority: SocketAddr, out: &mut Outbox) {
        if self.in_flight.is_some_and(|(_, at)| at > now) {
            return;
        }
        let Some((purchases, revoked, done)) = self.batches.front() else {
            return;
        };
        let req = match self.in_flight {
            Some((req, _)) => req,
            None => {
                self.next_req += 1;
                RESTORE_REQ | self.next_req
            }
        };
        out.send(
            authority,
            Message::Ask {
                req,
                ask: Box::new(Ask::RestorePurchases {
                    purchases: purchases.clone(),
                    revoked: revoked.clone(),
                    nodes: self.nodes.clone(),
                    done: *done,
                }),
            },
        );
        self.in_flight = Some((req, now + retry));
    }

    /// An answer to the batch in flight; `Unavailable` (the authority's
    /// clock not settled yet) is no answer: the batch goes again at its
    /// retry time.
    pub fn on_answer(&mut self, req: u64, answer: &crate::message::Answer) {
        if matches!(answer, crate::message::Answer::Unavailable) {
            return;
        }
        if self.in_flight.is_some_and(|(r, _)| r == req) {
            self.in_flight = None;
            self.batches.pop_front();
        }
    }

    pub fn next_deadline(&self, now: Time) -> Option<Time> {
        match (self.in_flight, self.batches.is_empty()) {
            (_, true) => None,
            (Some((_, at)), false) => Some(at),
            (None, false) => Some(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{ContentHash, HashKind};
    use crate::ids::NodeId;
    use crate::io::Output;

    fn p(i: u128) -> Purchase {
        Purchase {
            token: Token(i),
            hash: ContentHash::compute(HashKind::Sha1, b"x"),
            ext: crate::content::Ext::lit("bin"),
            expires: WallTime::from_secs(10),
            referrers: vec![],
        }
    }

    fn asks(out: &mut Outbox) -> Vec<(u64, usize, bool)> {
        let mut v = Vec::new();
        while let Some(o) = out.queue.pop_front() {
            if let Output::Send { envelope, .. } = o {
                if let Message::Ask { req, ask } = envelope.msg {
                    if let Ask::RestorePurchases {
                        purchases, done, ..
                    } = *ask
                    {
                        v.push((req, purchases.len(), done));
                    }
                }
            }
        }
        v
    }

    #[test]
    fn batches_are_sent_in_turn_and_the_last_says_done() {
        let auth: SocketAddr = "10.0.0.1:7000".parse().unwrap();
        let mut r = Restore::default();
        let mut out = Outbox::new(NodeId(2), "10.0.0.2:7000".parse().unwrap());
        r.start((0..2500).map(p).collect(), vec![], vec![]);
        let retry = Duration::from_millis(200);
        let mut seen = Vec::new();
        for _ in 0..5 {
            r.on_tick(Time::ZERO, retry, auth, &mut out);
            for (req, n, done) in asks(&mut out) {
                seen.push((n, done));
                r.on_answer(req, &crate::message::Answer::Done);
            }
        }
        assert_eq!(seen, vec![(1000, false), (1000, false), (500, true)]);
        assert!(!r.pending());
    }

    #[test]
    fn an_unavailable_answer_sends_the_batch_again() {
        let auth: SocketAddr = "10.0.0.1:7000".parse().unwrap();
        let mut r = Restore::default();
        let mut out = Outbox::new(NodeId(2), "10.0.0.2:7000".parse().unwrap());
        r.start(vec![p(1)], vec![], vec![]);
        let retry = Duration::from_millis(200);
        r.on_tick(Time::ZERO, retry, auth, &mut out);
        let [(req, 1, true)] = asks(&mut out)[..] else {
            panic!("one batch")
        };
        r.on_answer(req, &crate::message::Answer::Unavailable);
        assert!(r.pending());
        r.on_tick(Time::ZERO + retry, retry, auth, &mut out);
        assert_eq!(asks(&mut out), vec![(req, 1, true)], "the same batch again");
        r.on_answer(req, &crate::message::Answer::Done);
        assert!(!r.pending());
    }

    #[test]
    fn nothing_to_restore_still_says_done_and_retries() {
        let auth: SocketAddr = "10.0.0.1:7000".parse().unwrap();
        let mut r = Restore::default();
        let mut out = Outbox::new(NodeId(2), "10.0.0.2:7000".parse().unwrap());
        r.start(vec![], vec![], vec![]);
        let retry = Duration::from_millis(200);
        r.on_tick(Time::ZERO, retry, auth, &mut out);
        let first = asks(&mut out);
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].1, first[0].2), (0, true));
        r.on_tick(Time::ZERO + retry, retry, auth, &mut out);
        assert_eq!(asks(&mut out)[0].0, first[0].0, "same request id on retry");
    }

    #[test]
    fn revocations_go_first_every_batch_names_the_nodes_and_waits_its_turn() {
        let auth: SocketAddr = "10.0.0.1:7000".parse().unwrap();
        let mut r = Restore::default();
        let mut out = Outbox::new(NodeId(2), "10.0.0.2:7000".parse().unwrap());
        let revoked = vec![(Token(7), WallTime::from_secs(10))];
        r.start(vec![p(1)], revoked, vec![NodeId(3), NodeId(4)]);
        let retry = Duration::from_millis(200);
        let t0 = Time::from_secs(5);
        assert_eq!(r.next_deadline(t0), Some(t0), "due at once");
        let mut reqs = Vec::new();
        for turn in 0..2 {
            let now = t0 + retry * turn;
            r.on_tick(now, retry, auth, &mut out);
            assert_eq!(r.next_deadline(now), Some(now + retry), "then at its retry");
            r.on_tick(now, retry, auth, &mut out);
            let sent: Vec<_> = out.queue.drain(..).collect();
            assert_eq!(sent.len(), 1, "one batch in flight at a time");
            let Output::Send { envelope, .. } = &sent[0] else {
                panic!("a send")
            };
            let Message::Ask { req, ask } = &envelope.msg else {
                panic!("an ask")
            };
            let Ask::RestorePurchases {
                purchases,
                revoked,
                nodes,
                done,
            } = &**ask
            else {
                panic!("a restore")
            };
            assert_eq!(nodes, &vec![NodeId(3), NodeId(4)]);
            if turn == 0 {
                assert_eq!((purchases.len(), revoked.len(), *done), (0, 1, false));
            } else {
                assert_eq!((purchases.len(), revoked.len(), *done), (1, 0, true));
            }
            assert_ne!(req & RESTORE_REQ, 0, "routed back to the restore");
            // A late answer to another request does not end this one.
            r.on_answer(req ^ 1, &crate::message::Answer::Done);
            assert!(r.pending());
            r.on_answer(*req, &crate::message::Answer::Done);
            reqs.push(*req);
        }
        assert_ne!(reqs[0], reqs[1], "each batch its own request");
        assert!(!r.pending());
        assert_eq!(r.next_deadline(t0), None, "nothing left to send");
    }
}
