//! `requires` trees (`provider`, `any`, `all`, `allow_missing`, `scopes`,
//! `claims`, `peer`, `client_ip`), evaluated lazily: a provider's token is
//! verified only when a node asks for it, and at most once per request;
//! the peer and the client address are read only when a node asks.

use crate::config::{ClaimCheck, RequirementConfig};
use crate::matcher;
use crate::peer::{Peer, PeerRule};
use crate::verifier::{Failure, Verified};
use std::net::IpAddr;
use std::rc::Rc;

/// What the nodes ask of the request; the caller memoizes each answer.
pub trait Inputs {
    /// What provider `p` makes of the request's token.
    fn token(&mut self, p: usize) -> Outcome;
    /// The calling workload.
    fn peer(&mut self) -> Peer {
        Peer::Missing
    }
    /// The client's address (`None`: unknown).
    fn client_ip(&mut self) -> Option<IpAddr> {
        None
    }
}

/// Token-only trees (and tests) can pass a closure.
impl<F: FnMut(usize) -> Outcome> Inputs for F {
    fn token(&mut self, p: usize) -> Outcome {
        self(p)
    }
}

/// A compiled requirement; providers by index.
#[derive(Debug, Clone)]
pub enum Requirement {
    Provider {
        provider: usize,
        scopes: Vec<String>,
        claims: Vec<ClaimCheck>,
        allow_missing: bool,
    },
    Any(Vec<Requirement>, bool),
    All(Vec<Requirement>, bool),
    Peer(PeerRule),
    ClientIp(Vec<ipnet::IpNet>),
}

/// What one provider made of the request's token.
#[derive(Debug, Clone)]
pub enum Outcome {
    Missing,
    Invalid(Failure),
    Valid(Rc<Verified>),
    /// No good key set yet (`on_jwks_unavailable` decides).
    Unavailable,
    /// No key set yet and `on_jwks_unavailable: allow`: passes unchecked.
    AllowedUnchecked,
    /// A JWKS fetch must run before this provider can answer.
    Pending,
}

/// Why a requirement is not met, in the order answers prefer them.
#[derive(Debug, Clone, PartialEq)]
pub enum Unmet {
    Missing,
    Unavailable(usize),
    Invalid(Failure),
    /// 403: the token is valid but lacks scopes (listed) or a claim.
    Insufficient {
        scopes: Vec<String>,
        claim: bool,
    },
    /// 403: no client certificate (or no trusted XFCC).
    PeerMissing,
    /// 403: a peer whose identity is not listed.
    PeerMismatch,
    /// 403: the client address is in none of the networks.
    ClientIpNotAllowed,
}

impl Unmet {
    /// Which failure of an `any` answers: the most specific about the
    /// token. Connection failures rank lowest there, since a token would
    /// still satisfy the `any` (its 401 is the actionable answer).
    fn rank(&self) -> u8 {
        match self {
            Unmet::PeerMissing | Unmet::PeerMismatch | Unmet::ClientIpNotAllowed => 0,
            Unmet::Missing => 1,
            Unmet::Unavailable(_) => 2,
            Unmet::Invalid(_) => 3,
            Unmet::Insufficient { .. } => 4,
        }
    }
}

/// The tree's verdict.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Met, by these providers' tokens (empty: met without a token).
    Met(Vec<(usize, Rc<Verified>)>),
    Unmet(Unmet),
    /// Provider waiting for its key set.
    Pending(usize),
}

enum Step {
    Met(Vec<(usize, Rc<Verified>)>),
    Unmet(Unmet),
    Pending(usize),
}

impl Requirement {
    /// `config` was validated: a list that fails to parse here compiles to
    /// a node no request meets (never reached, and never an open door).
    pub fn compile(config: &RequirementConfig, index: &dyn Fn(&str) -> usize) -> Requirement {
        if let Some(peer) = &config.peer {
            let (ids, domains) = peer.parse().unwrap_or_default();
            return Requirement::Peer(PeerRule { ids, domains });
        }
        if let Some(ip) = &config.client_ip {
            return Requirement::ClientIp(ip.parse().unwrap_or_default());
        }
        if let Some(list) = &config.any {
            return Requirement::Any(
                list.iter()
                    .map(|c| Requirement::compile(c, index))
                    .collect(),
                config.allow_missing,
            );
        }
        if let Some(list) = &config.all {
            return Requirement::All(
                list.iter()
                    .map(|c| Requirement::compile(c, index))
                    .collect(),
                config.allow_missing,
            );
        }
        Requirement::Provider {
            provider: index(config.provider.as_deref().unwrap_or_default()),
            scopes: config.scopes.clone(),
            claims: config.claims.clone(),
            allow_missing: config.allow_missing,
        }
    }

    /// Every provider the tree mentions.
    pub fn providers(&self, out: &mut Vec<usize>) {
        match self {
            Requirement::Provider { provider, .. } => {
                if !out.contains(provider) {
                    out.push(*provider);
                }
            }
            Requirement::Any(list, _) | Requirement::All(list, _) => {
                list.iter().for_each(|r| r.providers(out))
            }
            Requirement::Peer(_) | Requirement::ClientIp(_) => {}
        }
    }

    /// Whether a node of the tree reads the peer.
    pub fn reads_peer(&self) -> bool {
        match self {
            Requirement::Peer(_) => true,
            Requirement::Any(list, _) | Requirement::All(list, _) => {
                list.iter().any(Requirement::reads_peer)
            }
            _ => false,
        }
    }

    /// Whether a node of the tree reads the client address.
    pub fn reads_client_ip(&self) -> bool {
        match self {
            Requirement::ClientIp(_) => true,
            Requirement::Any(list, _) | Requirement::All(list, _) => {
                list.iter().any(Requirement::reads_client_ip)
            }
            _ => false,
        }
    }

    /// Peer and address nodes: what the connection is, whatever the token.
    fn is_connection(&self) -> bool {
        matches!(self, Requirement::Peer(_) | Requirement::ClientIp(_))
    }

    /// Evaluates with `inputs`, which the caller memoizes.
    pub fn evaluate(&self, outcome: &mut dyn Inputs) -> Verdict {
        match self.step(outcome) {
            Step::Met(v) => Verdict::Met(v),
            Step::Unmet(u) => Verdict::Unmet(u),
            Step::Pending(p) => Verdict::Pending(p),
        }
    }

    fn step(&self, outcome: &mut dyn Inputs) -> Step {
        let (result, allow_missing) = match self {
            Requirement::Peer(rule) => {
                let result = match outcome.peer() {
                    Peer::Missing => Step::Unmet(Unmet::PeerMissing),
                    Peer::Ids(ids) if rule.admits(&ids) => Step::Met(Vec::new()),
                    Peer::Ids(_) => Step::Unmet(Unmet::PeerMismatch),
                };
                (result, false)
            }
            Requirement::ClientIp(nets) => {
                let allowed = outcome
                    .client_ip()
                    .is_some_and(|ip| nets.iter().any(|n| n.contains(&ip)));
                let result = match allowed {
                    true => Step::Met(Vec::new()),
                    false => Step::Unmet(Unmet::ClientIpNotAllowed),
                };
                (result, false)
            }
            Requirement::Provider {
                provider,
                scopes,
                claims,
                allow_missing,
            } => {
                let result = match outcome.token(*provider) {
                    Outcome::Missing => Step::Unmet(Unmet::Missing),
                    Outcome::Invalid(f) => Step::Unmet(Unmet::Invalid(f)),
                    Outcome::Unavailable => Step::Unmet(Unmet::Unavailable(*provider)),
                    Outcome::AllowedUnchecked => Step::Met(Vec::new()),
                    Outcome::Pending => Step::Pending(*provider),
                    Outcome::Valid(v) => {
                        let missing = matcher::missing_scopes(&v.claims, scopes);
                        let claims_ok = claims.iter().all(|c| matcher::check(&v.claims, c));
                        if missing.is_empty() && claims_ok {
                            Step::Met(vec![(*provider, v)])
                        } else {
                            Step::Unmet(Unmet::Insufficient {
                                scopes: scopes.clone(),
                                claim: !claims_ok,
                            })
                        }
                    }
                };
                (result, *allow_missing)
            }
            Requirement::Any(list, allow_missing) => {
                let mut worst: Option<Unmet> = None;
                let mut met = None;
                for child in list {
                    match child.step(outcome) {
                        Step::Met(v) => {
                            met = Some(v);
                            break;
                        }
                        Step::Pending(p) => return Step::Pending(p),
                        Step::Unmet(u) => {
                            if worst.as_ref().is_none_or(|w| u.rank() > w.rank()) {
                                worst = Some(u);
                            }
                        }
                    }
                }
                let result = match (met, worst) {
                    (Some(v), _) => Step::Met(v),
                    (None, Some(u)) => Step::Unmet(u),
                    (None, None) => Step::Unmet(Unmet::Missing),
                };
                (result, *allow_missing)
            }
            Requirement::All(list, allow_missing) => {
                let mut all = Vec::new();
                let mut missing = false;
                let mut failed = None;
                // The connection's nodes first: a wrong peer or address is a
                // 403 whatever the token, never a 401 asking for one (and no
                // token is verified for a request refused anyway).
                let ordered = list
                    .iter()
                    .filter(|c| c.is_connection())
                    .chain(list.iter().filter(|c| !c.is_connection()));
                for child in ordered {
                    match child.step(outcome) {
                        Step::Met(v) => all.extend(v),
                        Step::Pending(p) => return Step::Pending(p),
                        Step::Unmet(Unmet::Missing) => missing = true,
                        Step::Unmet(u) => {
                            failed = Some(u);
                            break;
                        }
                    }
                }
                let result = match (failed, missing) {
                    (Some(u), _) => Step::Unmet(u),
                    (None, true) => Step::Unmet(Unmet::Missing),
                    (None, false) => Step::Met(all),
                };
                (result, *allow_missing)
            }
        };
        match result {
            Step::Unmet(Unmet::Missing) if allow_missing => Step::Met(Vec::new()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid(scope: &str) -> Outcome {
        let claims = json!({"scope": scope, "exp": 10})
            .as_object()
            .cloned()
            .unwrap();
        Outcome::Valid(Rc::new(Verified {
            claims,
            claims_json: Vec::new(),
            exp: 10,
        }))
    }

    fn node(p: usize, scopes: &[&str], allow_missing: bool) -> Requirement {
        Requirement::Provider {
            provider: p,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            claims: vec![],
            allow_missing,
        }
    }

    #[test]
    fn any_all_and_allow_missing() {
        let any = Requirement::Any(vec![node(0, &[], false), node(1, &[], false)], false);
        let mut asked = Vec::new();
        let v = any.evaluate(&mut |p| {
            asked.push(p);
            if p == 0 {
                valid("")
            } else {
                Outcome::Missing
            }
        });
        assert!(matches!(v, Verdict::Met(ref m) if m.len() == 1));
        assert_eq!(asked, vec![0], "the second provider is never verified");

        let v = any.evaluate(&mut |p| {
            if p == 0 {
                Outcome::Missing
            } else {
                Outcome::Invalid(Failure::Expired)
            }
        });
        assert!(matches!(
            v,
            Verdict::Unmet(Unmet::Invalid(Failure::Expired))
        ));

        let all = Requirement::All(vec![node(0, &["a"], false), node(1, &[], false)], false);
        let v = all.evaluate(&mut |p| if p == 0 { valid("b") } else { valid("") });
        assert!(matches!(v, Verdict::Unmet(Unmet::Insufficient { .. })));

        let optional = node(0, &[], true);
        assert!(
            matches!(optional.evaluate(&mut |_| Outcome::Missing), Verdict::Met(ref m) if m.is_empty())
        );
        assert!(matches!(
            optional.evaluate(&mut |_| Outcome::Invalid(Failure::Issuer)),
            Verdict::Unmet(Unmet::Invalid(Failure::Issuer))
        ));
        assert!(matches!(
            optional.evaluate(&mut |_| Outcome::Pending),
            Verdict::Pending(0)
        ));
    }

    /// Inputs with a fixed peer and address, counting token verifications.
    struct Fixed {
        peer: Peer,
        ip: Option<IpAddr>,
        token: Outcome,
        asked: u32,
    }

    impl Inputs for Fixed {
        fn token(&mut self, _p: usize) -> Outcome {
            self.asked += 1;
            self.token.clone()
        }
        fn peer(&mut self) -> Peer {
            self.peer.clone()
        }
        fn client_ip(&mut self) -> Option<IpAddr> {
            self.ip
        }
    }

    fn fixed(peer: Peer, ip: Option<&str>, token: Outcome) -> Fixed {
        Fixed {
            peer,
            ip: ip.and_then(|i| i.parse().ok()),
            token,
            asked: 0,
        }
    }

    fn frontend() -> Requirement {
        let id = spiffe::SpiffeId::new("spiffe://td/sa/frontend").unwrap();
        Requirement::Peer(PeerRule {
            ids: vec![id],
            domains: vec![],
        })
    }

    fn ids(s: &str) -> Peer {
        Peer::Ids(vec![spiffe::SpiffeId::new(s).unwrap()])
    }

    #[test]
    fn connection_nodes_decide_all_before_any_token_is_verified() {
        // The provider is listed first; the peer still answers first.
        let all = Requirement::All(vec![node(0, &[], false), frontend()], false);
        for token in [
            Outcome::Missing,
            Outcome::Invalid(Failure::Expired),
            valid(""),
        ] {
            let mut wrong = fixed(ids("spiffe://td/sa/other"), None, token.clone());
            assert!(matches!(
                all.evaluate(&mut wrong),
                Verdict::Unmet(Unmet::PeerMismatch)
            ));
            assert_eq!(wrong.asked, 0);
            let mut none = fixed(Peer::Missing, None, token);
            assert!(matches!(
                all.evaluate(&mut none),
                Verdict::Unmet(Unmet::PeerMissing)
            ));
        }
        let mut right = fixed(ids("spiffe://td/sa/frontend"), None, Outcome::Missing);
        assert!(matches!(
            all.evaluate(&mut right),
            Verdict::Unmet(Unmet::Missing)
        ));
        let mut both = fixed(ids("spiffe://td/sa/frontend"), None, valid(""));
        assert!(matches!(all.evaluate(&mut both), Verdict::Met(ref m) if m.len() == 1));
        // allow_missing on the all never turns a peer failure into a pass.
        let lenient = Requirement::All(vec![frontend(), node(0, &[], false)], true);
        let mut wrong = fixed(ids("spiffe://td/sa/other"), None, Outcome::Missing);
        assert!(matches!(
            lenient.evaluate(&mut wrong),
            Verdict::Unmet(Unmet::PeerMismatch)
        ));
    }

    #[test]
    fn in_any_a_token_failure_answers_over_a_connection_failure() {
        let nets = vec!["10.0.0.0/8".parse().unwrap()];
        let any = Requirement::Any(
            vec![Requirement::ClientIp(nets), node(0, &[], false)],
            false,
        );
        let mut out = fixed(Peer::Missing, Some("192.0.2.1"), Outcome::Missing);
        assert!(matches!(
            any.evaluate(&mut out),
            Verdict::Unmet(Unmet::Missing)
        ));
        let mut inside = fixed(Peer::Missing, Some("10.1.1.1"), Outcome::Missing);
        assert!(matches!(any.evaluate(&mut inside), Verdict::Met(ref m) if m.is_empty()));
        assert_eq!(inside.asked, 0);
        let mut unknown = fixed(Peer::Missing, None, valid(""));
        assert!(matches!(any.evaluate(&mut unknown), Verdict::Met(ref m) if m.len() == 1));
    }
}
