//! `flotilla bench-report`: turns the JSON lines that `flotilla bench --json` appends into
//! markdown tables and PNG plots. One [`BenchRecord`] is one measured point (a contender
//! `label`, a workload, a client count). [`load`] reads files and directories of them,
//! [`markdown`] prints one table per workload plus the ratios that answer "how does Flotilla
//! compare", and [`plots`] draws throughput and p99 against clients, one line per label.
//!
//! Plot text is rendered with plotters' pure-Rust `ab_glyph` backend from a TTF font read at
//! run time (`fonts-dejavu-core`), so building needs no system font libraries. This module
//! talks to no cluster; it only reads the records and writes the report.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use clap::Args;
use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

/// The font plot text is drawn with (Debian package `fonts-dejavu-core`).
pub const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Label pairs whose ratios the report prints when both are present: (numerator, denominator).
const RATIO_PAIRS: [(&str, &str); 2] = [
    ("flotilla-many", "etcd"),
    ("flotilla-many", "flotilla-1region"),
];

/// Line colours of the plots, one per label in order (the "tab10" palette: distinct on white).
const LINE_COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Plot size in pixels.
const PLOT_WIDTH_PX: u32 = 960;
const PLOT_HEIGHT_PX: u32 = 600;

/// One measured point of `flotilla bench`: one line of its `--json` output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchRecord {
    /// The contender, e.g. `flotilla-1region`, `flotilla-many`, `etcd`.
    pub label: String,
    /// The kind of system driven (`flotilla`, `etcd`).
    pub target: String,
    /// The workload name, e.g. `raw-put`.
    pub workload: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Bytes per value.
    pub value_size: usize,
    /// Distinct keys written.
    pub keys: u64,
    /// How keys are drawn, e.g. `uniform`.
    pub distribution: String,
    /// Length of the measured window.
    pub elapsed_s: f64,
    /// Operations completed in the window.
    pub ops: u64,
    /// Operations that failed in the window.
    pub errors: u64,
    /// `ops / elapsed_s`.
    pub ops_per_sec: f64,
    /// Latency percentiles of the completed operations.
    pub latency_ms: Latency,
    /// CPU time the server processes spent in the window; `None` when their pids are unknown.
    pub server_cpu_s: Option<f64>,
    /// `server_cpu_s` per thousand operations.
    pub server_cpu_s_per_kop: Option<f64>,
    /// CPU time the load generator (`flotilla bench` itself) spent in the window: near a
    /// core's worth per second, the load generator, not the servers, set the pace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cpu_s: Option<f64>,
}

/// Latency percentiles of one point, in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// Options of `flotilla bench-report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Directory to write `<workload>-throughput.png` and `<workload>-p99.png` into.
    #[arg(long)]
    pub plots: Option<PathBuf>,
    /// JSON-lines files of `flotilla bench --json`, or directories holding `*.jsonl` files.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
}

/// Prints the markdown report to stdout and writes the plots if asked.
pub fn run(args: ReportArgs) -> Result<()> {
    let records = load(&args.inputs)?;
    if records.is_empty() {
        bail!("no benchmark records in the given files");
    }
    print!("{}", markdown(&records));
    if let Some(dir) = args.plots {
        for path in plots(&records, &dir)? {
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}

/// Reads records from files and directories (every `*.jsonl` inside, in name order). Blank
/// lines are skipped; any other line that is not a record is an error naming file and line.
pub fn load(paths: &[PathBuf]) -> Result<Vec<BenchRecord>> {
    let mut records = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut files = Vec::new();
            for entry in
                std::fs::read_dir(path).with_context(|| format!("listing {}", path.display()))?
            {
                let file = entry
                    .with_context(|| format!("listing {}", path.display()))?
                    .path();
                if file.is_file() && file.extension().is_some_and(|e| e == "jsonl") {
                    files.push(file);
                }
            }
            files.sort();
            for file in files {
                load_file(&file, &mut records)?;
            }
        } else {
            load_file(path, &mut records)?;
        }
    }
    Ok(records)
}

fn load_file(path: &Path, records: &mut Vec<BenchRecord>) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a benchmark record", path.display(), i + 1))?;
        records.push(record);
    }
    Ok(())
}

/// The records of one workload, indexed for tables and plots.
struct WorkloadView<'a> {
    name: &'a str,
    /// Labels present in this workload, in the order first seen across all records.
    labels: Vec<&'a str>,
    /// Client counts measured by any label, ascending.
    clients: Vec<usize>,
    /// A later record of the same (label, clients) replaces an earlier one: a re-run appended
    /// to the same file supersedes the old point.
    points: HashMap<(&'a str, usize), &'a BenchRecord>,
}

impl<'a> WorkloadView<'a> {
    fn get(&self, label: &str, clients: usize) -> Option<&'a BenchRecord> {
        self.points.get(&(label, clients)).copied()
    }

    fn has_label(&self, label: &str) -> bool {
        self.labels.contains(&label)
    }
}

/// Groups records by workload, workloads in the order first seen.
fn by_workload(records: &[BenchRecord]) -> Vec<WorkloadView<'_>> {
    let mut label_order: Vec<&str> = Vec::new();
    let mut views: Vec<WorkloadView<'_>> = Vec::new();
    for r in records {
        if !label_order.contains(&r.label.as_str()) {
            label_order.push(&r.label);
        }
        let view = match views.iter_mut().position(|v| v.name == r.workload) {
            Some(i) => &mut views[i],
            None => {
                views.push(WorkloadView {
                    name: &r.workload,
                    labels: Vec::new(),
                    clients: Vec::new(),
                    points: HashMap::new(),
                });
                views.last_mut().expect("just pushed")
            }
        };
        if !view.clients.contains(&r.clients) {
            view.clients.push(r.clients);
        }
        view.points.insert((&r.label, r.clients), r);
    }
    for view in &mut views {
        view.clients.sort_unstable();
        view.labels = label_order
            .iter()
            .copied()
            .filter(|l| view.points.keys().any(|(pl, _)| pl == l))
            .collect();
    }
    views
}

/// The report: per workload, a table of ops/s, p99 and server CPU per label and client count,
/// then the ratios of [`RATIO_PAIRS`] that are present.
pub fn markdown(records: &[BenchRecord]) -> String {
    let mut out = String::new();
    for (i, view) in by_workload(records).iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        write_workload(&mut out, view);
    }
    out
}

fn write_workload(out: &mut String, view: &WorkloadView<'_>) {
    let _ = writeln!(out, "## {}\n", view.name);
    let _ = writeln!(out, "{}\n", setup_line(view));
    let mut header = vec!["clients".to_string()];
    for label in &view.labels {
        header.push(format!("{label} ops/s"));
        header.push(format!("{label} p99 ms"));
        header.push(format!("{label} CPU s/1k ops"));
    }
    let mut rows = Vec::new();
    for &clients in &view.clients {
        let mut row = vec![clients.to_string()];
        for label in &view.labels {
            match view.get(label, clients) {
                Some(r) => {
                    row.push(format!("{:.0}", r.ops_per_sec));
                    row.push(format!("{:.2}", r.latency_ms.p99));
                    row.push(or_dash(r.server_cpu_s_per_kop, |v| format!("{v:.3}")));
                }
                None => row.extend(std::iter::repeat_n("—".to_string(), 3)),
            }
        }
        rows.push(row);
    }
    write_table(out, &header, &rows);
    write_errors(out, view);
    write_ratios(out, view);
}

/// The settings of the workload's points, e.g. "256 B values, 100000 keys, uniform".
fn setup_line(view: &WorkloadView<'_>) -> String {
    let mut setups: Vec<String> = Vec::new();
    let mut records: Vec<&BenchRecord> = view.points.values().copied().collect();
    records.sort_by_key(|r| (r.clients, r.label.as_str()));
    for r in records {
        let s = format!(
            "{} B values, {} keys, {} distribution",
            r.value_size, r.keys, r.distribution
        );
        if !setups.contains(&s) {
            setups.push(s);
        }
    }
    setups.join("; ")
}

/// Lists the points whose operations partly failed: their throughput counts only successes.
fn write_errors(out: &mut String, view: &WorkloadView<'_>) {
    let mut failed = Vec::new();
    for label in &view.labels {
        for &clients in &view.clients {
            if let Some(r) = view.get(label, clients).filter(|r| r.errors > 0) {
                failed.push(format!(
                    "{label} at {clients} clients: {} errors beside {} ops",
                    r.errors, r.ops
                ));
            }
        }
    }
    if !failed.is_empty() {
        let _ = writeln!(out, "\nErrors: {}.", failed.join("; "));
    }
}

fn write_ratios(out: &mut String, view: &WorkloadView<'_>) {
    let pairs: Vec<(&str, &str)> = RATIO_PAIRS
        .iter()
        .copied()
        .filter(|(a, b)| view.has_label(a) && view.has_label(b))
        .collect();
    let mut header = vec!["clients".to_string()];
    for (a, b) in &pairs {
        header.push(format!("{a} / {b} ops/s"));
        header.push(format!("{a} / {b} p99"));
    }
    let mut rows = Vec::new();
    for &clients in &view.clients {
        let mut row = vec![clients.to_string()];
        let mut any = false;
        for (a, b) in &pairs {
            let (ra, rb) = (view.get(a, clients), view.get(b, clients));
            let ops = ra
                .zip(rb)
                .and_then(|(x, y)| ratio(x.ops_per_sec, y.ops_per_sec));
            let p99 = ra
                .zip(rb)
                .and_then(|(x, y)| ratio(x.latency_ms.p99, y.latency_ms.p99));
            any |= ops.is_some() || p99.is_some();
            row.push(or_dash(ops, |v| format!("{v:.2}×")));
            row.push(or_dash(p99, |v| format!("{v:.2}×")));
        }
        if any {
            rows.push(row);
        }
    }
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nRatios A / B: ops/s above 1 means A serves more, p99 below 1 means A's tail is shorter.\n"
    );
    write_table(out, &header, &rows);
}

/// `a / b`, or `None` when `b` is not a positive number.
fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

fn or_dash(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "—".to_string(), f)
}

fn write_table(out: &mut String, header: &[String], rows: &[Vec<String>]) {
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let rule: Vec<&str> = header.iter().map(|_| "---:").collect();
    let _ = writeln!(out, "|{}|", rule.join("|"));
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
}

/// Which figure of a point a plot shows.
#[derive(Clone, Copy)]
enum Metric {
    Throughput,
    P99,
}

impl Metric {
    fn file_suffix(self) -> &'static str {
        match self {
            Metric::Throughput => "throughput",
            Metric::P99 => "p99",
        }
    }

    fn axis_title(self) -> &'static str {
        match self {
            Metric::Throughput => "ops/s",
            Metric::P99 => "p99 latency (ms)",
        }
    }

    fn of(self, r: &BenchRecord) -> f64 {
        match self {
            Metric::Throughput => r.ops_per_sec,
            Metric::P99 => r.latency_ms.p99,
        }
    }
}

/// Writes `<workload>-throughput.png` and `<workload>-p99.png` per workload into `out_dir`
/// (created if missing) and returns their paths.
pub fn plots(records: &[BenchRecord], out_dir: &Path) -> Result<Vec<PathBuf>> {
    register_font()?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut written = Vec::new();
    for view in by_workload(records) {
        for metric in [Metric::Throughput, Metric::P99] {
            let name = format!("{}-{}.png", file_stem(view.name), metric.file_suffix());
            let path = out_dir.join(name);
            draw_plot(&path, &view, metric)
                .with_context(|| format!("drawing {}", path.display()))?;
            written.push(path);
        }
    }
    Ok(written)
}

/// Registers [`FONT_PATH`] as plotters' "sans-serif", once per process.
fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let bytes = std::fs::read(FONT_PATH).map_err(|e| {
                format!(
                    "cannot read the plot font {FONT_PATH} ({e}); \
                     install it with `apt-get install fonts-dejavu-core`"
                )
            })?;
            // plotters keeps fonts for the whole process and wants them 'static.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{FONT_PATH} is not a font plotters can use"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// A workload name made safe as a file name.
fn file_stem(workload: &str) -> String {
    workload
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Per label, its points as (clients, metric).
fn series_of<'a>(view: &WorkloadView<'a>, metric: Metric) -> Vec<(&'a str, Vec<(usize, f64)>)> {
    view.labels
        .iter()
        .map(|&label| {
            let points = view
                .clients
                .iter()
                .filter_map(|&c| view.get(label, c).map(|r| (c, metric.of(r))))
                .collect();
            (label, points)
        })
        .collect()
}

/// The x axis of the plots: the measured client counts as evenly spaced categories, each at
/// the middle of its slot, so 1, 16, 64 and 256 clients get equal room whatever their values.
struct ClientAxis {
    /// Ascending and not empty.
    clients: Vec<usize>,
}

impl Ranged for ClientAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = usize;

    fn map(&self, value: &usize, limit: (i32, i32)) -> i32 {
        let slot = self.clients.iter().position(|c| c == value);
        let slot = slot.unwrap_or_else(|| panic!("{value} clients is not on the axis"));
        let width_px = f64::from(limit.1 - limit.0);
        let x = (slot as f64 + 0.5) / self.clients.len() as f64;
        limit.0 + (width_px * x).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<usize> {
        self.clients.clone()
    }

    fn range(&self) -> std::ops::Range<usize> {
        self.clients[0]..self.clients[self.clients.len() - 1]
    }
}

impl ValueFormatter<usize> for ClientAxis {
    fn format_ext(&self, value: &usize) -> String {
        value.to_string()
    }
}

/// A y-axis label: whole numbers without plotters' trailing ".0" (ops/s reads "30000").
fn y_label(value: &f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        RangedCoordf64::format(value)
    }
}

/// One chart: x is the client counts ([`ClientAxis`]), y the metric from 0, one line with
/// points per label.
fn draw_plot(path: &Path, view: &WorkloadView<'_>, metric: Metric) -> Result<()> {
    let series = series_of(view, metric);
    let y_max = series
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|&(_, y)| y))
        .filter(|y| y.is_finite())
        .fold(0.0_f64, f64::max);
    // Headroom above the highest point leaves space for the legend.
    let y_max = if y_max > 0.0 { y_max * 1.25 } else { 1.0 };
    let x_axis = ClientAxis {
        clients: view.clients.clone(),
    };

    let root = BitMapBackend::new(path, (PLOT_WIDTH_PX, PLOT_HEIGHT_PX)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!("{}: {} by clients", view.name, metric.axis_title());
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 26))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(x_axis, 0.0..y_max)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("clients")
        .y_desc(metric.axis_title())
        .y_label_formatter(&y_label)
        .axis_desc_style(("sans-serif", 18))
        .label_style(("sans-serif", 15))
        .draw()?;
    for (i, (label, points)) in series.into_iter().enumerate() {
        let color = LINE_COLORS[i % LINE_COLORS.len()];
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 4, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"label":"flotilla-many","target":"flotilla","workload":"raw-put","clients":64,"value_size":256,"keys":100000,"distribution":"uniform","elapsed_s":20.01,"ops":123456,"errors":0,"ops_per_sec":6170.2,"latency_ms":{"p50":8.1,"p95":15.2,"p99":22.3,"p999":40.1,"max":80.0},"server_cpu_s":31.2,"server_cpu_s_per_kop":0.25}"#;

    fn record(
        label: &str,
        workload: &str,
        clients: usize,
        ops_per_sec: f64,
        p99: f64,
    ) -> BenchRecord {
        BenchRecord {
            label: label.to_string(),
            target: label.split('-').next().unwrap().to_string(),
            workload: workload.to_string(),
            clients,
            value_size: 256,
            keys: 100_000,
            distribution: "uniform".to_string(),
            elapsed_s: 20.0,
            ops: (ops_per_sec * 20.0) as u64,
            errors: 0,
            ops_per_sec,
            latency_ms: Latency {
                p50: p99 / 4.0,
                p95: p99 / 2.0,
                p99,
                p999: p99 * 2.0,
                max: p99 * 4.0,
            },
            server_cpu_s: Some(10.0),
            server_cpu_s_per_kop: Some(0.125),
            client_cpu_s: None,
        }
    }

    fn jsonl<'a>(records: impl IntoIterator<Item = &'a BenchRecord>) -> String {
        records
            .into_iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect()
    }

    #[test]
    fn sample_line_parses_and_round_trips() {
        let r: BenchRecord = serde_json::from_str(SAMPLE).unwrap();
        assert_eq!(r.label, "flotilla-many");
        assert_eq!(r.clients, 64);
        assert_eq!(r.latency_ms.p999, 40.1);
        assert_eq!(r.server_cpu_s_per_kop, Some(0.25));
        assert_eq!(serde_json::to_string(&r).unwrap(), SAMPLE);

        let unknown_pids = SAMPLE
            .replace("\"server_cpu_s\":31.2", "\"server_cpu_s\":null")
            .replace(
                "\"server_cpu_s_per_kop\":0.25",
                "\"server_cpu_s_per_kop\":null",
            );
        let r: BenchRecord = serde_json::from_str(&unknown_pids).unwrap();
        assert_eq!((r.server_cpu_s, r.server_cpu_s_per_kop), (None, None));
    }

    #[test]
    fn load_reads_files_and_jsonl_in_directories() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("runs");
        std::fs::create_dir(&sub).unwrap();
        let a = record("etcd", "raw-put", 1, 100.0, 1.0);
        let b = record("etcd", "raw-put", 16, 900.0, 2.0);
        let c = record("flotilla-many", "raw-put", 1, 150.0, 1.5);
        std::fs::write(sub.join("b.jsonl"), jsonl([&b])).unwrap();
        std::fs::write(sub.join("a.jsonl"), jsonl([&a]) + "\n  \n").unwrap();
        std::fs::write(sub.join("notes.txt"), "not json").unwrap();
        let single = dir.path().join("single.json");
        std::fs::write(&single, jsonl([&c])).unwrap();

        let got = load(&[single, sub]).unwrap();
        assert_eq!(got, vec![c, a, b]);
    }

    #[test]
    fn load_names_file_and_line_of_a_bad_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.jsonl");
        let good = jsonl(&[record("etcd", "raw-put", 1, 100.0, 1.0)]);
        std::fs::write(&path, format!("{good}{{\"label\":\"etcd\"}}\n")).unwrap();

        let err = load(&[path]).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("bad.jsonl:2:"), "{msg}");
        assert!(msg.contains("missing field"), "{msg}");
    }

    #[test]
    fn markdown_tables_and_ratios() {
        let mut etcd_16 = record("etcd", "raw-put", 16, 1000.0, 8.0);
        etcd_16.server_cpu_s = None;
        etcd_16.server_cpu_s_per_kop = None;
        let records = vec![
            // Client counts arrive out of order; rows come out ascending.
            record("flotilla-many", "raw-put", 16, 3000.0, 4.0),
            etcd_16,
            record("flotilla-many", "raw-put", 1, 200.0, 1.0),
            record("etcd", "raw-put", 1, 250.0, 0.8),
            record("etcd", "raw-put", 64, 1200.0, 30.0),
            record("etcd", "txn", 1, 50.0, 3.0),
        ];
        let md = markdown(&records);
        let expected_raw_put = "\
## raw-put

256 B values, 100000 keys, uniform distribution

| clients | flotilla-many ops/s | flotilla-many p99 ms | flotilla-many CPU s/1k ops | etcd ops/s | etcd p99 ms | etcd CPU s/1k ops |
|---:|---:|---:|---:|---:|---:|---:|
| 1 | 200 | 1.00 | 0.125 | 250 | 0.80 | 0.125 |
| 16 | 3000 | 4.00 | 0.125 | 1000 | 8.00 | — |
| 64 | — | — | — | 1200 | 30.00 | 0.125 |

Ratios A / B: ops/s above 1 means A serves more, p99 below 1 means A's tail is shorter.

| clients | flotilla-many / etcd ops/s | flotilla-many / etcd p99 |
|---:|---:|---:|
| 1 | 0.80× | 1.25× |
| 16 | 3.00× | 0.50× |
";
        assert!(md.starts_with(expected_raw_put), "{md}");
        let txn = &md[expected_raw_put.len()..];
        assert!(txn.starts_with("\n## txn\n"), "{md}");
        assert!(txn.contains("| clients | etcd ops/s | etcd p99 ms | etcd CPU s/1k ops |"));
        assert!(!txn.contains("Ratios"), "one label, no ratios: {md}");
    }

    #[test]
    fn markdown_ratio_against_one_region_and_errors() {
        let mut many = record("flotilla-many", "txn", 64, 4000.0, 10.0);
        many.errors = 3;
        let records = vec![
            record("flotilla-1region", "txn", 64, 1000.0, 40.0),
            many,
            record("etcd", "txn", 64, 2000.0, 20.0),
        ];
        let md = markdown(&records);
        assert!(md.contains(
            "| clients | flotilla-many / etcd ops/s | flotilla-many / etcd p99 \
             | flotilla-many / flotilla-1region ops/s | flotilla-many / flotilla-1region p99 |"
        ));
        assert!(
            md.contains("| 64 | 2.00× | 0.50× | 4.00× | 0.25× |"),
            "{md}"
        );
        assert!(md.contains("Errors: flotilla-many at 64 clients: 3 errors beside 80000 ops."));
        // Labels keep the order first seen.
        assert!(md.contains("| clients | flotilla-1region ops/s |"), "{md}");
    }

    #[test]
    fn plots_write_png_files() {
        if !Path::new(FONT_PATH).exists() {
            eprintln!("skipping: {FONT_PATH} is missing (apt-get install fonts-dejavu-core)");
            return;
        }
        let mut records = Vec::new();
        for (i, clients) in [1, 16, 64, 256].into_iter().enumerate() {
            let f = (i + 1) as f64;
            records.push(record(
                "flotilla-1region",
                "raw-put",
                clients,
                500.0 * f,
                2.0 * f,
            ));
            records.push(record(
                "flotilla-many",
                "raw-put",
                clients,
                900.0 * f,
                1.5 * f,
            ));
            records.push(record("etcd", "raw-put", clients, 700.0 * f, 1.8 * f));
        }
        records.push(record("etcd", "txn/odd name", 16, 10.0, 1.0));
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("plots");

        let written = plots(&records, &out).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "raw-put-throughput.png",
                "raw-put-p99.png",
                "txn_odd_name-throughput.png",
                "txn_odd_name-p99.png"
            ]
        );
        for path in &written {
            let bytes = std::fs::read(path).unwrap();
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
            assert_eq!(&bytes[12..16], b"IHDR");
            let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
            let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
            assert_eq!((width, height), (PLOT_WIDTH_PX, PLOT_HEIGHT_PX));
            assert!(
                bytes.len() > 8 * 1024,
                "{}: {} bytes",
                path.display(),
                bytes.len()
            );
        }
    }
}
