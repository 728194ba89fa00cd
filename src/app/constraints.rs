//! Placement constraints evaluated against agents, with Marathon's semantics.
//!
//! The constraints are the spec's own ([`Constraint`]): their regexes were compiled,
//! within a size limit, when the spec was parsed, so placement compiles nothing.

use std::collections::BTreeMap;

use super::spec::{Constraint, Operator};

/// An agent a task runs on or could run on: its hostname and attributes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placement {
    pub hostname: String,
    pub attributes: BTreeMap<String, String>,
}

impl Placement {
    /// The value of a constraint field: `hostname` is the hostname, anything else an
    /// attribute (`None` when the agent lacks it).
    pub fn field(&self, name: &str) -> Option<&str> {
        if name == "hostname" {
            Some(&self.hostname)
        } else {
            self.attributes.get(name).map(String::as_str)
        }
    }

    /// Describes where the field has this value, for reasons: "host a" or
    /// "an agent with rack=r1".
    fn describe(field: &str, value: &str) -> String {
        if field == "hostname" {
            format!("host {value}")
        } else {
            format!("an agent with {field}={value}")
        }
    }
}

/// A constraint that a candidate agent does not satisfy.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("constraint `{constraint}` unmet: {reason}")]
pub struct Unmet {
    /// The canonical text of the constraint, e.g. `hostname UNIQUE`.
    pub constraint: String,
    pub reason: String,
}

/// Whether a task may be placed on `candidate`, given the agents of the app's live
/// tasks (`placed`, one entry per task). The first unmet constraint is returned.
///
/// Nothing is compiled here: LIKE and UNLIKE carry the regex compiled when the spec
/// was parsed ([`super::spec::Pattern`]), and a candidate that satisfies every
/// constraint costs no allocation.
pub fn check(
    constraints: &[Constraint],
    candidate: &Placement,
    placed: &[&Placement],
) -> Result<(), Unmet> {
    constraints
        .iter()
        .try_for_each(|c| check_one(c, candidate, placed))
}

fn check_one(
    constraint: &Constraint,
    candidate: &Placement,
    placed: &[&Placement],
) -> Result<(), Unmet> {
    let unmet = |reason: String| {
        Err(Unmet {
            constraint: constraint.to_string(),
            reason,
        })
    };
    let field = constraint.field.as_str();
    let Some(value) = candidate.field(field) else {
        return match constraint.operator {
            Operator::Unlike(_) => Ok(()),
            _ => unmet(format!(
                "host {} has no attribute {field}",
                candidate.hostname
            )),
        };
    };
    let sharing = || {
        placed
            .iter()
            .filter(|p| p.field(field) == Some(value))
            .count()
    };
    match &constraint.operator {
        Operator::Unique => {
            if sharing() > 0 {
                return unmet(format!(
                    "a task already runs on {}",
                    Placement::describe(field, value)
                ));
            }
        }
        Operator::Cluster(wanted) => {
            if value != wanted {
                return unmet(format!(
                    "host {} has {field}={value}, not {wanted}",
                    candidate.hostname
                ));
            }
        }
        Operator::MaxPer(max) => {
            let count = sharing();
            if count >= *max as usize {
                return unmet(format!(
                    "{count} task(s) already run on {} (at most {max})",
                    Placement::describe(field, value)
                ));
            }
        }
        Operator::Like(pattern) => {
            if !pattern.matches_whole(value) {
                return unmet(format!(
                    "host {} has {field}={value}, which does not match the regex",
                    candidate.hostname
                ));
            }
        }
        Operator::Unlike(pattern) => {
            if pattern.matches_whole(value) {
                return unmet(format!(
                    "host {} has {field}={value}, which matches the regex",
                    candidate.hostname
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::spec::Pattern;

    fn agent(hostname: &str, attributes: &[(&str, &str)]) -> Placement {
        Placement {
            hostname: hostname.to_string(),
            attributes: attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// An app's constraints, checked with [`check`].
    struct Rules(Vec<Constraint>);

    impl Rules {
        fn check(&self, candidate: &Placement, placed: &[&Placement]) -> Result<(), Unmet> {
            check(&self.0, candidate, placed)
        }
    }

    fn compiled(constraints: &[(&str, Operator)]) -> Rules {
        Rules(
            constraints
                .iter()
                .map(|(field, operator)| Constraint {
                    field: field.to_string(),
                    operator: operator.clone(),
                })
                .collect(),
        )
    }

    fn like(re: &str) -> Operator {
        Operator::Like(Pattern::new(re).unwrap())
    }

    fn unlike(re: &str) -> Operator {
        Operator::Unlike(Pattern::new(re).unwrap())
    }

    #[test]
    fn field_is_hostname_or_an_attribute() {
        let a = agent("a", &[("rack", "r1")]);
        assert_eq!(a.field("hostname"), Some("a"));
        assert_eq!(a.field("rack"), Some("r1"));
        assert_eq!(a.field("zone"), None);
    }

    #[test]
    fn no_constraints_always_pass() {
        let c = compiled(&[]);
        let a = agent("a", &[]);
        assert_eq!(c.check(&a, &[&a, &a]), Ok(()));
    }

    #[test]
    fn unique_hostname() {
        let c = compiled(&[("hostname", Operator::Unique)]);
        let (a, b) = (agent("a", &[]), agent("b", &[]));
        assert_eq!(c.check(&a, &[]), Ok(()));
        assert_eq!(c.check(&a, &[&b, &b]), Ok(()));
        let unmet = c.check(&a, &[&b, &a]).unwrap_err();
        assert_eq!(
            unmet,
            Unmet {
                constraint: "hostname UNIQUE".into(),
                reason: "a task already runs on host a".into(),
            }
        );
        assert_eq!(
            unmet.to_string(),
            "constraint `hostname UNIQUE` unmet: a task already runs on host a"
        );
    }

    #[test]
    fn unique_attribute() {
        let c = compiled(&[("rack", Operator::Unique)]);
        let a1 = agent("a", &[("rack", "r1")]);
        let b1 = agent("b", &[("rack", "r1")]);
        let c2 = agent("c", &[("rack", "r2")]);
        let bare = agent("d", &[]);
        assert_eq!(c.check(&a1, &[&c2, &bare]), Ok(()));
        let unmet = c.check(&a1, &[&b1]).unwrap_err();
        assert_eq!(unmet.reason, "a task already runs on an agent with rack=r1");
        // An agent lacking the attribute fails, even with nothing placed.
        let unmet = c.check(&bare, &[]).unwrap_err();
        assert_eq!(unmet.reason, "host d has no attribute rack");
    }

    #[test]
    fn cluster() {
        let c = compiled(&[("rack", Operator::Cluster("r1".into()))]);
        let a1 = agent("a", &[("rack", "r1")]);
        assert_eq!(c.check(&a1, &[&a1, &a1]), Ok(()));
        let unmet = c.check(&agent("b", &[("rack", "r2")]), &[]).unwrap_err();
        assert_eq!(unmet.constraint, "rack CLUSTER r1");
        assert_eq!(unmet.reason, "host b has rack=r2, not r1");
        // Exact equality, not a prefix or a case-insensitive match.
        assert!(c.check(&agent("b", &[("rack", "r10")]), &[]).is_err());
        assert!(c.check(&agent("b", &[("rack", "R1")]), &[]).is_err());
        assert!(c.check(&agent("c", &[]), &[]).is_err());
        let by_host = compiled(&[("hostname", Operator::Cluster("a".into()))]);
        assert_eq!(by_host.check(&a1, &[]), Ok(()));
        assert!(by_host.check(&agent("b", &[]), &[]).is_err());
    }

    #[test]
    fn max_per_counts_tasks_sharing_the_value() {
        let c = compiled(&[("rack", Operator::MaxPer(2))]);
        let a1 = agent("a", &[("rack", "r1")]);
        let b1 = agent("b", &[("rack", "r1")]);
        let c2 = agent("c", &[("rack", "r2")]);
        let bare = agent("d", &[]);
        assert_eq!(c.check(&a1, &[]), Ok(()));
        assert_eq!(c.check(&a1, &[&b1]), Ok(()));
        // Other values and agents lacking the attribute do not count.
        assert_eq!(c.check(&a1, &[&b1, &c2, &c2, &c2, &bare, &bare]), Ok(()));
        // Two tasks on r1 (on different agents): full.
        let unmet = c.check(&a1, &[&b1, &c2, &a1]).unwrap_err();
        assert_eq!(unmet.constraint, "rack MAX_PER 2");
        assert_eq!(
            unmet.reason,
            "2 task(s) already run on an agent with rack=r1 (at most 2)"
        );
        // Agents repeat, one entry per task.
        assert!(c.check(&a1, &[&b1, &b1]).is_err());
        assert!(c.check(&bare, &[]).is_err());
    }

    #[test]
    fn max_per_hostname() {
        let c = compiled(&[("hostname", Operator::MaxPer(1))]);
        let (a, b) = (agent("a", &[]), agent("b", &[]));
        assert_eq!(c.check(&a, &[&b, &b]), Ok(()));
        let unmet = c.check(&a, &[&a]).unwrap_err();
        assert_eq!(unmet.reason, "1 task(s) already run on host a (at most 1)");
        let three = compiled(&[("hostname", Operator::MaxPer(3))]);
        assert_eq!(three.check(&a, &[&a, &a, &b]), Ok(()));
        assert!(three.check(&a, &[&a, &a, &a]).is_err());
    }

    #[test]
    fn like_matches_whole_values() {
        let c = compiled(&[("rack", like("r[12]"))]);
        assert_eq!(c.check(&agent("a", &[("rack", "r1")]), &[]), Ok(()));
        assert_eq!(c.check(&agent("a", &[("rack", "r2")]), &[]), Ok(()));
        let unmet = c.check(&agent("a", &[("rack", "r3")]), &[]).unwrap_err();
        assert_eq!(unmet.constraint, "rack LIKE r[12]");
        assert!(unmet.reason.contains("rack=r3"), "{unmet}");
        assert!(c.check(&agent("a", &[("rack", "r12")]), &[]).is_err());
        assert!(c.check(&agent("a", &[("rack", "xr1")]), &[]).is_err());
        assert!(c.check(&agent("a", &[]), &[]).is_err());
        // Alternation is anchored as a whole.
        let alt = compiled(&[("hostname", like("a|b"))]);
        assert_eq!(alt.check(&agent("a", &[]), &[]), Ok(()));
        assert!(alt.check(&agent("ab", &[]), &[]).is_err());
        assert!(alt.check(&agent("xb", &[]), &[]).is_err());
    }

    #[test]
    fn unlike_matches_whole_values_too() {
        let c = compiled(&[("rack", unlike("r3|r4"))]);
        assert_eq!(c.check(&agent("a", &[("rack", "r1")]), &[]), Ok(()));
        // Whole values: r33 is not r3.
        assert_eq!(c.check(&agent("a", &[("rack", "r33")]), &[]), Ok(()));
        let unmet = c.check(&agent("a", &[("rack", "r3")]), &[]).unwrap_err();
        assert_eq!(unmet.constraint, "rack UNLIKE r3|r4");
        assert_eq!(unmet.reason, "host a has rack=r3, which matches the regex");
        // A missing attribute passes UNLIKE.
        assert_eq!(c.check(&agent("a", &[]), &[]), Ok(()));
        let by_host = compiled(&[("hostname", unlike("db-.*"))]);
        assert!(by_host.check(&agent("db-1", &[]), &[]).is_err());
        assert_eq!(by_host.check(&agent("web-1", &[]), &[]), Ok(()));
    }

    #[test]
    fn the_first_unmet_constraint_is_reported() {
        let c = compiled(&[
            ("rack", Operator::Cluster("r1".into())),
            ("hostname", Operator::Unique),
            ("zone", like("eu-.*")),
        ]);
        let good = agent("a", &[("rack", "r1"), ("zone", "eu-west")]);
        assert_eq!(c.check(&good, &[]), Ok(()));
        let unmet = c.check(&good, &[&good]).unwrap_err();
        assert_eq!(unmet.constraint, "hostname UNIQUE");
        let elsewhere = agent("b", &[("rack", "r2"), ("zone", "us")]);
        let unmet = c.check(&elsewhere, &[]).unwrap_err();
        assert_eq!(unmet.constraint, "rack CLUSTER r1");
        let us = agent("c", &[("rack", "r1"), ("zone", "us")]);
        assert_eq!(c.check(&us, &[]).unwrap_err().constraint, "zone LIKE eu-.*");
    }

    #[test]
    fn invalid_regexes_are_refused() {
        for re in ["(", "r[12", "a)|(b", ""] {
            assert!(Pattern::new(re).is_err(), "{re}");
        }
    }

    /// Placement uses the regex compiled with the spec: the constraints an app was
    /// parsed with hold the very `Regex` that every check runs, and checking does not
    /// build another.
    #[test]
    fn placement_uses_the_regex_compiled_with_the_spec() {
        let spec = crate::app::spec::AppSpec::parse(
            "id: web\ncmd: x\nconstraints: [\"rack LIKE r[12]\", \"zone UNLIKE us-.*\"]\n",
        )
        .unwrap();
        let regexes = |spec: &crate::app::spec::AppSpec| -> Vec<*const regex::Regex> {
            spec.constraints
                .iter()
                .map(|c| match &c.operator {
                    Operator::Like(p) | Operator::Unlike(p) => p.compiled() as *const _,
                    _ => unreachable!(),
                })
                .collect()
        };
        let before = regexes(&spec);
        let a = agent("a", &[("rack", "r1"), ("zone", "eu")]);
        let b = agent("b", &[("rack", "r3"), ("zone", "eu")]);
        for _ in 0..3 {
            assert_eq!(check(&spec.constraints, &a, &[]), Ok(()));
            assert_eq!(
                check(&spec.constraints, &b, &[&a]).unwrap_err().constraint,
                "rack LIKE r[12]"
            );
        }
        assert_eq!(regexes(&spec), before, "the same compiled regexes are used");
        assert_eq!(
            spec.constraints[0].operator,
            like("r[12]"),
            "patterns compare by their text"
        );
        // The compiled regex is the anchored whole-value form.
        let Operator::Like(p) = &spec.constraints[0].operator else {
            unreachable!()
        };
        assert_eq!(p.compiled().as_str(), "^(?:r[12])$");
    }
}
