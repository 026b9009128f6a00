//! End-to-end tests: real components, built from source by `build.rs`,
//! through the real host. One binary, so the build is paid once.

mod author_loop;
mod batching;
mod brokers;
mod config_errors;
mod connectors;
mod dead_letter_size;
mod engine;
mod exit_codes;
mod hostile;
mod http;
mod http_limits;
mod input;
mod languages;
mod latency;
mod load_errors;
mod logs;
mod metrics;
mod nats;
mod new_stage;
mod progress;
mod quickstart;
mod redis;
mod reload;
mod resume;
mod sandbox;
mod server;
mod stages;
mod state;
mod state_quotas;
mod status_page;
mod support;
mod tap;
mod top;
