//! Raising the open-files limit (`RLIMIT_NOFILE`) for runs that hold many sockets.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Raises the soft (and if need be the hard) `RLIMIT_NOFILE` to at least `want`, as
/// far as allowed (raising the hard limit needs `CAP_SYS_RESOURCE`); returns the soft
/// limit in force, or 0 when it cannot be read.
pub fn raise_nofile_limit(want: u64) -> u64 {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    if soft >= want {
        return soft;
    }
    if setrlimit(Resource::RLIMIT_NOFILE, want, hard.max(want)).is_ok() {
        return want;
    }
    // Not allowed above the hard limit: take what the hard limit gives.
    if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_already_high_enough_is_left_as_it_is() {
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(raise_nofile_limit(1), soft);
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (soft, hard));
    }
}
