//! Purchases: expiring, unguessable grants to fetch one piece of content.

use crate::content::Ext;
use crate::hash::ContentHash;
use crate::time::{Duration, WallTime};
use serde::{Deserialize, Serialize};
use std::fmt;

/// 128 random bits from the injected RNG (a CSPRNG in production).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Token(pub u128);

impl Token {
    pub fn parse(s: &str) -> Option<Token> {
        if s.len() != 32 {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(Token)
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Purchase {
    pub token: Token,
    pub hash: ContentHash,
    pub ext: Ext,
    /// Set by the authority's wall clock when the purchase is created.
    pub expires: WallTime,
    /// Hosts allowed to refer; empty means any.
    pub referrers: Vec<String>,
}

/// Why a purchase does not grant delivery now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    Expired,
    Referrer,
}

/// The shortest and longest purchase lifetimes accepted.
pub const MIN_LIFE: Duration = Duration::from_secs(1);
pub const MAX_LIFE: Duration = Duration::from_secs(366 * 24 * 3600);

/// At most this many referrers per purchase, each at most `MAX_REFERRER_LEN`
/// bytes: a purchase travels in every feed reply and snapshot, so its size
/// is bounded (see `codec::MAX_ENVELOPE_BYTES`).
pub const MAX_REFERRERS: usize = 16;
pub const MAX_REFERRER_LEN: usize = 255;

/// Why a referrer list is refused, if it is.
pub fn check_referrers(referrers: &[String]) -> Result<(), String> {
    if referrers.len() > MAX_REFERRERS {
        return Err(format!(
            "at most {MAX_REFERRERS} referrers, not {}",
            referrers.len()
        ));
    }
    match referrers.iter().find(|r| r.len() > MAX_REFERRER_LEN) {
        Some(r) => Err(format!(
            "a referrer is at most {MAX_REFERRER_LEN} bytes, not {}",
            r.len()
        )),
        None => Ok(()),
    }
}

impl Purchase {
    pub fn is_expired(&self, wall: WallTime) -> bool {
        wall >= self.expires
    }

    /// May this purchase be delivered at `wall` to a request referred by
    /// `referrer`?
    pub fn check(&self, wall: WallTime, referrer: Option<&str>) -> Result<(), Denied> {
        if self.is_expired(wall) {
            return Err(Denied::Expired);
        }
        if self.referrers.is_empty() {
            return Ok(());
        }
        let host = referrer.map(referrer_host).unwrap_or_default();
        let allowed = self
            .referrers
            .iter()
            .any(|r| host == *r || host.ends_with(&format!(".{r}")));
        if allowed {
            Ok(())
        } else {
            Err(Denied::Referrer)
        }
    }
}

/// The host part of a Referer header (`https://www.example.com:8080/x` ->
/// `www.example.com`), lower case.
pub fn referrer_host(referrer: &str) -> String {
    let rest = referrer.split_once("://").map_or(referrer, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host.starts_with('[') {
        host.split_once(']')
            .map_or(host, |(h, _)| h)
            .trim_start_matches('[')
    } else {
        host.split(':').next().unwrap_or("")
    };
    host.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{ContentHash, HashKind};

    fn purchase(referrers: &[&str]) -> Purchase {
        Purchase {
            token: Token(7),
            hash: ContentHash::compute(HashKind::Sha1, b"x"),
            ext: crate::content::Ext::lit("mp4"),
            expires: WallTime::from_secs(100),
            referrers: referrers.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn expiry_is_exclusive_at_the_instant() {
        let p = purchase(&[]);
        assert_eq!(p.check(WallTime::from_secs(99), None), Ok(()));
        assert_eq!(
            p.check(WallTime::from_secs(100), None),
            Err(Denied::Expired)
        );
    }

    #[test]
    fn referrer_allow_list_matches_hosts_and_subdomains() {
        let p = purchase(&["example.com"]);
        let t = WallTime::from_secs(1);
        assert_eq!(p.check(t, Some("https://example.com/page")), Ok(()));
        assert_eq!(p.check(t, Some("https://cdn.example.com:8443/x")), Ok(()));
        assert_eq!(
            p.check(t, Some("https://evil-example.com/")),
            Err(Denied::Referrer)
        );
        assert_eq!(p.check(t, None), Err(Denied::Referrer));
    }

    #[test]
    fn referrer_host_parsing() {
        assert_eq!(referrer_host("http://user@Host.COM:80/a?b"), "host.com");
        assert_eq!(referrer_host("https://[::1]:8080/"), "::1");
        assert_eq!(referrer_host("example.org"), "example.org");
    }

    #[test]
    fn tokens_are_32_hex_digits() {
        let t = Token(0xabc);
        assert_eq!(t.to_string().len(), 32);
        assert_eq!(Token::parse(&t.to_string()), Some(t));
        assert_eq!(Token::parse("abc"), None);
        assert_eq!(Token::parse(&"g".repeat(32)), None);
    }

    #[test]
    fn a_purchase_lasts_from_a_second_up_to_a_year_and_a_day() {
        assert_eq!(MIN_LIFE, Duration::from_secs(1));
        assert_eq!(MAX_LIFE, Duration::from_secs(31_622_400));
    }
}
