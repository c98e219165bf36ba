//! raft-rs logs through `slog`; this drain forwards its records into `tracing`, so a store has
//! one logging stack. Its target is `raft_rs`: a filter directive matches targets by prefix,
//! and `raft=warn` would silence `raftstore` as well.

use slog::{Drain, Level, OwnedKVList, Record, KV};

struct TracingDrain;

struct FieldsToString(String);

impl slog::Serializer for FieldsToString {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments) -> slog::Result {
        use std::fmt::Write;
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        // raft-rs logs every message at debug level with its fields formatted lazily; checking
        // the level first keeps that formatting (protobuf text of whole entries) off the hot
        // path when nobody reads it.
        if !self.is_enabled(record.level()) {
            return Ok(());
        }
        let mut fields = FieldsToString(String::new());
        let _ = record.kv().serialize(record, &mut fields);
        let _ = values.serialize(record, &mut fields);
        let msg = record.msg();
        match record.level() {
            Level::Critical | Level::Error => {
                tracing::error!(target: "raft_rs", "{msg}{}", fields.0)
            }
            Level::Warning => tracing::warn!(target: "raft_rs", "{msg}{}", fields.0),
            Level::Info => tracing::info!(target: "raft_rs", "{msg}{}", fields.0),
            Level::Debug => tracing::debug!(target: "raft_rs", "{msg}{}", fields.0),
            Level::Trace => tracing::trace!(target: "raft_rs", "{msg}{}", fields.0),
        }
        Ok(())
    }

    fn is_enabled(&self, level: Level) -> bool {
        match level {
            Level::Critical | Level::Error => {
                tracing::enabled!(target: "raft_rs", tracing::Level::ERROR)
            }
            Level::Warning => tracing::enabled!(target: "raft_rs", tracing::Level::WARN),
            Level::Info => tracing::enabled!(target: "raft_rs", tracing::Level::INFO),
            Level::Debug => tracing::enabled!(target: "raft_rs", tracing::Level::DEBUG),
            Level::Trace => tracing::enabled!(target: "raft_rs", tracing::Level::TRACE),
        }
    }
}

/// A slog logger for raft-rs whose records land in `tracing`, tagged with the region.
pub fn raft_logger(region_id: u64, peer_id: u64) -> slog::Logger {
    slog::Logger::root(
        TracingDrain.fuse(),
        slog::o!("region_id" => region_id, "peer_id" => peer_id),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tracing_subscriber::EnvFilter;

    /// Counts how often it is formatted.
    struct Counted<'a>(&'a AtomicUsize);

    impl std::fmt::Debug for Counted<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            self.0.fetch_add(1, Ordering::SeqCst);
            f.write_str("counted")
        }
    }

    #[test]
    fn records_below_the_raft_level_are_never_formatted() {
        let formatted = AtomicUsize::new(0);
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("raft=warn"))
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let logger = super::raft_logger(1, 1);
            slog::debug!(logger, "sent"; "msg" => ?Counted(&formatted));
            assert_eq!(
                formatted.load(Ordering::SeqCst),
                0,
                "a filtered record was formatted"
            );
            slog::warn!(logger, "lost"; "msg" => ?Counted(&formatted));
            assert_eq!(
                formatted.load(Ordering::SeqCst),
                1,
                "a kept record must be formatted"
            );
        });
    }
}
