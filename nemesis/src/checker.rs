//! The checker: a pure function of the recorded history. It trusts only what
//! clients were told (status codes, bodies, and the real-time order of
//! requests), never the cluster's own view of itself.
//!
//! An operation is judged only where the facts are certain:
//! - content is *live throughout* `[a, b]` when an upload of it was
//!   acknowledged (201) before `a`, and no delete of it (answered or not,
//!   except a definite refusal) could be ordered after that upload and
//!   before `b` (a delete that overlaps the upload counts as after it);
//! - a purchase is *live throughout* `[a, b]` when it was acknowledged
//!   before `a`, no revocation was sent before `b`, its life asked for by the
//!   client (from the request's start, less a tolerance) runs past `b`, and
//!   its content is live throughout `[a, b]`.
//!
//! Violation kinds (each has a test below that makes it fail):
//! `false_404_purchase`, `false_404_delivery`, `false_not_exists`,
//! `wrong_bytes`, `revoked_delivered`, `expired_delivered`, `expired_early`,
//! `expiry_wrong`, `referrer_refused`, `referrer_not_enforced`,
//! `lost_after_heal`, `not_delivered_after_heal`, `under_replicated`,
//! `zones_not_distinct`.

use crate::history::{History, Op, OpKind, Outcome, Phase};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use stretchfs_core::purchase::referrer_host;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Params {
    /// Copies every acknowledged upload must have (R).
    pub replicas: usize,
    /// Seconds after an acknowledged revocation past which the purchase
    /// must never deliver again (the signed URL lifetime plus the feed's
    /// propagation).
    pub revocation_bound: f64,
    /// Seconds of tolerance on expiry (whole-second `expires`, request
    /// latency).
    pub expiry_tolerance: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    pub kind: String,
    pub hash: String,
    /// The operation at fault, if one.
    pub op: Option<u64>,
    pub at: f64,
    pub detail: String,
    /// The content had been deleted (a delete was sent) before this was
    /// judged: the violation concerns re-uploaded bytes.
    pub reuploaded: bool,
}

/// The longest stretch of unavailability seen while a kind of fault was
/// active: from the first unavailable answer (503 or none) to the next
/// available one, for one kind of operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub op_kind: String,
    pub start: f64,
    pub end: f64,
    pub secs: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// Operations by kind, then by answer (`deliver` as `prism/store`).
    pub ops: BTreeMap<String, BTreeMap<String, usize>>,
    /// 503 answers by operation kind.
    pub unavailable_503: BTreeMap<String, usize>,
    /// Requests without an answer by operation kind.
    pub no_answer: BTreeMap<String, usize>,
    /// Longest unavailability window per fault kind ("none": no fault was
    /// active).
    pub longest_unavailable: BTreeMap<String, Window>,
    pub violations: Vec<Violation>,
    pub violations_by_kind: BTreeMap<String, usize>,
    /// Of those, how many concern content deleted and uploaded again.
    pub reuploaded_by_kind: BTreeMap<String, usize>,
    /// Acknowledged, undeleted hashes the final phase had to verify.
    pub final_live: usize,
}

/// A definite refusal: the request certainly changed nothing.
fn refused(o: &Outcome) -> bool {
    matches!(o, Outcome::Status(400 | 401 | 403 | 422))
}

struct Index<'a> {
    acked_uploads: BTreeMap<&'a str, Vec<&'a Op>>,
    deletes: BTreeMap<&'a str, Vec<&'a Op>>,
    purchases: BTreeMap<&'a str, &'a Op>,
    revokes: BTreeMap<&'a str, Vec<&'a Op>>,
}

impl<'a> Index<'a> {
    fn new(h: &'a History) -> Index<'a> {
        let mut ix = Index {
            acked_uploads: BTreeMap::new(),
            deletes: BTreeMap::new(),
            purchases: BTreeMap::new(),
            revokes: BTreeMap::new(),
        };
        for op in &h.ops {
            match &op.kind {
                OpKind::Upload { .. } if op.outcome.is(201) => {
                    ix.acked_uploads.entry(&op.hash).or_default().push(op)
                }
                OpKind::Delete if !refused(&op.outcome) => {
                    ix.deletes.entry(&op.hash).or_default().push(op)
                }
                OpKind::Purchase { token: Some(t), .. } if op.outcome.is(201) => {
                    ix.purchases.insert(t, op);
                }
                OpKind::Revoke { token } if !refused(&op.outcome) => {
                    ix.revokes.entry(token).or_default().push(op)
                }
                _ => {}
            }
        }
        ix
    }

    /// Certainly present from `a` to `b`.
    fn content_live(&self, hash: &str, a: f64, b: f64) -> bool {
        let deletes = self.deletes.get(hash).map_or(&[][..], |v| v);
        self.acked_uploads.get(hash).is_some_and(|ups| {
            ups.iter()
                .any(|u| u.end <= a && !deletes.iter().any(|d| d.start < b && d.end >= u.start))
        })
    }

    /// Certainly present at the end: an acknowledged upload that every
    /// delete finished before.
    fn content_final(&self, hash: &str) -> bool {
        let deletes = self.deletes.get(hash).map_or(&[][..], |v| v);
        self.acked_uploads
            .get(hash)
            .is_some_and(|ups| ups.iter().any(|u| deletes.iter().all(|d| d.end < u.start)))
    }

    fn life(p: &Op) -> f64 {
        match &p.kind {
            OpKind::Purchase { life_secs, .. } => *life_secs as f64,
            _ => 0.0,
        }
    }

    /// The acknowledged purchase of `token` if it is certainly live (and
    /// its content too) from `a` to `b`.
    fn purchase_live(&self, token: &str, a: f64, b: f64, tol: f64) -> Option<&'a Op> {
        let p = *self.purchases.get(token)?;
        let revoked = self
            .revokes
            .get(token)
            .is_some_and(|rs| rs.iter().any(|r| r.start < b));
        let unexpired = b < p.start + Index::life(p) - tol;
        (p.end <= a && !revoked && unexpired && self.content_live(&p.hash, a, b)).then_some(p)
    }
}

fn violation(kind: &str, op: &Op, detail: String) -> Violation {
    Violation {
        kind: kind.to_string(),
        hash: op.hash.clone(),
        op: Some(op.id),
        at: op.start,
        detail,
        reuploaded: false,
    }
}

fn allowed(referrers: &[String], referer: Option<&str>) -> bool {
    if referrers.is_empty() {
        return true;
    }
    let host = referer.map(referrer_host).unwrap_or_default();
    referrers
        .iter()
        .any(|r| host == *r || host.ends_with(&format!(".{r}")))
}

pub fn check(h: &History, p: &Params) -> Report {
    let ix = Index::new(h);
    let mut r = Report::default();
    let tol = p.expiry_tolerance;
    for op in &h.ops {
        let name = op.kind.name().to_string();
        let label = match &op.kind {
            OpKind::Deliver { store_status, .. } => format!(
                "{}/{}",
                op.outcome.label(),
                store_status.map_or("-".to_string(), |s| s.to_string())
            ),
            _ => op.outcome.label(),
        };
        *r.ops
            .entry(name.clone())
            .or_default()
            .entry(label)
            .or_default() += 1;
        match &op.outcome {
            Outcome::Status(503) => *r.unavailable_503.entry(name.clone()).or_default() += 1,
            Outcome::NoAnswer(_) => *r.no_answer.entry(name.clone()).or_default() += 1,
            _ => {}
        }
        match &op.kind {
            OpKind::Upload { .. } | OpKind::Delete | OpKind::Revoke { .. } => {}
            OpKind::Exists { present } => {
                if *present == Some(false) && ix.content_live(&op.hash, op.start, op.end) {
                    r.violations.push(violation(
                        "false_not_exists",
                        op,
                        "exists answered false for acknowledged, undeleted content".into(),
                    ));
                }
            }
            OpKind::Purchase {
                life_secs, expires, ..
            } => {
                if op.outcome.is(404) && ix.content_live(&op.hash, op.start, op.end) {
                    r.violations.push(violation(
                        "false_404_purchase",
                        op,
                        "purchase answered 404 for acknowledged, undeleted content".into(),
                    ));
                }
                if let (true, Some(e)) = (op.outcome.is(201), expires) {
                    let lo = h.wall0 + op.start + *life_secs as f64 - tol;
                    let hi = h.wall0 + op.end + *life_secs as f64 + tol;
                    if (*e as f64) < lo || (*e as f64) > hi {
                        r.violations.push(violation(
                            "expiry_wrong",
                            op,
                            format!(
                                "asked for {life_secs} s: expires {e}, expected {lo:.0}..{hi:.0} (client clock)"
                            ),
                        ));
                    }
                }
            }
            OpKind::Deliver {
                token,
                referer,
                store_status,
                bytes_ok,
                ..
            } => {
                if *bytes_ok == Some(false) {
                    r.violations.push(violation(
                        "wrong_bytes",
                        op,
                        format!("store answered {store_status:?} with bytes that differ from the upload"),
                    ));
                }
                let live = ix.purchase_live(token, op.start, op.end, tol);
                if live.is_some() && (op.outcome.is(404) || *store_status == Some(404)) {
                    r.violations.push(violation(
                        "false_404_delivery",
                        op,
                        format!(
                            "a live purchase answered {} (store {store_status:?})",
                            op.outcome.label()
                        ),
                    ));
                }
                if let Some(pur) = live {
                    if let OpKind::Purchase { referrers, .. } = &pur.kind {
                        let ok = allowed(referrers, referer.as_deref());
                        if ok && op.outcome.is(403) {
                            r.violations.push(violation(
                                "referrer_refused",
                                op,
                                format!(
                                    "referer {referer:?} is allowed by {referrers:?} but got 403"
                                ),
                            ));
                        }
                        if !ok && op.granted() {
                            r.violations.push(violation(
                                "referrer_not_enforced",
                                op,
                                format!(
                                    "referer {referer:?} is not in {referrers:?} but was delivered"
                                ),
                            ));
                        }
                    }
                }
                if let Some(pur) = ix.purchases.get(token.as_str()) {
                    let life = Index::life(pur);
                    if op.granted() && op.start > pur.end + life + tol {
                        r.violations.push(violation(
                            "expired_delivered",
                            op,
                            format!(
                                "delivered {:.1} s after the {life} s life asked for ran out",
                                op.start - pur.end - life
                            ),
                        ));
                    }
                    if op.outcome.is(410) && op.end < pur.start + life - tol {
                        r.violations.push(violation(
                            "expired_early",
                            op,
                            format!(
                                "410 {:.1} s before the {life} s life asked for ran out",
                                pur.start + life - op.end
                            ),
                        ));
                    }
                }
                if op.granted() {
                    let revoked_long_ago = ix.revokes.get(token.as_str()).and_then(|rs| {
                        rs.iter()
                            .filter(|x| x.outcome.is(200))
                            .find(|x| op.start > x.end + p.revocation_bound)
                    });
                    if let Some(rv) = revoked_long_ago {
                        r.violations.push(violation(
                            "revoked_delivered",
                            op,
                            format!(
                                "delivered {:.1} s after the revocation was acknowledged (bound {} s)",
                                op.start - rv.end,
                                p.revocation_bound
                            ),
                        ));
                    }
                }
            }
        }
    }
    final_checks(h, p, &ix, &mut r);
    windows(h, &mut r);
    for v in &mut r.violations {
        v.reuploaded = ix
            .deletes
            .get(v.hash.as_str())
            .is_some_and(|ds| ds.iter().any(|d| d.start < v.at));
        *r.violations_by_kind.entry(v.kind.clone()).or_default() += 1;
        if v.reuploaded {
            *r.reuploaded_by_kind.entry(v.kind.clone()).or_default() += 1;
        }
    }
    r
}

fn final_checks(h: &History, p: &Params, ix: &Index, r: &mut Report) {
    let live: Vec<&str> = ix
        .acked_uploads
        .keys()
        .copied()
        .filter(|hash| ix.content_final(hash))
        .collect();
    r.final_live = live.len();
    let at = h.healed_at.unwrap_or(0.0);
    let mut purchased: BTreeSet<&str> = BTreeSet::new();
    let mut delivered: BTreeSet<(&str, &str)> = BTreeSet::new();
    for op in h.ops.iter().filter(|o| o.phase == Phase::Final) {
        match &op.kind {
            OpKind::Purchase { .. } if op.outcome.is(201) => {
                purchased.insert(&op.hash);
            }
            OpKind::Deliver {
                prism, bytes_ok, ..
            } if *bytes_ok == Some(true) => {
                delivered.insert((&op.hash, prism));
            }
            _ => {}
        }
    }
    let disk: BTreeMap<&str, &Vec<(String, String)>> = h
        .disk
        .iter()
        .map(|d| (d.hash.as_str(), &d.stores))
        .collect();
    let mk = |kind: &str, hash: &str, detail: String| Violation {
        kind: kind.to_string(),
        hash: hash.to_string(),
        op: None,
        at,
        detail,
        reuploaded: false,
    };
    for hash in live {
        let tried: Vec<String> = h
            .ops
            .iter()
            .filter(|o| o.phase == Phase::Final && o.hash == hash)
            .map(|o| format!("{} {}", o.kind.name(), o.outcome.label()))
            .collect();
        if !purchased.contains(hash) {
            r.violations.push(mk(
                "lost_after_heal",
                hash,
                format!("no purchase after the heal succeeded: {tried:?}"),
            ));
        }
        for prism in &h.prisms {
            if !delivered.contains(&(hash, prism.as_str())) {
                r.violations.push(mk(
                    "not_delivered_after_heal",
                    hash,
                    format!("not delivered exactly through {prism} after the heal: {tried:?}"),
                ));
            }
        }
        let copies = disk.get(hash).map_or(&[][..], |v| &v[..]);
        let stores: BTreeSet<&str> = copies.iter().map(|(s, _)| s.as_str()).collect();
        let zones: BTreeSet<&str> = copies.iter().map(|(_, z)| z.as_str()).collect();
        if stores.len() < p.replicas {
            r.violations.push(mk(
                "under_replicated",
                hash,
                format!(
                    "{} of {} copies on disk: {stores:?}",
                    stores.len(),
                    p.replicas
                ),
            ));
        } else if zones.len() < p.replicas.min(h.zones) {
            r.violations.push(mk(
                "zones_not_distinct",
                hash,
                format!("copies in zones {zones:?} of {} zones", h.zones),
            ));
        }
    }
}

fn windows(h: &History, r: &mut Report) {
    let mut by_kind: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in h.ops.iter().filter(|o| o.phase == Phase::Load) {
        by_kind.entry(op.kind.name()).or_default().push(op);
    }
    for (kind, mut ops) in by_kind {
        ops.sort_by(|a, b| a.end.total_cmp(&b.end));
        let mut open: Option<f64> = None;
        let mut found: Vec<(f64, f64)> = Vec::new();
        for op in &ops {
            match (op.outcome.unavailable(), open) {
                (true, None) => open = Some(op.start),
                (false, Some(s)) if op.start > s => {
                    found.push((s, op.end));
                    open = None;
                }
                _ => {}
            }
        }
        if let (Some(s), Some(last)) = (open, ops.last()) {
            found.push((s, last.end));
        }
        for (s, e) in found {
            let active: BTreeSet<&str> = h
                .faults
                .iter()
                .filter(|f| f.start <= e && f.end >= s)
                .map(|f| f.kind.as_str())
                .collect();
            let kinds: Vec<&str> = if active.is_empty() {
                vec!["none"]
            } else {
                active.into_iter().collect()
            };
            for fk in kinds {
                let w = Window {
                    op_kind: kind.to_string(),
                    start: s,
                    end: e,
                    secs: e - s,
                };
                let slot = r
                    .longest_unavailable
                    .entry(fk.to_string())
                    .or_insert(w.clone());
                if w.secs > slot.secs {
                    *slot = w;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{DiskCopies, Fault};

    const H: &str = "aaaa";
    const T: &str = "tok";

    fn params() -> Params {
        Params {
            replicas: 2,
            revocation_bound: 15.0,
            expiry_tolerance: 2.0,
        }
    }

    struct B {
        h: History,
    }

    impl B {
        fn new() -> B {
            B {
                h: History {
                    wall0: 1_000_000.0,
                    prisms: vec!["prism-1".into(), "prism-2".into()],
                    zones: 2,
                    ..History::default()
                },
            }
        }
        fn op(&mut self, start: f64, end: f64, kind: OpKind, outcome: Outcome, phase: Phase) {
            let id = self.h.ops.len() as u64;
            self.h.ops.push(Op {
                id,
                client: 0,
                hash: H.into(),
                start,
                end,
                kind,
                outcome,
                phase,
            });
        }
        fn upload(&mut self, s: f64, e: f64, status: u16) -> &mut B {
            let k = OpKind::Upload {
                prism: "prism-1".into(),
                size: 10,
            };
            self.op(s, e, k, Outcome::Status(status), Phase::Load);
            self
        }
        fn delete(&mut self, s: f64, e: f64, o: Outcome) -> &mut B {
            self.op(s, e, OpKind::Delete, o, Phase::Load);
            self
        }
        fn purchase(&mut self, s: f64, e: f64, life: u64, refs: &[&str], o: u16) -> &mut B {
            let k = OpKind::Purchase {
                life_secs: life,
                referrers: refs.iter().map(|r| r.to_string()).collect(),
                token: (o == 201).then(|| T.to_string()),
                expires: (o == 201).then_some(1_000_000 + s as u64 + life),
            };
            self.op(s, e, k, Outcome::Status(o), Phase::Load);
            self
        }
        #[allow(clippy::too_many_arguments)]
        fn deliver_as(
            &mut self,
            s: f64,
            e: f64,
            referer: Option<&str>,
            prism: u16,
            store: Option<u16>,
            ok: Option<bool>,
            phase: Phase,
            via: &str,
        ) -> &mut B {
            let k = OpKind::Deliver {
                prism: via.into(),
                token: T.into(),
                referer: referer.map(str::to_string),
                range: None,
                store_status: store,
                bytes_ok: ok,
            };
            self.op(s, e, k, Outcome::Status(prism), phase);
            self
        }
        fn deliver(
            &mut self,
            s: f64,
            e: f64,
            prism: u16,
            store: Option<u16>,
            ok: Option<bool>,
        ) -> &mut B {
            self.deliver_as(s, e, None, prism, store, ok, Phase::Load, "prism-1")
        }
        fn revoke(&mut self, s: f64, e: f64, status: u16) -> &mut B {
            let k = OpKind::Revoke { token: T.into() };
            self.op(s, e, k, Outcome::Status(status), Phase::Load);
            self
        }
        /// The final phase verifies `H` completely, on two zones.
        fn healed(&mut self) -> &mut B {
            self.h.healed_at = Some(100.0);
            let k = OpKind::Purchase {
                life_secs: 3600,
                referrers: vec![],
                token: Some("final".into()),
                expires: Some(1_000_000 + 101 + 3600),
            };
            self.op(101.0, 101.1, k, Outcome::Status(201), Phase::Final);
            for via in ["prism-1", "prism-2"] {
                let k = OpKind::Deliver {
                    prism: via.into(),
                    token: "final".into(),
                    referer: None,
                    range: None,
                    store_status: Some(200),
                    bytes_ok: Some(true),
                };
                self.op(102.0, 102.1, k, Outcome::Status(302), Phase::Final);
            }
            self.h.disk = vec![DiskCopies {
                hash: H.into(),
                stores: vec![
                    ("store-1".into(), "a".into()),
                    ("store-3".into(), "b".into()),
                ],
            }];
            self
        }
        fn kinds(&self) -> Vec<String> {
            check(&self.h, &params())
                .violations
                .into_iter()
                .map(|v| v.kind)
                .collect()
        }
    }

    /// A clean history: upload, purchase, deliveries, a revocation honoured
    /// within the bound, expiry on time, referrers enforced, a delete and a
    /// re-upload, everything intact after the heal.
    #[test]
    fn a_clean_history_passes() {
        let mut b = B::new();
        b.upload(0.0, 1.0, 201)
            .purchase(2.0, 2.1, 30, &["shop.example"], 201)
            .deliver_as(
                3.0,
                3.1,
                Some("https://www.shop.example/x"),
                302,
                Some(200),
                Some(true),
                Phase::Load,
                "prism-1",
            )
            .deliver_as(
                3.0,
                3.1,
                Some("https://evil.example/"),
                403,
                None,
                None,
                Phase::Load,
                "prism-2",
            )
            .deliver(3.0, 3.1, 403, None, None)
            .revoke(20.0, 20.1, 200)
            // Within the revocation bound a delivery may still happen.
            .deliver(21.0, 21.1, 302, Some(200), Some(true))
            // A 503 while unavailable is counted, not a violation.
            .deliver(21.5, 21.6, 503, None, None)
            // Expired on time (life 30 s from 2.0, tolerance 2 s).
            .deliver(33.0, 33.1, 410, None, None)
            .deliver(60.0, 60.1, 404, None, None)
            .delete(50.0, 50.5, Outcome::Status(200))
            // A 404 on a purchase of deleted content is right.
            .purchase(51.0, 51.1, 30, &[], 404)
            .upload(52.0, 53.0, 201)
            .healed();
        b.h.faults.push(Fault {
            kind: "kill".into(),
            target: "store-1".into(),
            start: 21.0,
            end: 25.0,
            detail: String::new(),
        });
        let r = check(&b.h, &params());
        assert!(r.violations.is_empty(), "{:#?}", r.violations);
        assert_eq!(r.final_live, 1);
        assert_eq!(r.unavailable_503.get("deliver"), Some(&1));
        assert_eq!(r.longest_unavailable["kill"].op_kind, "deliver");
    }

    #[test]
    fn a_404_on_purchasing_live_content_fails() {
        let mut b = B::new();
        b.upload(0.0, 1.0, 201)
            .purchase(2.0, 2.1, 30, &[], 404)
            .healed();
        assert_eq!(b.kinds(), ["false_404_purchase"]);
    }

    #[test]
    fn a_delete_without_answer_makes_a_404_ambiguous_not_false() {
        let mut b = B::new();
        b.upload(0.0, 1.0, 201)
            .delete(1.5, 9.0, Outcome::NoAnswer("timed out".into()))
            .purchase(2.0, 2.1, 30, &[], 404)
            .upload(10.0, 11.0, 201)
            .healed();
        assert!(b.kinds().is_empty(), "{:?}", b.kinds());
    }

    #[test]
    fn a_reupload_lost_after_an_acknowledged_delete_fails() {
        let mut b = B::new();
        b.upload(0.0, 1.0, 201)
            .delete(2.0, 2.5, Outcome::Status(200))
            .upload(3.0, 4.0, 201)
            .purchase(5.0, 5.1, 30, &[], 404);
        b.h.healed_at = Some(100.0);
        let k = b.kinds();
        assert!(k.contains(&"false_404_purchase".to_string()), "{k:?}");
        assert!(k.contains(&"lost_after_heal".to_string()), "{k:?}");
        assert!(k.contains(&"not_delivered_after_heal".to_string()), "{k:?}");
        assert!(k.contains(&"under_replicated".to_string()), "{k:?}");
        let r = check(&b.h, &params());
        assert!(r.violations.iter().all(|v| v.reuploaded));
        assert_eq!(r.reuploaded_by_kind["false_404_purchase"], 1);
    }

    #[test]
    fn a_404_on_a_live_purchase_fails_at_the_prism_or_the_store() {
        let mut b = B::new();
        b.upload(0.0, 1.0, 201)
            .purchase(2.0, 2.1, 30, &[], 201)
            .deliver(3.0, 3.1, 404, None, None)
            .deliver(4.0, 4.1, 302, Some(404), None)
            .healed();
        assert_eq!(b.kinds(), ["false_404_delivery", "false_404_delivery"]);
    }

    #[test]
    fn exists_false_for_live_content_fails() {
        let mut b = B::new();
        b.upload(0.0, 1.0, 201).healed();
        b.op(
            2.0,
            2.1,
            OpKind::Exists {
                present: Some(false),
            },
            Outcome::Status(200),
            Phase::Load,
        );
        assert_eq!(b.kinds(), ["false_not_exists"]);
    }

    #[test]
    fn wrong_bytes_fail() {
        let mut b = B::new();
        b.upload(0.0, 1.0, 201)
            .purchase(2.0, 2.1, 30, &[], 201)
            .deliver(3.0, 3.1, 302, Some(200), Some(false))
            .healed();
        assert_eq!(b.kinds(), ["wrong_bytes"]);
    }

    #[test]
    fn a_revoked_purchase_delivered_past_the_bound_fails() {
        let mut b = B::new();
        b.upload(0.0, 1.0, 201)
            .purchase(2.0, 2.1, 3600, &[], 201)
            .revoke(3.0, 3.1, 200)
            .deliver(20.0, 20.1, 302, Some(200), Some(true))
            .healed();
        assert_eq!(b.kinds(), ["revoked_delivered"]);
    }

    #[test]
    fn expiry_late_early_or_misstated_fails() {
        let mut b = B::new();
        b.upload(0.0, 1.0, 201)
            .purchase(2.0, 2.1, 10, &[], 201)
            .deliver(15.0, 15.1, 302, Some(200), Some(true))
            .healed();
        assert_eq!(b.kinds(), ["expired_delivered"]);
        let mut b = B::new();
        b.upload(0.0, 1.0, 201)
            .purchase(2.0, 2.1, 10, &[], 201)
            .deliver(5.0, 5.1, 410, None, None)
            .healed();
        assert_eq!(b.kinds(), ["expired_early"]);
        let mut b = B::new();
        b.upload(0.0, 1.0, 201)
            .purchase(2.0, 2.1, 10, &[], 201)
            .healed();
        if let OpKind::Purchase { expires, .. } = &mut b.h.ops[1].kind {
            *expires = Some(1_000_000 + 2 + 3600);
        }
        assert_eq!(b.kinds(), ["expiry_wrong"]);
    }

    #[test]
    fn referrers_refused_or_not_enforced_fail() {
        let mut b = B::new();
        b.upload(0.0, 1.0, 201)
            .purchase(2.0, 2.1, 30, &["shop.example"], 201)
            .deliver_as(
                3.0,
                3.1,
                Some("https://shop.example/"),
                403,
                None,
                None,
                Phase::Load,
                "prism-1",
            )
            .deliver_as(
                3.0,
                3.1,
                Some("https://evil.example/"),
                302,
                Some(200),
                Some(true),
                Phase::Load,
                "prism-2",
            )
            .healed();
        assert_eq!(b.kinds(), ["referrer_refused", "referrer_not_enforced"]);
    }

    #[test]
    fn not_delivered_through_every_prism_after_the_heal_fails() {
        let mut b = B::new();
        b.upload(0.0, 1.0, 201).healed();
        b.h.ops
            .retain(|o| !matches!(&o.kind, OpKind::Deliver { prism, .. } if prism == "prism-2"));
        assert_eq!(b.kinds(), ["not_delivered_after_heal"]);
    }

    #[test]
    fn copies_short_of_r_or_in_one_zone_fail() {
        let mut b = B::new();
        b.upload(0.0, 1.0, 201).healed();
        b.h.disk[0].stores.pop();
        assert_eq!(b.kinds(), ["under_replicated"]);
        b.h.disk[0].stores = vec![
            ("store-1".into(), "a".into()),
            ("store-2".into(), "a".into()),
        ];
        assert_eq!(b.kinds(), ["zones_not_distinct"]);
        b.h.zones = 1;
        assert!(b.kinds().is_empty());
    }

    #[test]
    fn the_longest_unavailability_is_attributed_to_the_active_fault() {
        let mut b = B::new();
        b.upload(0.0, 1.0, 201)
            .upload(2.0, 2.5, 503)
            .upload(3.0, 3.5, 503)
            .upload(6.0, 7.0, 201)
            .upload(8.0, 8.5, 503)
            .upload(9.0, 9.2, 201)
            .healed();
        b.h.faults.push(Fault {
            kind: "partition".into(),
            target: "store-3".into(),
            start: 1.5,
            end: 5.0,
            detail: String::new(),
        });
        let r = check(&b.h, &params());
        assert_eq!(r.unavailable_503["upload"], 2 + 1);
        assert_eq!(r.longest_unavailable["partition"].secs, 5.0);
        assert!((r.longest_unavailable["none"].secs - 1.2).abs() < 1e-9);
    }
}
