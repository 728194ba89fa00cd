//! Who a request comes from, as the authentication layer established it.

use std::fmt;

/// The authenticated caller of a request, put in its extensions by
/// [`crate::authn::authenticate`]. Handlers read it; they never look at credentials.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// An agent, by the node id in its certificate (`CN=agent:<node id>`).
    Agent(String),
    /// A framework or an operator, by the principal its credential is registered under
    /// (or a client certificate's `CN=user:<name>`).
    User(String),
    /// Nobody: a public endpoint called without credentials, or a listener started
    /// with `--insecure`.
    Anonymous,
    /// The master itself, by its own certificate (`CN=strata-master`, which only the
    /// master's certificate has: the CA names every other one `agent:` or `user:`).
    /// It calls agents only to relay a dashboard's sandbox reads, on behalf of the
    /// principal it authenticated (see [`ON_BEHALF_OF`]).
    Master,
}

/// The header with which the master says on whose behalf it calls an agent; an agent
/// honours it from [`Principal::Master`] only.
pub const ON_BEHALF_OF: &str = "x-strata-on-behalf-of";

/// The prefix of an agent certificate's common name.
pub const AGENT_CN_PREFIX: &str = "agent:";
/// The prefix of a user certificate's common name.
pub const USER_CN_PREFIX: &str = "user:";

impl Principal {
    /// The principal a certificate's common name names, if it names one.
    pub fn from_common_name(cn: &str) -> Option<Principal> {
        if cn == crate::MASTER_NAME {
            return Some(Principal::Master);
        }
        if let Some(node) = cn.strip_prefix(AGENT_CN_PREFIX)
            && !node.is_empty()
        {
            return Some(Principal::Agent(node.to_string()));
        }
        if let Some(user) = cn.strip_prefix(USER_CN_PREFIX)
            && !user.is_empty()
        {
            return Some(Principal::User(user.to_string()));
        }
        None
    }

    /// The principal named by a certificate (DER) the TLS layer already verified.
    pub fn from_cert(der: &[u8]) -> Option<Principal> {
        let info = crate::ca::cert_info(der).ok()?;
        Principal::from_common_name(info.common_name.as_deref()?)
    }

    /// The name recorded with what the principal registers (a framework's or an
    /// agent's `principal` field): `agent:<node>`, the user's name, or "" for nobody.
    pub fn name(&self) -> String {
        match self {
            Principal::Agent(node) => format!("{AGENT_CN_PREFIX}{node}"),
            Principal::User(name) => name.clone(),
            Principal::Anonymous => String::new(),
            Principal::Master => crate::MASTER_NAME.to_string(),
        }
    }

    /// The principal a recorded name ([`Principal::name`]) stands for.
    pub fn from_name(name: &str) -> Principal {
        if name.is_empty() {
            Principal::Anonymous
        } else if let Some(node) = name.strip_prefix(AGENT_CN_PREFIX) {
            Principal::Agent(node.to_string())
        } else {
            Principal::User(name.to_string())
        }
    }

    pub fn is_anonymous(&self) -> bool {
        matches!(self, Principal::Anonymous)
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Anonymous => f.write_str("anonymous"),
            other => f.write_str(&other.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_names() {
        assert_eq!(
            Principal::from_common_name("agent:abc"),
            Some(Principal::Agent("abc".into()))
        );
        assert_eq!(
            Principal::from_common_name("user:ops"),
            Some(Principal::User("ops".into()))
        );
        assert_eq!(Principal::from_common_name("agent:"), None);
        assert_eq!(
            Principal::from_common_name("strata-master"),
            Some(Principal::Master)
        );
        assert_eq!(
            Principal::from_common_name("user:strata-master"),
            Some(Principal::User("strata-master".into()))
        );
        assert_eq!(Principal::Agent("abc".into()).name(), "agent:abc");
        assert_eq!(Principal::Anonymous.to_string(), "anonymous");
    }
}
