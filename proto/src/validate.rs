//! The one rule for ids that become a path component: task ids and framework ids
//! name the sandbox directory `WORK_DIR/frameworks/<framework_id>/tasks/<task_id>/`
//! on the agent.
//!
//! The master checks ids with these functions when a framework subscribes or
//! ACCEPTs, and the agent checks them again before it makes a sandbox, so the two can
//! never disagree: an id the agent would refuse is refused by the master first (at
//! SUBSCRIBE, or as TASK_ERROR at ACCEPT), never late by the agent.
//!
//! The rule: a single, safe path component. Not empty; at most [`MAX_ID_BYTES`]
//! bytes (a file name's limit on Linux); no `/` (the separator) and no `\` (the
//! separator of other systems and of tools that show these paths); no control
//! characters (NUL cuts the path short, newlines forge log lines); not `.` or `..`.
//! `..` *inside* an id (`web..1`) is allowed: as one component it names an ordinary
//! directory and cannot leave the sandbox root.

use std::fmt;

/// The longest id, in bytes: the longest file name Linux file systems accept.
pub const MAX_ID_BYTES: usize = 255;

/// What an id names, for the error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Task,
    Framework,
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdKind::Task => "task",
            IdKind::Framework => "framework",
        })
    }
}

/// What is wrong with an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdProblem {
    #[error("it is empty")]
    Empty,
    #[error("it is {len} bytes long, at most {MAX_ID_BYTES} are allowed")]
    TooLong { len: usize },
    #[error("it contains '{0}', which would make it more than one path component")]
    Separator(char),
    #[error("it contains the control character {0:?}")]
    Control(char),
    #[error("'.' and '..' name directories that already exist")]
    Dots,
}

/// An id that cannot safely name a sandbox directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid {kind} id '{}': {problem}; use a single path component such as 'web-1' \
     (no '/', '\\' or control characters, not '.' or '..', at most {MAX_ID_BYTES} bytes)",
    shown(.id)
)]
pub struct InvalidId {
    pub kind: IdKind,
    /// The id as sent.
    pub id: String,
    pub problem: IdProblem,
}

/// The id as it appears in a message: control characters escaped, and cut after 32
/// characters so a huge id does not make a huge message.
fn shown(id: &str) -> String {
    const SHOWN: usize = 32;
    let mut out: String = id
        .chars()
        .take(SHOWN)
        .flat_map(char::escape_debug)
        .collect();
    if id.chars().nth(SHOWN).is_some() {
        out.push_str("...");
    }
    out
}

/// Checks an id that names one directory of a sandbox path.
pub fn path_component(kind: IdKind, id: &str) -> Result<(), InvalidId> {
    let problem = if id.is_empty() {
        IdProblem::Empty
    } else if id.len() > MAX_ID_BYTES {
        IdProblem::TooLong { len: id.len() }
    } else if id == "." || id == ".." {
        IdProblem::Dots
    } else if let Some(c) = id.chars().find(|&c| c == '/' || c == '\\') {
        IdProblem::Separator(c)
    } else if let Some(c) = id.chars().find(|c| c.is_control()) {
        IdProblem::Control(c)
    } else {
        return Ok(());
    };
    Err(InvalidId {
        kind,
        id: id.to_string(),
        problem,
    })
}

/// Checks a task id (see the module docs for the rule).
pub fn task_id(id: &str) -> Result<(), InvalidId> {
    path_component(IdKind::Task, id)
}

/// Checks a framework id (see the module docs for the rule).
pub fn framework_id(id: &str) -> Result<(), InvalidId> {
    path_component(IdKind::Framework, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(id: &str) -> IdProblem {
        task_id(id).expect_err(id).problem
    }

    #[test]
    fn ordinary_ids_are_accepted() {
        for good in [
            "web-1",
            "web.1",
            "a_b",
            ".hidden",
            "a..b",
            "web..1",
            "..x",
            "x..",
            "...",
            "é",
            "app.v2.instance-3",
            "with space",
        ] {
            assert_eq!(task_id(good), Ok(()), "{good:?}");
            assert_eq!(framework_id(good), Ok(()), "{good:?}");
        }
        assert_eq!(task_id(&"x".repeat(MAX_ID_BYTES)), Ok(()));
    }

    #[test]
    fn ids_that_are_not_one_safe_path_component_are_refused() {
        assert_eq!(problem(""), IdProblem::Empty);
        assert_eq!(problem("."), IdProblem::Dots);
        assert_eq!(problem(".."), IdProblem::Dots);
        assert_eq!(problem("a/b"), IdProblem::Separator('/'));
        assert_eq!(problem("../etc"), IdProblem::Separator('/'));
        assert_eq!(problem("/"), IdProblem::Separator('/'));
        assert_eq!(problem("a\\b"), IdProblem::Separator('\\'));
        assert_eq!(problem("a\0b"), IdProblem::Control('\0'));
        assert_eq!(problem("x\n"), IdProblem::Control('\n'));
        assert_eq!(
            problem(&"x".repeat(MAX_ID_BYTES + 1)),
            IdProblem::TooLong { len: 256 }
        );
        // Bytes, not characters: 200 two-byte characters are 400 bytes.
        assert_eq!(problem(&"é".repeat(200)), IdProblem::TooLong { len: 400 });
    }

    #[test]
    fn the_message_names_the_id_the_problem_and_the_expected_form() {
        let e = task_id("a/b").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid task id 'a/b': it contains '/', which would make it more than one \
             path component; use a single path component such as 'web-1' (no '/', '\\' or \
             control characters, not '.' or '..', at most 255 bytes)"
        );
        let e = framework_id("").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid framework id '': it is empty;"),
            "{e}"
        );
        // Control characters are escaped and long ids cut short.
        let e = task_id("a\0b").unwrap_err();
        assert!(
            e.to_string()
                .starts_with(r"invalid task id 'a\0b': it contains the control character '\0';"),
            "{e}"
        );
        let e = task_id(&"y".repeat(300)).unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "invalid task id '{}...': it is 300 bytes long",
                "y".repeat(32)
            )),
            "{e}"
        );
    }
}
