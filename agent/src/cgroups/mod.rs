//! One cgroup per container, through cgroups-rs, on cgroup v1 and v2 (detected at start).
//!
//! ```text
//! /sys/fs/cgroup/<controller>/<root>/<slot>/<container id>      (v1: cpu, cpuacct, memory, pids, freezer)
//! /sys/fs/cgroup/<root>/<slot>/<container id>                   (v2)
//!           root = --cgroups-root (default "strata")
//!           slot = "agent-" + hash of the agent's work dir: several agents on one machine
//!                  (`strata local`, tests) never touch each other's cgroups
//!
//! create(id, limits) ─▶ mkdir in every hierarchy, write the limits ─▶ JoinFiles (cgroup.procs, open)
//!   the child writes "0" into each before it execs (see `crate::isolation::child`)
//! signal(id, SIGTERM)  every process listed in cgroup.procs
//! destroy(id)          freeze ─▶ SIGKILL everything listed ─▶ thaw (v2: cgroup.kill when the
//!                      kernel has it) ─▶ wait until empty ─▶ rmdir
//! statistics(id)       cpuacct / cpu.stat, memory usage and peak, processes, threads
//! orphans()            container cgroups under this agent's slot
//! ```
//!
//! Everything here is blocking file-system work on cgroupfs, cheap (tens of µs per
//! file) except `destroy`, which may wait for processes to die; callers on the async
//! runtime run that on the blocking pool.

pub mod dynmods;
pub mod limits;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cgroups_rs::FreezerState;
use cgroups_rs::fs::cgroup::Cgroup;
use cgroups_rs::fs::cpuacct::CpuAcctController;
use cgroups_rs::fs::freezer::FreezerController;
use cgroups_rs::fs::hierarchies::{self, V1, V2};
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::{Controller, Controllers, Hierarchy};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;

pub use limits::Limits;

/// The controllers a task's cgroup lives in (v1 names; v2 has the same ones, the
/// freezer built in).
const V1_REQUIRED: [Controllers; 4] = [
    Controllers::Cpu,
    Controllers::CpuAcct,
    Controllers::Mem,
    Controllers::Freezer,
];
/// How long `destroy` waits for a frozen, SIGKILLed cgroup to empty.
const EMPTY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a freeze may take before the kill goes ahead unfrozen.
const FREEZE_TIMEOUT: Duration = Duration::from_millis(500);
const POLL: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// The `--cgroups-*` flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupsOptions {
    /// Parent of every cgroup Strata creates, relative to the hierarchy root (`strata`).
    pub root: String,
    /// CFS quota as a hard cpu cap, on top of the shares (Mesos: `--cgroups_enable_cfs`).
    pub enable_cfs: bool,
    /// Most processes and threads per task; `None`: no limit.
    pub pids_max: Option<u64>,
    /// Set the kernel's `favordynmods` on the cgroup2 mount at start, so that a task
    /// joining its cgroups never waits for an RCU grace period (see [`dynmods`]).
    pub favor_dynmods: bool,
}

impl Default for CgroupsOptions {
    fn default() -> Self {
        CgroupsOptions {
            root: "strata".to_string(),
            enable_cfs: true,
            pids_max: None,
            favor_dynmods: false,
        }
    }
}

/// Why cgroups cannot be used, or an operation on one failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupsError {
    #[error("the agent runs as uid {0}; creating cgroups needs root")]
    NotRoot(u32),
    #[error("no cgroup file system is mounted (looked at /proc/self/mountinfo)")]
    NotMounted,
    #[error(
        "the {0} cgroup controller is not mounted (cgroup v1); mount it or run with --isolation none"
    )]
    MissingController(String),
    #[error("the {0} controller is not enabled in /sys/fs/cgroup/cgroup.controllers (cgroup v2)")]
    MissingV2Controller(String),
    #[error(
        "invalid cgroups root '{0}': use a relative path of letters, digits, '-', '_' and '.' (e.g. strata)"
    )]
    BadRoot(String),
    #[error("cannot create cgroup {path}: {source}")]
    Create {
        path: String,
        source: cgroups_rs::fs::error::Error,
    },
    #[error("cannot set the limits of cgroup {path}: {source}")]
    Limits {
        path: String,
        source: cgroups_rs::fs::error::Error,
    },
    #[error(
        "cgroup {path}: {file} reads {got} after writing {want}: the memory limit is not in force"
    )]
    MemoryLimit {
        path: String,
        file: &'static str,
        want: u64,
        got: String,
    },
    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cgroup {path} still has processes {EMPTY_TIMEOUT:?} after SIGKILL")]
    Busy { path: String },
    #[error("cannot remove cgroup {path}: {source}")]
    Remove {
        path: String,
        source: cgroups_rs::fs::error::Error,
    },
}

/// A pid read from `cgroup.procs` that names one process. cgroups-rs reads a line it
/// cannot parse as pid 0, and kill(0) or a negative pid would signal a whole process
/// group (pid 0: the agent's own).
fn signalable(p: cgroups_rs::CgroupPid) -> Option<u64> {
    (p.pid > 0 && p.pid <= i32::MAX as u64).then_some(p.pid)
}

/// Open `cgroup.procs` files of a new cgroup, one per hierarchy. A process that writes
/// `0` into each joins the cgroup (with everything it starts afterwards). The files
/// are close-on-exec.
#[derive(Debug)]
pub struct JoinFiles(pub Vec<File>);

/// Resource usage of one cgroup (Mesos' `ResourceStatistics`, abridged).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Statistics {
    pub processes: Option<u64>,
    pub threads: Option<u64>,
    pub cpus_user_time_secs: Option<f64>,
    pub cpus_system_time_secs: Option<f64>,
    pub cpus_total_time_secs: Option<f64>,
    pub cpus_nr_periods: Option<u64>,
    pub cpus_nr_throttled: Option<u64>,
    pub cpus_throttled_time_secs: Option<f64>,
    pub mem_total_bytes: Option<u64>,
    pub mem_peak_bytes: Option<u64>,
    pub mem_limit_bytes: Option<u64>,
}

/// This agent's cgroups. See the module docs.
#[derive(Debug)]
pub struct Cgroups {
    version: CgroupVersion,
    /// The hierarchy, read once at start (cgroups-rs re-reads mountinfo otherwise).
    hier: Hier,
    options: CgroupsOptions,
    /// `<root>/<slot>`: the parent of this agent's container cgroups.
    slot: String,
    /// Controllers a container cgroup is created in (cgroups-rs names).
    controllers: Vec<String>,
    /// v1: the kernel accounts swap (`memory.memsw.*`).
    memsw: bool,
    /// v2: the kernel has `cgroup.kill` (5.14+).
    cgroup_kill: bool,
    /// `favordynmods` is on (asked for and set, or already on).
    favor_dynmods: bool,
}

impl Cgroups {
    /// Checks that cgroups can be used here (root, the hierarchy, its controllers) and
    /// creates this agent's slot. `work_dir` names the slot.
    pub fn detect(options: CgroupsOptions, work_dir: &Path) -> Result<Cgroups, CgroupsError> {
        validate_root(&options.root)?;
        let uid = nix::unistd::geteuid();
        if !uid.is_root() {
            return Err(CgroupsError::NotRoot(uid.as_raw()));
        }
        let version = if hierarchies::is_cgroup2_unified_mode() {
            CgroupVersion::V2
        } else {
            CgroupVersion::V1
        };
        let mut controllers: Vec<String> = Vec::new();
        let mut memsw = false;
        let mut cgroup_kill = false;
        match version {
            CgroupVersion::V1 => {
                let v1 = V1::new();
                if !hierarchies::mountinfo_self()
                    .iter()
                    .any(|m| m.fs_type.0 == "cgroup")
                {
                    return Err(CgroupsError::NotMounted);
                }
                for c in V1_REQUIRED {
                    if v1.get_mount_point(c.clone()).is_none() {
                        return Err(CgroupsError::MissingController(c.to_string()));
                    }
                    controllers.push(c.to_string());
                }
                if v1.get_mount_point(Controllers::Pids).is_some() {
                    controllers.push(Controllers::Pids.to_string());
                } else if options.pids_max.is_some() {
                    return Err(CgroupsError::MissingController("pids".into()));
                }
                memsw = v1
                    .get_mount_point(Controllers::Mem)
                    .is_some_and(|(point, _)| point.join("memory.memsw.limit_in_bytes").exists());
            }
            CgroupVersion::V2 => {
                let root = PathBuf::from(hierarchies::UNIFIED_MOUNTPOINT);
                let available =
                    std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
                let available: Vec<&str> = available.split_whitespace().collect();
                let mut wanted = vec!["cpu", "memory"];
                if options.pids_max.is_some() || available.contains(&"pids") {
                    wanted.push("pids");
                }
                for c in wanted {
                    if !available.contains(&c) {
                        return Err(CgroupsError::MissingV2Controller(c.to_string()));
                    }
                    controllers.push(c.to_string());
                }
                // The freezer is part of every v2 cgroup (cgroup.freeze).
                cgroup_kill = root.join("cgroup.kill").exists()
                    || std::fs::read_dir(&root)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .any(|e| e.path().join("cgroup.kill").exists());
            }
        }
        let favor_dynmods = if options.favor_dynmods {
            match dynmods::set(true) {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "--cgroups-favor-dynmods: not set; about 1% of task launches may wait 10-25 ms to join their cgroups");
                    false
                }
            }
        } else {
            dynmods::cgroup2_mount()
                .is_some_and(|m| m.super_options.iter().any(|o| o == "favordynmods"))
        };
        let slot = format!("{}/agent-{:016x}", options.root, work_dir_hash(work_dir));
        let hier = match version {
            CgroupVersion::V1 => Hier::V1(V1::new()),
            CgroupVersion::V2 => Hier::V2(V2::new()),
        };
        let cgroups = Cgroups {
            version,
            hier,
            options,
            slot,
            controllers,
            memsw,
            cgroup_kill,
            favor_dynmods,
        };
        // Creating the slot proves the hierarchy is writable.
        Cgroup::new_with_specified_controllers(
            cgroups.hier.boxed(),
            &cgroups.slot,
            Some(cgroups.controllers.clone()),
        )
        .map_err(|source| CgroupsError::Create {
            path: cgroups.slot.clone(),
            source,
        })?;
        Ok(cgroups)
    }

    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    pub fn options(&self) -> &CgroupsOptions {
        &self.options
    }

    /// `<root>/<slot>`, relative to each hierarchy's root.
    pub fn slot(&self) -> &str {
        &self.slot
    }

    /// One line for the start log: version, controllers, where.
    pub fn describe(&self) -> String {
        let version = match self.version {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
        };
        format!(
            "cgroup {version} ({}) under {}, cfs cap {}{}, favordynmods {}",
            self.controllers.join(","),
            self.slot,
            if self.options.enable_cfs { "on" } else { "off" },
            match self.options.pids_max {
                Some(n) => format!(", pids max {n}"),
                None => String::new(),
            },
            if self.favor_dynmods { "on" } else { "off" }
        )
    }

    /// The cgroup path (relative to each hierarchy root) of a container.
    pub fn path_of(&self, id: &str) -> String {
        format!("{}/{id}", self.slot)
    }

    fn load(&self, path: &str) -> Cgroup {
        Cgroup::load_with_specified_controllers(self.hier.boxed(), path, self.controllers.clone())
    }

    /// Fails unless the memory limit files of `cg` hold `limits` (the kernel rounds a
    /// limit down to whole pages).
    fn check_memory(&self, cg: &Cgroup, path: &str, limits: &Limits) -> Result<(), CgroupsError> {
        let Some(want) = limits.mem_bytes else {
            return Ok(());
        };
        let Some(mem): Option<&MemController> = cg.controller_of() else {
            return Ok(());
        };
        let files: &[&'static str] = match self.version {
            CgroupVersion::V1 if self.memsw => {
                &["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
            }
            CgroupVersion::V1 => &["memory.limit_in_bytes"],
            CgroupVersion::V2 => &["memory.max"],
        };
        for &file in files {
            let got = std::fs::read_to_string(mem.path().join(file)).unwrap_or_default();
            let got = got.trim();
            let in_force = got
                .parse::<u64>()
                .is_ok_and(|v| v <= want && want - v < 64 * 1024);
            if !in_force {
                return Err(CgroupsError::MemoryLimit {
                    path: path.to_string(),
                    file,
                    want,
                    got: got.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Creates a container's cgroup with its limits and opens its `cgroup.procs` files
    /// for the child to join.
    pub fn create(&self, id: &str, limits: &Limits) -> Result<JoinFiles, CgroupsError> {
        let path = self.path_of(id);
        let cg = Cgroup::new_with_specified_controllers(
            self.hier.boxed(),
            &path,
            Some(self.controllers.clone()),
        )
        .map_err(|source| CgroupsError::Create {
            path: path.clone(),
            source,
        })?;
        let resources = limits.to_cgroup_resources(self.version, self.memsw);
        if let Err(source) = cg.apply(&resources) {
            let _ = cg.delete();
            return Err(CgroupsError::Limits { path, source });
        }
        // cgroups-rs ignores a failed write of the memory limits (it does check the
        // cpu ones): read them back, since a task must never run without its limit.
        if let Err(e) = self.check_memory(&cg, &path, limits) {
            let _ = cg.delete();
            return Err(e);
        }
        let mut dirs: Vec<PathBuf> = cg
            .subsystems()
            .iter()
            .map(|s| s.to_controller().path().to_path_buf())
            .collect();
        dirs.sort();
        dirs.dedup();
        let mut files = Vec::with_capacity(dirs.len());
        for dir in dirs {
            let file = dir.join("cgroup.procs");
            match std::fs::OpenOptions::new().write(true).open(&file) {
                Ok(f) => files.push(f),
                Err(source) => {
                    let _ = cg.delete();
                    return Err(CgroupsError::Open { path: file, source });
                }
            }
        }
        tracing::debug!(cgroup = %path, limits = ?limits.files(self.version, self.memsw), "cgroup created");
        Ok(JoinFiles(files))
    }

    /// The processes in a container's cgroup (every hierarchy), sorted.
    pub fn procs(&self, id: &str) -> Vec<u64> {
        let cg = self.load(&self.path_of(id));
        let mut pids: Vec<u64> = cg.procs().into_iter().filter_map(signalable).collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Moves a running process (and its threads) into a container's cgroup. Tasks join
    /// theirs before exec ([`JoinFiles`]); this is for tools and tests.
    pub fn add_process(&self, id: &str, pid: u32) -> Result<(), CgroupsError> {
        let path = self.path_of(id);
        self.load(&path)
            .add_task_by_tgid(cgroups_rs::CgroupPid::from(u64::from(pid)))
            .map_err(|source| CgroupsError::Create { path, source })
    }

    /// Whether the container's cgroup exists in any hierarchy.
    pub fn exists(&self, id: &str) -> bool {
        self.load(&self.path_of(id)).exists()
    }

    /// Sends `signal` to every process in the container's cgroup; returns how many.
    pub fn signal(&self, id: &str, signal: Signal) -> usize {
        let pids = self.procs(id);
        for &pid in &pids {
            let _ = kill(Pid::from_raw(pid as i32), signal);
        }
        pids.len()
    }

    /// Kills everything in the container's cgroup, waits until it is empty, and removes
    /// it. Blocking. A cgroup that does not exist is already destroyed.
    pub fn destroy(&self, id: &str) -> Result<(), CgroupsError> {
        let path = self.path_of(id);
        self.destroy_path(&path)
    }

    fn destroy_path(&self, path: &str) -> Result<(), CgroupsError> {
        let cg = self.load(path);
        if !cg.exists() {
            return Ok(());
        }
        self.kill_all(&cg);
        let deadline = Instant::now() + EMPTY_TIMEOUT;
        while !cg.procs().is_empty() {
            if Instant::now() >= deadline {
                return Err(CgroupsError::Busy {
                    path: path.to_string(),
                });
            }
            // Late arrivals (a fork racing the freeze) get the same treatment.
            self.kill_all(&cg);
            std::thread::sleep(POLL);
        }
        // rmdir can race the kernel's last bookkeeping of exited tasks: retry briefly.
        loop {
            match cg.delete() {
                Ok(()) => break,
                Err(_) if !cg.exists() => break,
                Err(source) if Instant::now() >= deadline => {
                    return Err(CgroupsError::Remove {
                        path: path.to_string(),
                        source,
                    });
                }
                Err(_) => std::thread::sleep(POLL),
            }
        }
        tracing::debug!(cgroup = %path, "cgroup destroyed");
        Ok(())
    }

    /// SIGKILL to everything in a container's cgroup (frozen first), without waiting
    /// for it to empty. Blocking.
    pub fn kill_now(&self, id: &str) {
        let cg = self.load(&self.path_of(id));
        if cg.exists() {
            self.kill_all(&cg);
        }
    }

    /// SIGKILL to everything in `cg`, frozen so nothing forks meanwhile (v2 with
    /// `cgroup.kill`: the kernel does it in one step).
    fn kill_all(&self, cg: &Cgroup) {
        if self.version == CgroupVersion::V2 && self.cgroup_kill && cg.kill().is_ok() {
            return;
        }
        let freezer: Option<&FreezerController> = cg.controller_of();
        let frozen = freezer.is_some_and(|f| {
            if f.freeze().is_err() {
                return false;
            }
            let deadline = Instant::now() + FREEZE_TIMEOUT;
            loop {
                match f.state() {
                    Ok(FreezerState::Frozen) => return true,
                    _ if Instant::now() >= deadline => return false,
                    _ => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        for pid in cg.procs().into_iter().filter_map(signalable) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        if let Some(f) = freezer
            && (frozen || !matches!(f.state(), Ok(FreezerState::Thawed)))
        {
            let _ = f.thaw();
        }
    }

    /// Whether the kernel's OOM killer killed a process of this container.
    pub fn oom_killed(&self, id: &str) -> bool {
        let cg = self.load(&self.path_of(id));
        let Some(mem): Option<&MemController> = cg.controller_of() else {
            return false;
        };
        let dir = mem.path();
        match self.version {
            CgroupVersion::V1 => {
                let oom = mem.memory_stat().oom_control;
                // Older kernels have no oom_kill counter: the limit was hit (failcnt) and
                // the kernel was out of memory for this cgroup.
                oom.oom_kill > 0
                    || (oom.under_oom
                        && read_u64(&dir.join("memory.failcnt")).is_some_and(|n| n > 0))
            }
            CgroupVersion::V2 => flat_keyed(&dir.join("memory.events"))
                .into_iter()
                .any(|(k, v)| k == "oom_kill" && v > 0),
        }
    }

    /// Usage of a container's cgroup; `None` when it does not exist.
    pub fn statistics(&self, id: &str, limits: &Limits) -> Option<Statistics> {
        let cg = self.load(&self.path_of(id));
        if !cg.exists() {
            return None;
        }
        let mut s = Statistics {
            processes: Some(cg.procs().len() as u64),
            threads: Some(cg.tasks().len() as u64),
            mem_limit_bytes: limits.mem_bytes,
            ..Statistics::default()
        };
        let cpu_dir = cg
            .subsystems()
            .iter()
            .map(|s| s.to_controller())
            .find(|c| c.control_type() == Controllers::Cpu)
            .map(|c| c.path().to_path_buf());
        let cpu_stat = cpu_dir
            .map(|d| flat_keyed(&d.join("cpu.stat")))
            .unwrap_or_default();
        let stat = |k: &str| cpu_stat.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
        s.cpus_nr_periods = stat("nr_periods");
        s.cpus_nr_throttled = stat("nr_throttled");
        match self.version {
            CgroupVersion::V1 => {
                s.cpus_throttled_time_secs = stat("throttled_time").map(|ns| ns as f64 / 1e9);
                if let Some(acct) = cg.controller_of::<CpuAcctController>() {
                    let a = acct.cpuacct();
                    s.cpus_total_time_secs = Some(a.usage as f64 / 1e9);
                    s.cpus_user_time_secs = Some(a.usage_user as f64 / 1e9);
                    s.cpus_system_time_secs = Some(a.usage_sys as f64 / 1e9);
                }
            }
            CgroupVersion::V2 => {
                s.cpus_throttled_time_secs = stat("throttled_usec").map(|us| us as f64 / 1e6);
                s.cpus_total_time_secs = stat("usage_usec").map(|us| us as f64 / 1e6);
                s.cpus_user_time_secs = stat("user_usec").map(|us| us as f64 / 1e6);
                s.cpus_system_time_secs = stat("system_usec").map(|us| us as f64 / 1e6);
            }
        }
        if let Some(mem) = cg.controller_of::<MemController>() {
            let m = mem.memory_stat();
            s.mem_total_bytes = Some(m.usage_in_bytes);
            s.mem_peak_bytes = (m.max_usage_in_bytes > 0).then_some(m.max_usage_in_bytes);
        }
        Some(s)
    }

    /// Container cgroups under this agent's slot (their directory names).
    pub fn containers(&self) -> Vec<String> {
        let slot = self.load(&self.slot);
        let mut names: Vec<String> = slot
            .subsystems()
            .iter()
            .filter_map(|s| std::fs::read_dir(s.to_controller().path()).ok())
            .flat_map(|entries| entries.flatten())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Destroys the container cgroups of this agent that `keep` does not name (orphans
    /// of a previous run: their processes are killed first). Returns the ids removed.
    pub fn remove_orphans(&self, keep: &[String]) -> Vec<String> {
        let mut removed = Vec::new();
        for name in self.containers() {
            if keep.contains(&name) {
                continue;
            }
            let procs = self.procs(&name).len();
            match self.destroy(&name) {
                Ok(()) => {
                    tracing::info!(container = %name, processes_killed = procs, "removed an orphan cgroup");
                    removed.push(name);
                }
                Err(e) => {
                    tracing::warn!(container = %name, error = %e, "cannot remove an orphan cgroup")
                }
            }
        }
        removed
    }

    /// Removes the agent's slot if no container is left in it (at agent stop).
    pub fn remove_slot_if_empty(&self) {
        if self.containers().is_empty() {
            let _ = self.load(&self.slot).delete();
        }
    }

    /// The directory of a container's cgroup in one v1 controller (or the v2 unified
    /// hierarchy): for tests and tools that read kernel files directly.
    pub fn controller_dir(&self, id: &str, controller: &str) -> Option<PathBuf> {
        let cg = self.load(&self.path_of(id));
        cg.subsystems()
            .iter()
            .map(|s| s.to_controller())
            .find(|c| {
                self.version == CgroupVersion::V2 || c.control_type().to_string() == controller
            })
            .map(|c| c.path().to_path_buf())
    }
}

#[derive(Debug, Clone)]
enum Hier {
    V1(V1),
    V2(V2),
}

impl Hier {
    fn boxed(&self) -> Box<dyn Hierarchy> {
        match self {
            Hier::V1(h) => Box::new(h.clone()),
            Hier::V2(h) => Box::new(h.clone()),
        }
    }
}

impl Drop for Cgroups {
    /// The slot goes with the agent when it has no container left.
    fn drop(&mut self) {
        self.remove_slot_if_empty();
    }
}

/// The root must be a plain relative path, so that no flag can point the agent at
/// cgroups it does not own.
fn validate_root(root: &str) -> Result<(), CgroupsError> {
    let ok = !root.is_empty()
        && root.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        });
    if ok {
        Ok(())
    } else {
        Err(CgroupsError::BadRoot(root.to_string()))
    }
}

/// FNV-1a of the work dir (canonical when it exists): stable across runs and Rust
/// versions, unlike `DefaultHasher`.
fn work_dir_hash(work_dir: &Path) -> u64 {
    let path = std::fs::canonicalize(work_dir).unwrap_or_else(|_| work_dir.to_path_buf());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A "key value" per line file (cpu.stat, memory.events).
fn flat_keyed(path: &Path) -> Vec<(String, u64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let k = it.next()?;
            let v = it.next()?.parse().ok()?;
            Some((k.to_string(), v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_plain_relative_paths() {
        assert!(validate_root("strata").is_ok());
        assert!(validate_root("strata/prod-1").is_ok());
        for bad in ["", "/strata", "..", "a/../b", "a//b", "a b", "strata/"] {
            assert!(validate_root(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn slots_differ_per_work_dir_and_are_stable() {
        let a = work_dir_hash(Path::new("/nonexistent/a"));
        assert_eq!(a, work_dir_hash(Path::new("/nonexistent/a")));
        assert_ne!(a, work_dir_hash(Path::new("/nonexistent/b")));
    }

    #[test]
    fn flat_keyed_files_parse() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("memory.events");
        std::fs::write(&f, "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n").unwrap();
        let v = flat_keyed(&f);
        assert!(v.contains(&("oom_kill".to_string(), 1)));
        assert_eq!(v.len(), 5);
    }
}
