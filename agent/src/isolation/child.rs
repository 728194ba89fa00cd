//! What a task's process does between `fork` and `exec` (a `pre_exec` hook): join its
//! cgroup, fork its monitor (in a new pid namespace with `--isolation pid`), drop to
//! the task's user. Nothing of the task runs before it is in its cgroup, so nothing
//! can escape it.
//!
//! ```text
//! agent ── fork ──▶ child: write "0" to each cgroup.procs (joins every hierarchy)
//!                     │ [unshare(NEWPID | NEWNS), with --isolation pid]
//!                     ├─ fork ──▶ grandchild (pid 1 of the new namespace with --isolation pid:
//!                     │             mount --make-rprivate /, mount a fresh /proc)
//!                     │           [secret files or persistent volumes: unshare(NEWNS)
//!                     │             (unless done above), mount --make-rprivate /;
//!                     │             bind the secrets tmpfs onto <sandbox>/secrets,
//!                     │             remount it ro,nosuid,nodev,noexec; bind each volume
//!                     │             onto <sandbox>/<container_path> (remount ro if RO)]
//!                     │           setgroups, setgid, setuid ─▶ exec the task
//!                     └─ monitor: close fds >= 3 but the status file, ignore SIGTERM & co,
//!                        wait for the task, write "exit N" / "signal N" to the status
//!                        file, exit as the task did (same code, or the same signal)
//! ```
//!
//! Why a monitor: the process the agent spawns is the agent's child, and only a parent
//! learns how its child ended. An agent that is killed (`kill -9`) and started again
//! is no longer the parent of anything; the monitor is the task's parent and outlives
//! the agent, so it writes the task's end to a file the restarted agent reads
//! (recovery, [`crate::containerizer::process`]). The agent waits for the monitor as
//! it waited for the task: the monitor ends the way the task did. With a pid namespace
//! the extra fork is needed anyway (`unshare(CLONE_NEWPID)` puts only the caller's
//! *next* child in the new namespace), so the monitor and the namespace's shim are one
//! process.
//!
//! The monitor closes every inherited descriptor but the status file, so std's
//! exec-status pipe is held only by the task and `spawn` returns as soon as the task
//! has exec'd (or reports the exec error). It ignores the catchable signals: a kill
//! signals every process of the cgroup (or the process group, where the monitor is
//! too), and the monitor must outlive the task to report its status; SIGKILL ends
//! both. `ps` shows it as `strata-monitor`; it counts as one process of the task's
//! cgroup. Its cost: one more fork of the agent's address space in every launch (about
//! half a millisecond here), and memory: it never execs, so it keeps the agent's pages
//! as they were at its fork and the agent copies those it writes afterwards (0.5 to 1
//! MiB of PSS per task, measured with a small agent). Like any pid 1, a task
//! in its own pid namespace only receives signals from outside that it handles: a task
//! that does not handle SIGTERM is ended by the SIGKILL after the kill's grace period
//! (as in Docker without `--init`).
//!
//! Credentials are switched here rather than through `Command::uid`, because std
//! switches them before `pre_exec` hooks run, and joining a namespace needs root; the
//! monitor keeps the agent's (root), so the task's user cannot signal it.
//!
//! Secret files (issue 16, [`crate::objects`]): the agent has mounted them on a tmpfs
//! in its own (the host's) mount namespace; the task's process (not the monitor, which
//! stays in the host's namespace unless a pid namespace put both in a new one) moves
//! to a mount namespace of its own, makes every mount in it private (nothing it mounts
//! propagates back to the host) and binds the tmpfs onto the sandbox's `secrets`
//! directory. The bind's target is that directory opened (`O_PATH`, the last
//! component, in the sandbox the task's user owns, not followed if a link; the
//! directories above are the agent's) and named as `/proc/self/fd/N`, never a path the
//! user could swap meanwhile; the read-only remount that follows names the path (at
//! worst, a swapped path makes another mount of the task's own namespace read-only,
//! and the tmpfs itself is read-only already). Once `spawn`
//! returns the agent detaches the tmpfs from the host: it then exists only in the
//! task's namespace and goes when the task's last process does.
//!
//! Persistent volumes (issue 17, [`crate::volumes`]) are bound the same way, in the
//! same namespace: each volume's data onto its mount point in the sandbox (created by
//! the agent without following links, re-opened here with `O_NOFOLLOW` and named as
//! `/proc/self/fd/N`), recursively, then remounted read-only when the volume is RO.
//! The host's view of the sandbox keeps only the empty mount point.
//!
//! Only async-signal-safe calls happen in the child (raw syscalls through libc, no
//! allocation): the agent is multi-threaded and only the forking thread exists there.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use nix::sys::signal::{SigSet, Signal};

/// The signals the monitor ignores (a kill's SIGTERM, a terminal's SIGINT/SIGHUP...).
const IGNORED: [Signal; 7] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGPIPE,
];

/// What the child must do before exec. See the module docs.
#[derive(Debug, Default)]
pub struct ChildSetup {
    /// `cgroup.procs` of the task's cgroup, one per hierarchy (close-on-exec).
    pub join: Vec<File>,
    /// Run the task as pid 1 of a new pid namespace with its own /proc (implies a
    /// monitor: the namespace's shim is it).
    pub pid_namespace: bool,
    /// uid and gid to switch to (the agent is root); supplementary groups are dropped.
    pub credentials: Option<(u32, u32)>,
    /// Run the task under a monitor process that waits for it and outlives the agent.
    pub monitor: bool,
    /// Where the monitor writes how the task ended (`exit N\n` or `signal N\n`):
    /// opened for writing by the agent, close-on-exec (the task never holds it).
    pub status: Option<File>,
    /// Secret files to bind into the task's sandbox, in a mount namespace of its own.
    pub secrets: Option<SecretsBind>,
    /// Persistent volumes to bind into the task's sandbox, in the same namespace.
    pub volumes: Vec<VolumeBind>,
}

/// A persistent volume to bind into a task (see the module docs).
#[derive(Debug)]
pub struct VolumeBind {
    /// The volume's data on the host.
    pub source: PathBuf,
    /// The empty mount point `<sandbox>/<container_path>`, opened without following a
    /// link (close-on-exec).
    pub target: OwnedFd,
    /// Its path, to re-open it in the task's namespace and for the read-only remount.
    pub target_path: PathBuf,
    pub read_only: bool,
}

/// The secrets tmpfs to bind into a task (see the module docs).
#[derive(Debug)]
pub struct SecretsBind {
    /// The staging tmpfs on the host (under the agent's 0700 runtime dir).
    pub source: PathBuf,
    /// The empty mountpoint `<sandbox>/secrets`, opened `O_PATH` without following a
    /// link (close-on-exec).
    pub target: OwnedFd,
    /// Its path, for the read-only remount.
    pub target_path: PathBuf,
}

impl ChildSetup {
    /// Whether there is anything to do (else no hook is installed).
    pub fn is_empty(&self) -> bool {
        self.join.is_empty()
            && !self.pid_namespace
            && self.credentials.is_none()
            && !self.monitor
            && self.secrets.is_none()
            && self.volumes.is_empty()
    }

    /// Installs the hook on `cmd`. The open files move into the hook and are closed
    /// in the agent when `cmd` is dropped.
    pub fn install(self, cmd: &mut tokio::process::Command) {
        if self.is_empty() {
            return;
        }
        let secrets_asked = self.secrets.is_some();
        let fds: Vec<i32> = self.join.iter().map(AsRawFd::as_raw_fd).collect();
        let files = self.join;
        let pid_namespace = self.pid_namespace;
        let monitor = self.monitor || pid_namespace;
        let credentials = self.credentials;
        // std puts the task's stdio on fds 0-2 before the hook runs: a status file
        // there (an agent started with a standard stream closed) would be clobbered.
        let status: Option<OwnedFd> = self.status.and_then(|f| {
            if f.as_raw_fd() > 2 {
                return Some(OwnedFd::from(f));
            }
            // std duplicates to the lowest free fd >= 3 (close-on-exec).
            match f.try_clone() {
                Ok(copy) => Some(OwnedFd::from(copy)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot move the status file off the standard fds; the task's end is not recorded");
                    None
                }
            }
        });
        let status_fd: i32 = status.as_ref().map_or(-1, AsRawFd::as_raw_fd);
        // Built here: the child must not allocate.
        let cstr = |s: &str| CString::new(s).unwrap_or_default();
        // The secrets' source, the mountpoint as /proc/self/fd/N, its path; the
        // descriptor moved off the standard fds as the status file is.
        let secrets = self.secrets.and_then(|bind| {
            let target: OwnedFd = if bind.target.as_raw_fd() > 2 {
                bind.target
            } else {
                match bind.target.try_clone() {
                    Ok(copy) => copy,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot move the secrets mountpoint off the standard fds");
                        return None;
                    }
                }
            };
            let path = |p: &std::path::Path| CString::new(p.as_os_str().as_bytes()).unwrap_or_default();
            let via_fd = cstr(&format!("/proc/self/fd/{}", target.as_raw_fd()));
            Some((path(&bind.source), via_fd, path(&bind.target_path), target))
        });
        // Asked for and not prepared: the hook fails rather than run the task without.
        let secrets_lost = secrets.is_none() && secrets_asked;
        // The volumes, as the secrets: source, mount point as /proc/self/fd/N, its
        // path, the descriptor (off the standard fds), read-only.
        let volumes_asked = self.volumes.len();
        let volumes: Vec<(CString, CString, CString, OwnedFd, bool)> = self
            .volumes
            .into_iter()
            .filter_map(|bind| {
                let target: OwnedFd = if bind.target.as_raw_fd() > 2 {
                    bind.target
                } else {
                    match bind.target.try_clone() {
                        Ok(copy) => copy,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot move a volume's mountpoint off the standard fds");
                            return None;
                        }
                    }
                };
                let path = |p: &std::path::Path| {
                    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
                };
                let via_fd = cstr(&format!("/proc/self/fd/{}", target.as_raw_fd()));
                Some((
                    path(&bind.source),
                    via_fd,
                    path(&bind.target_path),
                    target,
                    bind.read_only,
                ))
            })
            .collect();
        let volumes_lost = volumes.len() != volumes_asked;
        let own_mounts = secrets.is_some() || !volumes.is_empty();
        let (proc_src, proc_dir, proc_fs, root) =
            (cstr("proc"), cstr("/proc"), cstr("proc"), cstr("/"));
        let mut ignored = SigSet::empty();
        for sig in IGNORED {
            ignored.add(sig);
        }
        let hook = move || -> io::Result<()> {
            // Keep the files alive (and their fds valid) for as long as the hook exists.
            let _ = (&files, &status, &secrets, &volumes);
            if secrets_lost || volumes_lost {
                // A raw errno: an `io::Error` with a message would allocate.
                return Err(io::Error::from_raw_os_error(libc::EBADF));
            }
            // SAFETY: every call below is a raw syscall (write, sigprocmask, unshare,
            // fork, open, dup3, close, mount, setgroups, setgid, setuid) on values prepared before the
            // fork: all are async-signal-safe (signal-safety(7)), nothing allocates or
            // takes a lock.
            unsafe {
                for &fd in &fds {
                    if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                if monitor {
                    // Blocked across the fork so that the monitor cannot die of a kill's
                    // SIGTERM before it ignores it; the task side unblocks them.
                    let mut old: libc::sigset_t = std::mem::zeroed();
                    if libc::sigprocmask(libc::SIG_BLOCK, ignored.as_ref(), &mut old) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    if pid_namespace && libc::unshare(libc::CLONE_NEWPID | libc::CLONE_NEWNS) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    match libc::fork() {
                        -1 => return Err(io::Error::last_os_error()),
                        0 => {}
                        task => run_monitor(task, status_fd),
                    }
                    if libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                if own_mounts {
                    // The task alone gets a mount namespace (the monitor stays in the
                    // host's), unless the pid namespace's unshare made one for both.
                    if !pid_namespace && libc::unshare(libc::CLONE_NEWNS) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    if libc::mount(
                        std::ptr::null(),
                        root.as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
                if let Some((source, via_fd, target, reserved)) = &secrets {
                    bind_at(source, via_fd, target, reserved.as_raw_fd())?;
                    if libc::mount(
                        std::ptr::null(),
                        target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_REMOUNT
                            | libc::MS_BIND
                            | libc::MS_RDONLY
                            | libc::MS_NOSUID
                            | libc::MS_NODEV
                            | libc::MS_NOEXEC,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
                for (source, via_fd, target, reserved, read_only) in &volumes {
                    bind_at(source, via_fd, target, reserved.as_raw_fd())?;
                    if *read_only
                        && libc::mount(
                            std::ptr::null(),
                            target.as_ptr(),
                            std::ptr::null(),
                            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
                            std::ptr::null(),
                        ) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
                if pid_namespace {
                    // pid 1 of the new namespace: a private /proc that shows only it
                    // (`/` made private first, unless the binds above did it).
                    if !own_mounts
                        && libc::mount(
                            std::ptr::null(),
                            root.as_ptr(),
                            std::ptr::null(),
                            libc::MS_REC | libc::MS_PRIVATE,
                            std::ptr::null(),
                        ) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                    if libc::mount(
                        proc_src.as_ptr(),
                        proc_dir.as_ptr(),
                        proc_fs.as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
                if let Some((uid, gid)) = credentials
                    && (libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(gid) != 0
                        || libc::setuid(uid) != 0)
                {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        };
        // SAFETY: the hook only makes async-signal-safe calls (see above).
        unsafe {
            cmd.pre_exec(hook);
        }
    }
}

/// How a task ended, as the monitor writes it: `exit N` or `signal N` (a line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordedEnd {
    Exited(i32),
    Signaled(i32),
}

/// In a task's pre-exec hook, in its own mount namespace: binds `source` onto the
/// mountpoint `target` (a directory of the sandbox). The mountpoint is opened again
/// in this namespace (a descriptor of the agent's names the host's mount, where a bind
/// is refused), without following a link, onto descriptor number `reserved`, which
/// the agent's copy held, so that `via_fd` (`/proc/self/fd/<reserved>`) names it.
/// Async-signal-safe: system calls only.
///
/// # Safety
/// Called between fork and exec only.
unsafe fn bind_at(
    source: &std::ffi::CStr,
    via_fd: &std::ffi::CStr,
    target: &std::ffi::CStr,
    reserved: i32,
) -> io::Result<()> {
    // SAFETY: plain system calls on NUL-terminated paths the agent prepared.
    unsafe {
        let fd = libc::open(
            target.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::dup3(fd, reserved, libc::O_CLOEXEC) < 0 {
            return Err(io::Error::last_os_error());
        }
        libc::close(fd);
        if libc::mount(
            source.as_ptr(),
            via_fd.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Reads what a monitor wrote; `None` when it wrote nothing (it was killed, or the
/// task still runs) or something unreadable.
pub fn parse_status(text: &str) -> Option<RecordedEnd> {
    let line = text.lines().next()?.trim();
    let (kind, n) = line.split_once(' ')?;
    let n: i32 = n.trim().parse().ok()?;
    match kind {
        "exit" => Some(RecordedEnd::Exited(n)),
        "signal" => Some(RecordedEnd::Signaled(n)),
        _ => None,
    }
}

/// Formats `prefix` and `n` as "prefix N\n" into `buf`; returns the length. No
/// allocation: called in the monitor.
fn format_status(buf: &mut [u8; 32], prefix: &[u8], n: i32) -> usize {
    let mut len = 0;
    for &b in prefix {
        buf[len] = b;
        len += 1;
    }
    let mut digits = [0u8; 11];
    let mut count = 0;
    let negative = n < 0;
    let mut v = i64::from(n).unsigned_abs();
    loop {
        digits[count] = b'0' + (v % 10) as u8;
        count += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if negative {
        buf[len] = b'-';
        len += 1;
    }
    while count > 0 {
        count -= 1;
        buf[len] = digits[count];
        len += 1;
    }
    buf[len] = b'\n';
    len + 1
}

/// The monitor: waits for the task (its only child), records how it ended and ends the
/// same way. Never returns.
///
/// # Safety
/// Called in a forked child of a multi-threaded process; only async-signal-safe calls.
unsafe fn run_monitor(task: libc::pid_t, status_fd: i32) -> ! {
    // SAFETY (each call): close_range/close, prctl, open, sigaction, sigemptyset, sigprocmask,
    // waitpid, write, setrlimit, kill, getpid and _exit are raw syscalls (or, for
    // sigemptyset, a write to a stack value) listed as async-signal-safe in
    // signal-safety(7) (close_range and prctl are plain syscalls); the buffers are on
    // the stack or static.
    unsafe {
        // Every descriptor but stdio and the status file: std's exec-status pipe above
        // all, or the agent's spawn would wait for the task to end.
        close_from_to(3, status_fd);
        // What `ps` shows (else the name of the agent's thread that forked it).
        libc::prctl(libc::PR_SET_NAME, c"strata-monitor".as_ptr(), 0, 0, 0);
        // Never the OOM killer's pick in the task's memory cgroup: the task is (the
        // monitor is a copy of the agent, far larger than a small task). Allowed as
        // root; elsewhere the write fails and nothing changes.
        let fd = libc::open(
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        if fd >= 0 {
            libc::write(fd, b"-1000".as_ptr().cast(), 5);
            libc::close(fd);
        }
        let mut ignore: libc::sigaction = std::mem::zeroed();
        ignore.sa_sigaction = libc::SIG_IGN;
        libc::sigemptyset(&mut ignore.sa_mask);
        for sig in IGNORED {
            libc::sigaction(sig as libc::c_int, &ignore, std::ptr::null_mut());
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        let mut status: libc::c_int = 0;
        loop {
            let r = libc::waitpid(task, &mut status, 0);
            if r == task {
                break;
            }
            if r < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
        let mut buf = [0u8; 32];
        let (len, code, sig) = if libc::WIFEXITED(status) {
            let code = libc::WEXITSTATUS(status);
            (format_status(&mut buf, b"exit ", code), code, 0)
        } else {
            let sig = if libc::WIFSIGNALED(status) {
                libc::WTERMSIG(status)
            } else {
                libc::SIGKILL
            };
            (format_status(&mut buf, b"signal ", sig), 128 + sig, sig)
        };
        if status_fd >= 0 {
            let mut off = 0;
            while off < len {
                let w = libc::write(status_fd, buf[off..].as_ptr().cast(), len - off);
                if w > 0 {
                    off += w as usize;
                } else if w < 0 && *libc::__errno_location() == libc::EINTR {
                    continue;
                } else {
                    break;
                }
            }
        }
        if sig == 0 {
            libc::_exit(code);
        }
        // Die of the same signal (without a core dump), so the agent reports it as such.
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut default.sa_mask);
        libc::sigaction(sig, &default, std::ptr::null_mut());
        libc::kill(libc::getpid(), sig);
        libc::_exit(code)
    }
}

/// Closes every descriptor from `from` up, except `keep` (when it is one of them).
///
/// # Safety
/// Async-signal-safe: raw `close_range` (Linux 5.9+), else `close` in a loop.
unsafe fn close_from_to(from: i32, keep: i32) {
    let close = |lo: i32, hi: u32| {
        // SAFETY: raw syscalls on descriptor numbers; nothing is allocated.
        unsafe {
            if libc::syscall(libc::SYS_close_range, lo as u32, hi, 0u32) != 0 {
                let hi = hi.min(65_535) as i32;
                let mut fd = lo;
                while fd <= hi {
                    libc::close(fd);
                    fd += 1;
                }
            }
        }
    };
    if keep >= from {
        if keep > from {
            close(from, (keep - 1) as u32);
        }
        close(keep + 1, u32::MAX);
    } else {
        close(from, u32::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_formatted_and_parsed_back() {
        let mut buf = [0u8; 32];
        for (prefix, n, text, end) in [
            (&b"exit "[..], 0, "exit 0\n", RecordedEnd::Exited(0)),
            (&b"exit "[..], 255, "exit 255\n", RecordedEnd::Exited(255)),
            (&b"signal "[..], 9, "signal 9\n", RecordedEnd::Signaled(9)),
            (&b"exit "[..], -1, "exit -1\n", RecordedEnd::Exited(-1)),
        ] {
            let len = format_status(&mut buf, prefix, n);
            assert_eq!(std::str::from_utf8(&buf[..len]).unwrap(), text);
            assert_eq!(parse_status(text), Some(end));
        }
        assert_eq!(parse_status(""), None);
        assert_eq!(parse_status("exit"), None);
        assert_eq!(parse_status("exit x\n"), None);
        assert_eq!(parse_status("gone 3\n"), None);
    }
}
