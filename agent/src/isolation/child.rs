//! What a task's process does between `fork` and `exec` (a `pre_exec` hook): join its
//! cgroup, enter a new pid namespace, drop to the task's user. Nothing of the task runs
//! before it is in its cgroup, so nothing can escape it.
//!
//! ```text
//! agent ── fork ──▶ child: write "0" to each cgroup.procs (joins every hierarchy)
//!                     │ (with --isolation pid)
//!                     ├─ unshare(NEWPID | NEWNS), fork ──▶ grandchild = pid 1 of the new namespace:
//!                     │                                      mount --make-rprivate /, mount a fresh /proc
//!                     │                                      setgroups, setgid, setuid ─▶ exec the task
//!                     └─ shim: close fds >= 3, ignore SIGTERM & co, wait for pid 1,
//!                        exit as it did (same code, or the same signal)
//!                   setgroups, setgid, setuid (no pid namespace) ─▶ exec the task
//! ```
//!
//! Why a shim: `unshare(CLONE_NEWPID)` puts only the caller's *next* child in the new
//! namespace, so one more fork is needed; the process the agent spawned (and reaps)
//! stays outside and mirrors the task's end. It closes every inherited descriptor, so
//! std's exec-status pipe is held only by the grandchild and `spawn` returns as soon
//! as the task has exec'd (or reports the exec error). It ignores the catchable
//! signals: a kill signals every process of the cgroup, and the shim must outlive the
//! task to report its status; SIGKILL ends both. Like any pid 1, the task only
//! receives signals from outside its namespace that it handles: a task that does not
//! handle SIGTERM is ended by the SIGKILL after the kill's grace period (as in Docker
//! without `--init`).
//!
//! Credentials are switched here rather than through `Command::uid`, because std
//! switches them before `pre_exec` hooks run, and joining a namespace needs root.
//!
//! Only async-signal-safe calls happen in the child (raw syscalls through libc, no
//! allocation): the agent is multi-threaded and only the forking thread exists there.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// What the child must do before exec. See the module docs.
#[derive(Debug, Default)]
pub struct ChildSetup {
    /// `cgroup.procs` of the task's cgroup, one per hierarchy (close-on-exec).
    pub join: Vec<File>,
    /// Run the task as pid 1 of a new pid namespace with its own /proc.
    pub pid_namespace: bool,
    /// uid and gid to switch to (the agent is root); supplementary groups are dropped.
    pub credentials: Option<(u32, u32)>,
}

impl ChildSetup {
    /// Whether there is anything to do (else no hook is installed).
    pub fn is_empty(&self) -> bool {
        self.join.is_empty() && !self.pid_namespace && self.credentials.is_none()
    }

    /// Installs the hook on `cmd`. The open files move into the hook and are closed
    /// in the agent when `cmd` is dropped.
    pub fn install(self, cmd: &mut tokio::process::Command) {
        if self.is_empty() {
            return;
        }
        let fds: Vec<i32> = self.join.iter().map(AsRawFd::as_raw_fd).collect();
        let files = self.join;
        let pid_namespace = self.pid_namespace;
        let credentials = self.credentials;
        // Built here: the child must not allocate.
        let cstr = |s: &str| CString::new(s).unwrap_or_default();
        let (proc_src, proc_dir, proc_fs, root) =
            (cstr("proc"), cstr("/proc"), cstr("proc"), cstr("/"));
        let hook = move || -> io::Result<()> {
            // Keep the files alive (and their fds valid) for as long as the hook exists.
            let _ = &files;
            // SAFETY: only async-signal-safe syscalls on values prepared before the fork.
            unsafe {
                for &fd in &fds {
                    if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                if pid_namespace {
                    if libc::unshare(libc::CLONE_NEWPID | libc::CLONE_NEWNS) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    match libc::fork() {
                        -1 => return Err(io::Error::last_os_error()),
                        0 => {}
                        child => shim(child),
                    }
                    // pid 1 of the new namespace: a private /proc that shows only it.
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

/// The process outside the pid namespace: waits for the task (pid 1 inside) and ends
/// the way it did. Never returns.
///
/// # Safety
/// Called in a forked child; only async-signal-safe calls.
unsafe fn shim(child: libc::pid_t) -> ! {
    unsafe {
        // Every descriptor but stdio, std's exec-status pipe above all.
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
            for fd in 3..4096 {
                libc::close(fd);
            }
        }
        for sig in [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGPIPE,
        ] {
            libc::signal(sig, libc::SIG_IGN);
        }
        let mut status: libc::c_int = 0;
        loop {
            let r = libc::waitpid(child, &mut status, 0);
            if r == child {
                break;
            }
            if r < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
        if libc::WIFEXITED(status) {
            libc::_exit(libc::WEXITSTATUS(status));
        }
        let sig = if libc::WIFSIGNALED(status) {
            libc::WTERMSIG(status)
        } else {
            libc::SIGKILL
        };
        // Die of the same signal (without a core dump), so the agent reports it as such.
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::kill(libc::getpid(), sig);
        libc::_exit(128 + sig)
    }
}
