//! Read-timeout helpers of the blocking servers (socket set-up is `coilwork-net`'s).

use std::io::ErrorKind;

/// True for the error a read returns when its read timeout passed
/// (`WouldBlock` on Unix, `TimedOut` on Windows and from serial ports).
pub(crate) fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// A read timeout for the next read: until `deadline` but at most `poll`,
/// and at least 1 ms (a zero read timeout is an error for std sockets).
pub(crate) fn read_timeout(
    now: std::time::Instant,
    deadline: Option<std::time::Instant>,
    poll: std::time::Duration,
) -> std::time::Duration {
    let until = deadline.map_or(poll, |d| d.saturating_duration_since(now).min(poll));
    until.max(std::time::Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn read_timeout_is_bounded_both_ways() {
        let now = Instant::now();
        let poll = Duration::from_millis(100);
        assert_eq!(read_timeout(now, None, poll), poll);
        assert_eq!(
            read_timeout(now, Some(now + Duration::from_millis(30)), poll),
            Duration::from_millis(30)
        );
        assert_eq!(read_timeout(now, Some(now + Duration::from_secs(9)), poll), poll);
        assert_eq!(read_timeout(now, Some(now), poll), Duration::from_millis(1));
    }
}
