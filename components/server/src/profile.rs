//! CPU profiles of the whole process for `GET /debug/pprof/profile?seconds=N`: pprof samples
//! every thread's stack at [`PROFILE_FREQUENCY_HZ`] for N seconds and the answer is the
//! flamegraph as SVG.
//!
//! pprof's profiler is one per process (a `SIGPROF` timer), and several stores can share a
//! process in tests, so a process-wide flag lets one profile run at a time; another request
//! is answered `409 Conflict` at once instead of waiting. The sampling wait and the symbol
//! resolution run on a blocking thread, never on the runtime's workers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// Duration of a profile when the request names none.
pub const PROFILE_SECONDS_DEFAULT: u64 = 10;
/// Longest profile a request may ask for.
pub const PROFILE_SECONDS_MAX: u64 = 120;
/// Samples per second; not a divisor of common timer rates, so periodic work is not aliased.
pub const PROFILE_FREQUENCY_HZ: i32 = 99;

/// Shared objects whose frames pprof must not unwind through from a signal handler (unwinding
/// inside them can deadlock or crash), as TiKV does.
const UNWIND_BLOCKLIST: &[&str] = &["libc", "libgcc", "pthread", "vdso"];

/// Set while a profile runs in this process.
static PROFILE_RUNNING: AtomicBool = AtomicBool::new(false);

/// The right to run the process's one profile; released on drop.
struct ProfileSlot(());

impl ProfileSlot {
    fn try_acquire() -> Option<ProfileSlot> {
        PROFILE_RUNNING
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| ProfileSlot(()))
    }
}

impl Drop for ProfileSlot {
    fn drop(&mut self) {
        PROFILE_RUNNING.store(false, Ordering::Release);
    }
}

/// The profile duration asked for by the `seconds` query parameter, or the text of a 400.
pub(crate) fn parse_seconds(seconds: Option<&str>) -> Result<Duration, String> {
    let Some(text) = seconds else {
        return Ok(Duration::from_secs(PROFILE_SECONDS_DEFAULT));
    };
    match text.parse::<u64>() {
        Ok(n) if (1..=PROFILE_SECONDS_MAX).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(format!(
            "seconds must be an integer in 1..={PROFILE_SECONDS_MAX}, got {text:?}\n"
        )),
    }
}

/// Profiles the process for `duration`, or less if `stop` fires first, and answers with the
/// flamegraph. `stop` resolving (the server is stopping) ends the profile early; so does
/// dropping this future (the client went away).
pub(crate) async fn profile_response(
    duration: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> Response {
    let Some(slot) = ProfileSlot::try_acquire() else {
        return (
            StatusCode::CONFLICT,
            "a CPU profile is already running in this process; retry when it ends\n",
        )
            .into_response();
    };
    // The sampling thread waits on this channel: a send or a drop of `cut_short` ends it.
    let (cut_short, cut) = mpsc::channel::<()>();
    let mut profile = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        flamegraph_svg(duration, &cut)
    });
    let joined = tokio::select! {
        joined = &mut profile => joined,
        () = stop => {
            drop(cut_short);
            profile.await
        }
    };
    match joined {
        Ok(Ok(svg)) => ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response(),
        Ok(Err(msg)) => (StatusCode::INTERNAL_SERVER_ERROR, msg).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("profile thread failed: {e}\n"),
        )
            .into_response(),
    }
}

/// Samples for `duration` (or until `cut` fires) and renders the flamegraph. Blocks.
fn flamegraph_svg(duration: Duration, cut: &mpsc::Receiver<()>) -> Result<Vec<u8>, String> {
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(PROFILE_FREQUENCY_HZ)
        .blocklist(UNWIND_BLOCKLIST)
        .build()
        .map_err(|e| format!("cannot start the CPU profiler: {e}\n"))?;
    // Any outcome ends the wait: the deadline, a stop message, or the sender dropped.
    let _ = cut.recv_timeout(duration);
    let report = guard
        .report()
        .build()
        .map_err(|e| format!("cannot build the CPU profile: {e}\n"))?;
    drop(guard);
    let mut svg = Vec::new();
    if report.data.is_empty() {
        // inferno refuses an empty profile; an idle process still gets a (blank) picture.
        svg.extend_from_slice(EMPTY_FLAMEGRAPH_SVG.as_bytes());
    } else {
        report
            .flamegraph(&mut svg)
            .map_err(|e| format!("cannot render the flamegraph: {e}\n"))?;
    }
    Ok(svg)
}

/// What an interval with no sample looks like.
const EMPTY_FLAMEGRAPH_SVG: &str = concat!(
    r#"<?xml version="1.0" standalone="no"?>"#,
    "\n",
    r#"<svg version="1.1" width="1200" height="60" xmlns="http://www.w3.org/2000/svg">"#,
    r#"<text x="600" y="30" text-anchor="middle">no CPU samples in this interval</text>"#,
    "</svg>\n"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_bounds() {
        assert_eq!(
            parse_seconds(None),
            Ok(Duration::from_secs(PROFILE_SECONDS_DEFAULT))
        );
        assert_eq!(parse_seconds(Some("1")), Ok(Duration::from_secs(1)));
        assert_eq!(
            parse_seconds(Some("120")),
            Ok(Duration::from_secs(PROFILE_SECONDS_MAX))
        );
        for bad in ["0", "121", "-1", "ten", ""] {
            let msg = parse_seconds(Some(bad)).unwrap_err();
            assert!(msg.contains("1..=120"), "{bad}: {msg}");
        }
    }

    #[test]
    fn one_slot_per_process() {
        let slot = ProfileSlot::try_acquire().expect("free");
        assert!(ProfileSlot::try_acquire().is_none());
        drop(slot);
        assert!(ProfileSlot::try_acquire().is_some());
    }
}
