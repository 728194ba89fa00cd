//! Configs and secrets (issue 16): the rules for their names, their sizes and the
//! references tasks make to them ([`v1::ObjectRef`]), shared by the master (which
//! refuses a bad reference with TASK_ERROR at ACCEPT and a bad object at create), the
//! agent (which checks again before it delivers anything), the container framework and
//! the CLI. Errors name the field and never echo a value.

use std::collections::HashSet;

use crate::v1::{self, ObjectKind, object_ref::Target};

/// The largest value of one config or secret (Docker Swarm's limit).
pub const MAX_OBJECT_BYTES: usize = 500 * 1024;

/// The longest object name (a DNS subdomain, as Kubernetes' object names).
pub const MAX_OBJECT_NAME_BYTES: usize = 253;

/// The most references one task may make.
pub const MAX_OBJECTS_PER_TASK: usize = 64;

/// The longest file target of a reference.
pub const MAX_TARGET_BYTES: usize = 1024;

/// The longest environment variable name of a reference.
pub const MAX_ENV_NAME_BYTES: usize = 255;

/// How many versions of an object the master keeps (the latest and those before it);
/// an older version can no longer be launched with.
pub const VERSIONS_KEPT: usize = 10;

/// The directory of a process task's secrets, relative to its sandbox (a tmpfs in the
/// task's own mount namespace).
pub const SECRETS_DIR: &str = "secrets";

/// Where a Docker task's secrets are (a tmpfs), as Swarm puts them.
pub const DOCKER_SECRETS_DIR: &str = "/run/secrets";

/// The file, in a Docker task's secrets tmpfs, from which the agent's shell prefix sets
/// the task's secret variables (`export NAME='value'` lines).
pub const DOCKER_SECRET_ENV_FILE: &str = ".strata-env";

/// The default directory of configs, relative to the sandbox.
pub const CONFIGS_DIR: &str = "configs";

/// What a kind is called in messages: `secret` or `config`.
pub fn kind_name(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Secret => "secret",
        ObjectKind::Config => "config",
        ObjectKind::Unspecified => "object",
    }
}

/// The kind of a wire value; `None` for unknown or unspecified ones.
pub fn kind_of(value: i32) -> Option<ObjectKind> {
    match ObjectKind::try_from(value) {
        Ok(ObjectKind::Unspecified) | Err(_) => None,
        Ok(kind) => Some(kind),
    }
}

/// Checks an object name: 1-253 bytes of lower-case ASCII letters, digits, `-`, `_`
/// and `.`, starting and ending with a letter or digit. The message says the rule
/// (the name itself is shown cut to 64 bytes).
pub fn validate_name(kind: ObjectKind, name: &str) -> Result<(), String> {
    let what = kind_name(kind);
    if name.is_empty() {
        return Err(format!("a {what} name is empty"));
    }
    if name.len() > MAX_OBJECT_NAME_BYTES {
        return Err(format!(
            "a {what} name is {} bytes; the limit is {MAX_OBJECT_NAME_BYTES}",
            name.len()
        ));
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c);
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = name.chars().all(allowed)
        && name.chars().next().is_some_and(alnum)
        && name.chars().last().is_some_and(alnum);
    if !ok {
        return Err(format!(
            "{what} name '{}' is not valid: use lower-case letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
            shown(name)
        ));
    }
    Ok(())
}

/// Checks a value's size (the value itself is never looked at beyond its length).
pub fn validate_size(kind: ObjectKind, name: &str, len: usize) -> Result<(), String> {
    if len > MAX_OBJECT_BYTES {
        return Err(format!(
            "{} '{}' is {len} bytes; the limit is {MAX_OBJECT_BYTES} (500 KiB)",
            kind_name(kind),
            shown(name)
        ));
    }
    Ok(())
}

/// Checks a relative path: not empty, not absolute, no empty, `.` or `..` components,
/// no NUL or control characters, at most [`MAX_TARGET_BYTES`].
pub fn validate_relative_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("the file path is empty".into());
    }
    if path.len() > MAX_TARGET_BYTES {
        return Err(format!(
            "the file path is {} bytes; the limit is {MAX_TARGET_BYTES}",
            path.len()
        ));
    }
    if path.chars().any(char::is_control) {
        return Err("the file path has control characters".into());
    }
    if path.starts_with('/') {
        return Err(format!("file path '{}' must be relative", shown(path)));
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!(
            "file path '{}' has an empty, '.' or '..' component",
            shown(path)
        ));
    }
    Ok(())
}

/// Checks an environment variable name: `[A-Za-z_][A-Za-z0-9_]*`, at most 255 bytes.
pub fn validate_env_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_ENV_NAME_BYTES
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(format!(
            "environment variable name '{}' is not valid: letters, digits and '_', not starting with a digit",
            shown(name)
        ));
    }
    Ok(())
}

/// Checks one reference: a known kind, a valid name, a target. A secret's file is
/// relative to the secrets directory; a config's file is relative to the sandbox, or
/// absolute for a Docker task (`docker`), then a path in the container without `..`.
pub fn validate_ref(reference: &v1::ObjectRef, docker: bool) -> Result<(), String> {
    let Some(kind) = kind_of(reference.kind) else {
        return Err(format!(
            "a reference to '{}' has no kind (secret or config)",
            shown(&reference.name)
        ));
    };
    validate_name(kind, &reference.name)?;
    let what = kind_name(kind);
    let context = |e: String| format!("{what} '{}': {e}", reference.name);
    match &reference.target {
        None => Err(format!(
            "{what} '{}' has no target (a file or an environment variable)",
            reference.name
        )),
        Some(Target::Env(var)) => validate_env_name(var).map_err(context),
        Some(Target::File(path)) => {
            if kind == ObjectKind::Config && docker && path.starts_with('/') {
                let inner = path.trim_start_matches('/');
                if inner.is_empty() {
                    return Err(context("the file path is '/'".into()));
                }
                validate_relative_path(inner).map_err(context)
            } else {
                validate_relative_path(path).map_err(context)
            }
        }
    }
}

/// Checks every reference of a task: each one ([`validate_ref`]), at most
/// [`MAX_OBJECTS_PER_TASK`], no two with the same file target or the same variable,
/// and a Docker task's secret variables only with a shell command (the agent sources
/// them from `/run/secrets/.strata-env` in that shell rather than handing them to the
/// engine, which writes a container's environment to disk).
pub fn validate_task(task: &v1::TaskInfo) -> Result<(), String> {
    if task.objects.is_empty() {
        return Ok(());
    }
    if task.objects.len() > MAX_OBJECTS_PER_TASK {
        return Err(format!(
            "the task references {} configs and secrets; the limit is {MAX_OBJECTS_PER_TASK}",
            task.objects.len()
        ));
    }
    let docker = crate::container::is_docker(task);
    let shell = task.command.as_ref().is_some_and(|c| c.shell);
    let mut files = HashSet::new();
    let mut vars = HashSet::new();
    for reference in &task.objects {
        validate_ref(reference, docker)?;
        match &reference.target {
            Some(Target::File(path)) => {
                let secret = reference.kind == ObjectKind::Secret as i32;
                if !files.insert((secret, path.as_str())) {
                    return Err(format!("two references deliver the file '{path}'"));
                }
            }
            Some(Target::Env(var)) => {
                if docker && !shell && reference.kind == ObjectKind::Secret as i32 {
                    return Err(format!(
                        "secret '{}' as a variable of a Docker task needs a shell command: the engine keeps a container's environment on disk, so the agent sets it from the secrets tmpfs in the shell; or deliver it as a file",
                        reference.name
                    ));
                }
                if !vars.insert(var.as_str()) {
                    return Err(format!("two references set the variable '{var}'"));
                }
            }
            None => {}
        }
    }
    Ok(())
}

/// A client string shown in a message: at most 64 bytes, then `…`.
fn shown(s: &str) -> String {
    crate::limits::shown(s).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(kind: ObjectKind, name: &str, target: Target) -> v1::ObjectRef {
        v1::ObjectRef {
            kind: kind as i32,
            name: name.into(),
            version: 0,
            target: Some(target),
        }
    }

    #[test]
    fn names_follow_the_rule() {
        for good in ["db-pass", "a", "tls.key", "x_1", "0a"] {
            assert!(validate_name(ObjectKind::Secret, good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "A", "a/b", "a b", "..", "é"] {
            let e = validate_name(ObjectKind::Secret, bad).unwrap_err();
            assert!(e.contains("secret name"), "{bad}: {e}");
        }
        let long = "a".repeat(254);
        assert!(
            validate_name(ObjectKind::Config, &long)
                .unwrap_err()
                .contains("254 bytes; the limit is 253")
        );
    }

    #[test]
    fn sizes_are_bounded() {
        assert!(validate_size(ObjectKind::Secret, "s", MAX_OBJECT_BYTES).is_ok());
        let e = validate_size(ObjectKind::Secret, "s", MAX_OBJECT_BYTES + 1).unwrap_err();
        assert_eq!(
            e,
            "secret 's' is 512001 bytes; the limit is 512000 (500 KiB)"
        );
    }

    #[test]
    fn targets_stay_inside() {
        let file = |p: &str| Target::File(p.into());
        assert!(validate_ref(&reference(ObjectKind::Secret, "s", file("s")), false).is_ok());
        assert!(validate_ref(&reference(ObjectKind::Secret, "s", file("a/b")), false).is_ok());
        for bad in ["../x", "/etc/x", "a//b", "a/./b", ""] {
            assert!(
                validate_ref(&reference(ObjectKind::Secret, "s", file(bad)), true).is_err(),
                "{bad}"
            );
        }
        // A Docker task's config may go to an absolute path in the container.
        let abs = reference(ObjectKind::Config, "c", file("/etc/app.conf"));
        assert!(validate_ref(&abs, true).is_ok());
        assert!(validate_ref(&abs, false).is_err());
        assert!(
            validate_ref(&reference(ObjectKind::Config, "c", file("/etc/../x")), true).is_err()
        );
        let env = |v: &str| Target::Env(v.into());
        assert!(validate_ref(&reference(ObjectKind::Secret, "s", env("DB_PASS")), false).is_ok());
        assert!(validate_ref(&reference(ObjectKind::Secret, "s", env("1X")), false).is_err());
        let mut none = reference(ObjectKind::Secret, "s", env("X"));
        none.target = None;
        assert!(
            validate_ref(&none, false)
                .unwrap_err()
                .contains("no target")
        );
        none.kind = 7;
        assert!(validate_ref(&none, false).unwrap_err().contains("no kind"));
    }

    #[test]
    fn a_task_delivers_each_target_once() {
        let mut task = v1::TaskInfo {
            objects: vec![
                reference(ObjectKind::Secret, "a", Target::File("x".into())),
                reference(ObjectKind::Config, "b", Target::File("x".into())),
                reference(ObjectKind::Secret, "a", Target::Env("X".into())),
            ],
            ..Default::default()
        };
        assert!(validate_task(&task).is_ok());
        task.objects
            .push(reference(ObjectKind::Config, "c", Target::Env("X".into())));
        assert!(validate_task(&task).unwrap_err().contains("variable 'X'"));
        task.objects.pop();
        task.container = Some(v1::ContainerInfo {
            r#type: v1::container_info::Type::Docker as i32,
            ..Default::default()
        });
        assert!(
            validate_task(&task)
                .unwrap_err()
                .contains("needs a shell command")
        );
        task.command = Some(v1::CommandInfo {
            shell: true,
            ..Default::default()
        });
        assert!(validate_task(&task).is_ok());
    }
}
