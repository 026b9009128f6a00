//! The run's metrics in Prometheus' terms: each metric's name, help, type
//! and labels, and its samples read from one [`sluice::Stats`] snapshot.

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use sluice::{DeadLetterCounts, LiveStats, StageStats, Stats, Summary};
use std::sync::{Arc, OnceLock};

/// Every metric: its name (after `sluice_`), its help, and where its value
/// comes from in a snapshot.
const METRICS: &[(&str, &str, Value)] = &[
    ("read_total", "Messages read from the source (those it dead-lettered too).", Value::Run(|s| s.read)),
    ("skipped_total", "Blank lines of a jsonl source, skipped: not messages.", Value::Run(|s| s.skipped)),
    ("written_total", "Messages written to the sink.", Value::Run(|s| s.written)),
    (
        "dead_lettered_total",
        "Messages written to the dead letters, from every stage, the source and the sink, by error kind.",
        Value::RunKinds(|s| s.dead_letters),
    ),
    (
        "checkpoint_duration_seconds",
        "Checkpoints committed, and the time each took from falling due to its commit.",
        Value::RunSummary(|s| s.checkpoint_us, MICROS),
    ),
    (
        "source_backlog",
        "Messages the broker holds for this pipeline's consumer, not yet delivered (broker sources only).",
        Value::RunGauge(|s| s.source_backlog),
    ),
    ("stage_input_total", "Messages a stage received.", Value::Stage(|s| s.input)),
    (
        "stage_output_total",
        "Messages a stage sent downstream (one input can give several, or none).",
        Value::Stage(|s| s.output),
    ),
    ("stage_dropped_total", "Inputs of a stage that gave no output (filtered out).", Value::Stage(|s| s.dropped)),
    (
        "stage_dead_lettered_total",
        "Inputs of a stage dead-lettered, by error kind.",
        Value::StageKinds(|s| s.dead_letters),
    ),
    ("stage_trapped_total", "Inputs that trapped a stage's instance.", Value::Stage(|s| s.trapped)),
    ("stage_retried_total", "Retries of transient errors.", Value::Stage(|s| s.retried)),
    ("stage_in_flight", "Messages a stage is processing now.", Value::StageGauge(|s| s.in_flight)),
    ("stage_queued", "Messages waiting behind a busy key (partition_by = \"key\").", Value::StageGauge(|s| s.queued)),
    (
        "stage_waiting",
        "Messages in the channel in front of a stage, not yet taken: its queue depth.",
        Value::StageGauge(|s| s.waiting),
    ),
    (
        "stage_instances_made_total",
        "Instances a stage made during the run (not the one made when the pipeline was built).",
        Value::Stage(|s| s.instances_made),
    ),
    (
        "stage_instances_recycled_total",
        "Instances let go because the stage isolates messages, or worn out (recycle_after).",
        Value::Stage(|s| s.instances_recycled),
    ),
    ("stage_instances_trapped_total", "Instances dropped because they trapped.", Value::Stage(|s| s.instances_trapped)),
    (
        "stage_fuel_used_total",
        "Fuel a stage's instances burned (WebAssembly instructions, roughly); 0 unless a stage has a fuel limit.",
        Value::Stage(|s| s.fuel_used),
    ),
    (
        "stage_latency_seconds",
        "Time per message, retries included, queueing not (quantiles to two significant digits; 1 is the maximum).",
        Value::StageSummary(|s| s.latency_us, MICROS),
    ),
    (
        "stage_batch_size",
        "Messages per job (per guest call); the count is the number of jobs.",
        Value::StageSummary(|s| s.batch_size, 1.0),
    ),
];

/// Microseconds in a second: summaries in µs are exposed in seconds.
const MICROS: f64 = 1e6;

/// Dead letters by kind; a stage's come in the first four only.
const KINDS: [(&str, Count); 6] = [
    ("invalid", |d| d.invalid),
    ("transient", |d| d.transient),
    ("trap", |d| d.trap),
    ("limit", |d| d.limit),
    ("input", |d| d.input),
    ("output", |d| d.output),
];
const STAGE_KINDS: usize = 4;

/// How many dead letters of one kind.
type Count = fn(&DeadLetterCounts) -> u64;

/// Where a metric's value comes from, which sets its type and labels.
#[derive(Clone, Copy)]
enum Value {
    Run(fn(&Stats) -> u64),
    /// A gauge that only some runs have.
    RunGauge(fn(&Stats) -> Option<u64>),
    RunKinds(fn(&Stats) -> DeadLetterCounts),
    /// A distribution, and how many of its unit make one of the metric's.
    RunSummary(fn(&Stats) -> Summary, f64),
    Stage(fn(&StageStats) -> u64),
    StageGauge(fn(&StageStats) -> u64),
    StageKinds(fn(&StageStats) -> DeadLetterCounts),
    StageSummary(fn(&StageStats) -> Summary, f64),
}

impl Value {
    fn labels(self) -> &'static [&'static str] {
        match self {
            Value::Run(_) | Value::RunGauge(_) | Value::RunSummary(..) => &[],
            Value::RunKinds(_) => &["kind"],
            Value::Stage(_) | Value::StageGauge(_) | Value::StageSummary(..) => &["stage"],
            Value::StageKinds(_) => &["stage", "kind"],
        }
    }

    fn kind(self) -> MetricType {
        match self {
            Value::Run(_) | Value::RunKinds(_) | Value::Stage(_) | Value::StageKinds(_) => MetricType::COUNTER,
            Value::StageGauge(_) | Value::RunGauge(_) => MetricType::GAUGE,
            Value::RunSummary(..) | Value::StageSummary(..) => MetricType::SUMMARY,
        }
    }

    /// Its samples in `stats`, each with its label values.
    fn samples(self, stats: &Stats) -> Vec<proto::Metric> {
        let per_stage = |sample: &dyn Fn(&StageStats) -> Vec<proto::Metric>| -> Vec<proto::Metric> {
            stats
                .stages
                .iter()
                .flat_map(|stage| {
                    sample(stage).into_iter().map(|mut m| {
                        let mut labels = vec![label("stage", &stage.name)];
                        labels.extend(m.take_label());
                        m.set_label(labels);
                        m
                    })
                })
                .collect()
        };
        match self {
            Value::Run(read) => vec![counter(read(stats))],
            Value::RunGauge(read) => read(stats).map(gauge).into_iter().collect(),
            Value::RunKinds(read) => by_kind(read(stats), KINDS.len()),
            Value::RunSummary(read, per_unit) => vec![summary(read(stats), per_unit)],
            Value::Stage(read) => per_stage(&|s: &StageStats| vec![counter(read(s))]),
            Value::StageGauge(read) => per_stage(&|s: &StageStats| vec![gauge(read(s))]),
            Value::StageKinds(read) => per_stage(&|s: &StageStats| by_kind(read(s), STAGE_KINDS)),
            Value::StageSummary(read, per_unit) => per_stage(&|s: &StageStats| vec![summary(read(s), per_unit)]),
        }
    }
}

/// The run's metrics, from a snapshot taken at each scrape.
pub(super) struct StatsCollector {
    stats: Arc<OnceLock<LiveStats>>,
    descs: Vec<Desc>,
}

impl StatsCollector {
    pub(super) fn new(stats: Arc<OnceLock<LiveStats>>) -> Self {
        let descs = METRICS
            .iter()
            .map(|(name, help, value)| {
                let labels = value.labels().iter().map(|l| l.to_string()).collect();
                Desc::new(format!("sluice_{name}"), help.to_string(), labels, Default::default())
                    .expect("metric names and labels are valid")
            })
            .collect();
        StatsCollector { stats, descs }
    }
}

impl Collector for StatsCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(stats) = self.stats.get() else { return Vec::new() };
        let snapshot = stats.snapshot();
        METRICS
            .iter()
            .map(|(name, help, value)| {
                let mut family = MetricFamily::default();
                family.set_name(format!("sluice_{name}"));
                family.set_help(help.to_string());
                family.set_field_type(value.kind());
                family.set_metric(value.samples(&snapshot));
                family
            })
            .collect()
    }
}

fn label(name: &str, value: &str) -> proto::LabelPair {
    let mut pair = proto::LabelPair::default();
    pair.set_name(name.to_string());
    pair.set_value(value.to_string());
    pair
}

fn counter(value: u64) -> proto::Metric {
    let mut c = proto::Counter::default();
    c.set_value(value as f64);
    let mut m = proto::Metric::default();
    m.set_counter(c);
    m
}

fn gauge(value: u64) -> proto::Metric {
    let mut g = proto::Gauge::default();
    g.set_value(value as f64);
    let mut m = proto::Metric::default();
    m.set_gauge(g);
    m
}

/// The first `kinds` kinds' counters, labelled `kind`.
fn by_kind(counts: DeadLetterCounts, kinds: usize) -> Vec<proto::Metric> {
    KINDS[..kinds]
        .iter()
        .map(|(kind, read)| {
            let mut m = counter(read(&counts));
            m.set_label(vec![label("kind", kind)]);
            m
        })
        .collect()
}

/// Quantiles are NaN while nothing is recorded, as Prometheus expects (0
/// would read as a measurement).
fn summary(s: Summary, per_unit: f64) -> proto::Metric {
    let quantile = |q: f64, value: u64| {
        let mut quantile = proto::Quantile::default();
        quantile.set_quantile(q);
        quantile.set_value(if s.count == 0 { f64::NAN } else { value as f64 / per_unit });
        quantile
    };
    let mut summary = proto::Summary::default();
    summary.set_sample_count(s.count);
    summary.set_sample_sum(s.sum as f64 / per_unit);
    summary.set_quantile(vec![quantile(0.5, s.p50), quantile(0.99, s.p99), quantile(1.0, s.max)]);
    let mut m = proto::Metric::default();
    m.set_summary(summary);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice::{Format, MemorySink, MemorySource, Message, Pipeline, PipelineConfig, StageConfig, StageError};

    fn message(text: &str) -> Message {
        Message { key: None, value: text.as_bytes().to_vec(), headers: vec![], timestamp: None }
    }

    /// What Prometheus would read from the collector.
    fn scrape(collector: StatsCollector) -> String {
        let registry = prometheus::Registry::new();
        registry.register(Box::new(collector)).unwrap();
        prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap()
    }

    #[tokio::test]
    async fn a_scrape_reads_each_stages_counts_and_says_nan_for_quantiles_of_nothing() {
        let stats = Arc::new(OnceLock::new());
        assert_eq!(scrape(StatsCollector::new(stats.clone())), "", "nothing before the pipeline is built");

        let mut config = PipelineConfig::new();
        config.source_mut().format = Format::Lines;
        config.sink_mut().format = Format::Lines;
        config.push_stage(StageConfig::native("odd", |m: &Message| match m.value.as_slice() {
            b"bad" => Err(StageError::Invalid("bad".into())),
            v if v.last().is_some_and(|b| b % 2 == 0) => Ok(vec![]),
            _ => Ok(vec![m.clone()]),
        }));
        let pipeline = Pipeline::build(config).await.unwrap();
        let _ = stats.set(pipeline.stats());
        // 1..=9 and one bad: 5 odd pass, 4 even are dropped.
        let inputs = (1..=9).map(|i| i.to_string()).chain(["bad".to_string()]);
        let source = MemorySource::from_iter(inputs.map(|t| message(&t)).collect::<Vec<_>>());
        let (sink, mut outputs) = MemorySink::channel(16);
        let (dead, mut dead_letters) = MemorySink::channel(16);
        let run = tokio::spawn(pipeline.with_source(source).with_sink(sink).with_dead_letters(dead).run());
        let drain = tokio::spawn(async move { while dead_letters.recv().await.is_some() {} });
        while outputs.recv().await.is_some() {}
        run.await.unwrap().unwrap();
        drain.await.unwrap();

        let text = scrape(StatsCollector::new(stats));
        for line in [
            "# TYPE sluice_read_total counter",
            "sluice_read_total 10",
            "sluice_written_total 5",
            "sluice_dead_lettered_total{kind=\"invalid\"} 1",
            "sluice_dead_lettered_total{kind=\"output\"} 0",
            "sluice_stage_input_total{stage=\"odd\"} 10",
            "sluice_stage_output_total{stage=\"odd\"} 5",
            "sluice_stage_dropped_total{stage=\"odd\"} 4",
            "sluice_stage_dead_lettered_total{stage=\"odd\",kind=\"invalid\"} 1",
            "# TYPE sluice_stage_in_flight gauge",
            "sluice_stage_in_flight{stage=\"odd\"} 0",
            "# TYPE sluice_checkpoint_duration_seconds summary",
            "sluice_checkpoint_duration_seconds{quantile=\"0.99\"} NaN",
            "sluice_checkpoint_duration_seconds_count 0",
            "sluice_stage_latency_seconds_count{stage=\"odd\"} 10",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        // A stage's dead letters come in its four kinds only.
        assert!(!text.contains("stage=\"odd\",kind=\"input\""), "{text}");
    }
}
