//! The durable consumer a source reads: created with the pipeline file's
//! settings, or, if it exists, held to them. Its subject filter decides
//! which messages a worker reads (how keyed state is partitioned), so an
//! existing consumer that filters otherwise is refused, not used.

use crate::config;
use async_nats::jetstream::consumer::{self, AckPolicy, FromConsumer as _, PullConsumer, pull};
use async_nats::jetstream::stream::Stream;
use std::io;

/// A setting that differs between the pipeline file and the server.
#[derive(Debug, PartialEq)]
struct Difference {
    setting: &'static str,
    file: String,
    server: String,
}

/// How the existing consumer differs from `wanted`: the settings JetStream
/// cannot change on a consumer (or sluice will not: which messages it reads,
/// how they are acknowledged), and those it updates.
fn differences(existing: &consumer::Config, wanted: &pull::Config) -> (Vec<Difference>, Vec<Difference>) {
    let filter =
        |subject: &str| if subject.is_empty() { "(every subject of the stream)".to_string() } else { subject.into() };
    let mut fixed = Vec::new();
    if existing.filter_subject != wanted.filter_subject {
        fixed.push(Difference {
            setting: "subject",
            file: filter(&wanted.filter_subject),
            server: filter(&existing.filter_subject),
        });
    }
    if existing.ack_policy != AckPolicy::Explicit {
        fixed.push(Difference {
            setting: "ack policy",
            file: "explicit".into(),
            server: format!("{:?}", existing.ack_policy).to_lowercase(),
        });
    }
    let mut updated = Vec::new();
    if existing.ack_wait != wanted.ack_wait {
        updated.push(Difference {
            setting: "ack_wait",
            file: humantime::format_duration(wanted.ack_wait).to_string(),
            server: humantime::format_duration(existing.ack_wait).to_string(),
        });
    }
    if existing.max_ack_pending != wanted.max_ack_pending {
        updated.push(Difference {
            setting: "max_ack_pending",
            file: wanted.max_ack_pending.to_string(),
            server: existing.max_ack_pending.to_string(),
        });
    }
    (fixed, updated)
}

fn list(differences: &[Difference]) -> String {
    let each =
        differences.iter().map(|d| format!("{} is {} in the file, {} on the server", d.setting, d.file, d.server));
    each.collect::<Vec<_>>().join("; ")
}

/// Creates the consumer as `wanted` if it is missing. One that exists with
/// another `ack_wait` or `max_ack_pending` is updated to the file's (with a
/// warning: every worker of the consumer now runs with them); one with
/// another subject filter or ack policy is an error that says what to do.
pub(super) async fn open(
    stream: &Stream,
    config: &config::NatsSource,
    wanted: pull::Config,
) -> io::Result<PullConsumer> {
    let name = &config.consumer;
    let cannot = |e: &dyn std::fmt::Display| {
        io::Error::other(format!("cannot open consumer {name} on stream {}: {e}", config.stream))
    };
    let mut consumer: PullConsumer =
        stream.get_or_create_consumer(name, wanted.clone()).await.map_err(|e| cannot(&e))?;
    let existing = consumer.cached_info().config.clone();
    let (fixed, updated) = differences(&existing, &wanted);
    if !fixed.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "consumer {name} of stream {} at {} exists with other settings than [source.nats]: {}. A worker \
                 would read other messages than its pipeline file says. Give this pipeline another `consumer` name \
                 (a new consumer reads the stream from its start), or delete consumer {name} if no worker uses \
                 it (`nats consumer rm {} {name}`)",
                config.stream,
                config.url,
                list(&fixed),
                config.stream
            ),
        ));
    }
    if !updated.is_empty() {
        // The rest of the existing consumer's settings stay as they are.
        let mut update = pull::Config::try_from_consumer_config(existing).map_err(|e| cannot(&e))?;
        update.ack_wait = wanted.ack_wait;
        update.max_ack_pending = wanted.max_ack_pending;
        stream.create_consumer(update).await.map_err(|e| {
            io::Error::other(format!(
                "consumer {name} of stream {} exists with other settings than [source.nats] ({}), and the server \
                 did not take the file's: {e}. Set them in the file as the server has them, or delete consumer \
                 {name} if no worker uses it",
                config.stream,
                list(&updated)
            ))
        })?;
        tracing::warn!(
            "consumer {name} of stream {} updated to the pipeline file's settings ({}): they apply to every worker \
             of the consumer",
            config.stream,
            list(&updated)
        );
        consumer = stream.get_consumer(name).await.map_err(|e| cannot(&e))?;
    }
    // The settings as the server holds them now.
    let _ = consumer.info().await;
    Ok(consumer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn wanted() -> pull::Config {
        pull::Config {
            durable_name: Some("w".into()),
            filter_subject: "in.p0".into(),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(3),
            max_ack_pending: 5,
            ..Default::default()
        }
    }

    fn existing(filter: &str, ack_wait: u64, max_ack_pending: i64) -> consumer::Config {
        consumer::Config {
            durable_name: Some("w".into()),
            filter_subject: filter.into(),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(ack_wait),
            max_ack_pending,
            ..Default::default()
        }
    }

    #[test]
    fn the_same_settings_differ_in_nothing() {
        assert_eq!(differences(&existing("in.p0", 3, 5), &wanted()), (vec![], vec![]));
    }

    #[test]
    fn another_filter_cannot_be_used_and_the_limits_are_updated() {
        let (fixed, updated) = differences(&existing("", 10, 1000), &wanted());
        assert_eq!(list(&fixed), "subject is in.p0 in the file, (every subject of the stream) on the server");
        assert_eq!(
            list(&updated),
            "ack_wait is 3s in the file, 10s on the server; max_ack_pending is 5 in the file, 1000 on the server"
        );
    }
}
