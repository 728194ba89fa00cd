//! The kernel's `favordynmods` cgroup option (Linux 6.0+), set on the cgroup2 mount
//! when `--cgroups-favor-dynmods` asks for it.
//!
//! Moving a process into a cgroup (what every task launch does, once per v1
//! hierarchy) takes a global percpu rwsem for writing; without `favordynmods` the
//! writer may wait for an RCU grace period. Measured on this project's machine (cgroup
//! v1, kernel 6.18, a VM) at times when grace periods were slow: about 1% of launches
//! waited 10-25 ms in that write, which was then the whole p99 of a task launch; with
//! the option the slowest join of 3,000 took 1 ms. With the option the rwsem stays in its slow mode for
//! good: migrations never wait, and forks and exits pay a little more (the kernel's
//! own trade-off: Documentation/admin-guide/cgroup-v2.rst). The rwsem is global, so
//! the option set on the cgroup2 mount (`/sys/fs/cgroup` on a v2 host, often
//! `/sys/fs/cgroup/unified` on a v1 one) serves v1 hierarchies too. It is a property
//! of the host: it outlives the agent, as the kernel boot parameter
//! `cgroup_favordynmods=true` would.
//!
//! The remount keeps the mount's other options (per-mount flags and superblock
//! options such as `nsdelegate` and `memory_recursiveprot`): a bare remount would
//! clear them.

use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};

const OPTION: &str = "favordynmods";

/// One line of `/proc/self/mountinfo`, the parts a remount needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountLine {
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,nosuid,nodev,noexec,relatime`).
    pub mount_options: Vec<String>,
    pub fs_type: String,
    /// Superblock options (`rw,nsdelegate,memory_recursiveprot`).
    pub super_options: Vec<String>,
}

/// Parses one line of `/proc/self/mountinfo` (proc(5)); `None` when malformed.
pub fn parse_mountinfo_line(line: &str) -> Option<MountLine> {
    let (left, right) = line.split_once(" - ")?;
    let left: Vec<&str> = left.split(' ').collect();
    let right: Vec<&str> = right.split(' ').collect();
    if left.len() < 6 || right.len() < 3 {
        return None;
    }
    let split = |s: &str| s.split(',').map(str::to_string).collect::<Vec<_>>();
    Some(MountLine {
        mount_point: PathBuf::from(unescape(left[4])),
        mount_options: split(left[5]),
        fs_type: right[0].to_string(),
        super_options: split(right[2].trim_end()),
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(char::from(c));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The cgroup2 mount of this mount namespace, if any.
pub fn cgroup2_mount() -> Option<MountLine> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines()
        .filter_map(parse_mountinfo_line)
        .find(|m| m.fs_type == "cgroup2")
}

/// The per-mount flags a remount must pass again to keep them.
pub fn mount_flags(options: &[String]) -> MsFlags {
    let mut flags = MsFlags::empty();
    for o in options {
        flags |= match o.as_str() {
            "ro" => MsFlags::MS_RDONLY,
            "nosuid" => MsFlags::MS_NOSUID,
            "nodev" => MsFlags::MS_NODEV,
            "noexec" => MsFlags::MS_NOEXEC,
            "noatime" => MsFlags::MS_NOATIME,
            "nodiratime" => MsFlags::MS_NODIRATIME,
            "relatime" => MsFlags::MS_RELATIME,
            "strictatime" => MsFlags::MS_STRICTATIME,
            _ => MsFlags::empty(),
        };
    }
    flags
}

/// The superblock options for a remount with `favordynmods` on or off; `ro`/`rw` are
/// flags, not data.
pub fn remount_data(super_options: &[String], on: bool) -> String {
    let mut kept: Vec<&str> = super_options
        .iter()
        .map(String::as_str)
        .filter(|o| !matches!(*o, "rw" | "ro" | OPTION) && !o.is_empty())
        .collect();
    if on {
        kept.push(OPTION);
    }
    kept.join(",")
}

/// Why the option could not be set.
#[derive(Debug, thiserror::Error)]
pub enum DynmodsError {
    #[error(
        "no cgroup2 file system is mounted, so favordynmods cannot be set (boot with cgroup_favordynmods=true instead)"
    )]
    NoCgroup2,
    #[error(
        "cannot remount {} with favordynmods (it needs Linux 6.0+ and root): {source}",
        path.display()
    )]
    Remount { path: PathBuf, source: nix::Error },
}

/// Turns `favordynmods` on or off on the cgroup2 mount, keeping its other options.
/// Returns whether it was on before (to put it back as it was).
pub fn set(on: bool) -> Result<bool, DynmodsError> {
    let m = cgroup2_mount().ok_or(DynmodsError::NoCgroup2)?;
    let was = m.super_options.iter().any(|o| o == OPTION);
    if was == on {
        return Ok(was);
    }
    remount(&m.mount_point, &m, on)?;
    Ok(was)
}

fn remount(path: &Path, m: &MountLine, on: bool) -> Result<(), DynmodsError> {
    let flags = MsFlags::MS_REMOUNT | mount_flags(&m.mount_options);
    let data = remount_data(&m.super_options, on);
    mount(None::<&str>, path, None::<&str>, flags, Some(data.as_str())).map_err(|source| {
        DynmodsError::Remount {
            path: path.to_path_buf(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_systemd_cgroup2_line_keeps_its_options() {
        let line = "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot";
        let m = parse_mountinfo_line(line).unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(m.fs_type, "cgroup2");
        assert_eq!(
            mount_flags(&m.mount_options),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RELATIME
        );
        assert_eq!(
            remount_data(&m.super_options, true),
            "nsdelegate,memory_recursiveprot,favordynmods"
        );
        assert_eq!(
            remount_data(&["rw".into(), "favordynmods".into()], false),
            ""
        );
    }

    #[test]
    fn escaped_mount_points_and_bad_lines() {
        let line = r"41 31 0:38 / /mnt/with\040space rw,relatime - cgroup2 cgroup2 rw";
        let m = parse_mountinfo_line(line).unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/mnt/with space"));
        assert!(parse_mountinfo_line("garbage").is_none());
        assert!(parse_mountinfo_line("1 2 - x").is_none());
    }
}
