//! PD's prometheus metrics, in their own registry, rendered as text on `/metrics`.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// The metrics PD exports.
pub struct Metrics {
    registry: Registry,
    /// Regions in the directory.
    pub regions: IntGauge,
    /// Stores known (any state).
    pub stores: IntGauge,
    /// Stores up.
    pub stores_up: IntGauge,
    /// Timestamps handed out.
    pub tso_timestamps: IntCounter,
    /// TSO requests served.
    pub tso_requests: IntCounter,
    /// Operators running.
    pub operators: IntGauge,
    /// Region heartbeats received.
    pub region_heartbeats: IntCounter,
    /// Time PD spent handling one region heartbeat (judging, installing, persisting if it
    /// changed, planning the answer); its count is the heartbeats handled.
    pub region_heartbeat_seconds: Histogram,
    /// Heartbeat answers sent, by kind.
    pub operator_steps: IntCounterVec,
    /// Client lookups a member that does not lead answered from its replica view.
    pub view_lookups: IntCounter,
    /// Client TSO streams a member that does not lead relayed to the leader.
    pub tso_forwarded_streams: IntCounter,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let steps = IntCounterVec::new(
            Opts::new("pd_operator_steps_total", "Operator steps sent"),
            &["kind"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(steps.clone()))
            .expect("unique metric");
        // 1-2-5 steps from 2 µs to 5 s: an unchanged heartbeat takes microseconds, a persisted
        // one a write (in a PD group, a raft round trip).
        let buckets: Vec<f64> = (-6..=0)
            .flat_map(|e| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(e)))
            .filter(|b| (2e-6..=5.0).contains(b))
            .collect();
        let hb_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "pd_region_heartbeat_seconds",
                "Time spent handling one region heartbeat",
            )
            .buckets(buckets),
        )
        .expect("valid metric");
        registry
            .register(Box::new(hb_seconds.clone()))
            .expect("unique metric");
        Metrics {
            region_heartbeat_seconds: hb_seconds,
            regions: gauge("pd_regions", "Regions in the directory"),
            stores: gauge("pd_stores", "Stores known"),
            stores_up: gauge("pd_stores_up", "Stores up"),
            tso_timestamps: counter("pd_tso_timestamps_total", "Timestamps handed out"),
            tso_requests: counter("pd_tso_requests_total", "TSO requests served"),
            operators: gauge("pd_operators", "Operators running"),
            region_heartbeats: counter("pd_region_heartbeats_total", "Region heartbeats received"),
            operator_steps: steps,
            view_lookups: counter(
                "pd_view_lookups_total",
                "Client lookups answered by a member that does not lead",
            ),
            tso_forwarded_streams: counter(
                "pd_tso_forwarded_streams_total",
                "Client TSO streams relayed to the leader",
            ),
            registry,
        }
    }

    /// The prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
