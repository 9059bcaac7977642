//! Time from a rule change to its new version serving, on a gateway running
//! against Mosquitto: a `.wasm` file replaced on disk (the watcher's 250 ms
//! quiet period included) and an upload through the rule set (what the admin
//! API calls), each for a module never seen (Cranelift compiles it) and for one
//! already in the artifact cache (precompiled). Run with
//! `cargo bench -p rulegate --bench reload`.

#[path = "../../tests/harness/mod.rs"]
mod harness;

use criterion::{Criterion, criterion_group, criterion_main};
use harness::mosquitto::Mosquitto;
use harness::{replace_file, versioned_module};
use rulegate::config::GatewayConfig;
use rulegate::gateway::Gateway;
use std::fs;
use std::time::{Duration, Instant};

/// Waits until the rule runs the module with these bytes.
async fn serving(gateway: &Gateway, bytes: &[u8]) {
    let expected = blake3::hash(bytes).to_hex().to_string();
    while gateway.stats().reports()[0].version.module_hash.as_deref() != Some(expected.as_str()) {
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

fn reload(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let mosquitto = Mosquitto::start();
    let dir = tempfile::tempdir().expect("a directory for the gateway");
    let module = dir.path().join("versioned.wasm");
    fs::write(&module, versioned_module(0)).expect("writing the module");
    let config = dir.path().join("gateway.toml");
    let text = format!(
        "[gateway]\nstate_dir = \"state\"\ncache_dir = \"cache\"\nstats_interval_secs = 0\n\
         [broker]\nurl = \"{}\"\n[sinks.out]\ntype = \"mqtt\"\n\
         [[rules]]\nname = \"versioned\"\nsql = \"SELECT * FROM 'versioned/in'\"\nmodule = \"versioned.wasm\"\n\
         [[rules.actions]]\nsink = \"out\"\ntopic = \"versioned/out\"\n",
        mosquitto.url()
    );
    fs::write(&config, text).expect("writing the configuration");
    let config = GatewayConfig::load(&config).expect("loading the configuration");
    let gateway = runtime
        .block_on(Gateway::start(config, None))
        .expect("starting the gateway");

    let mut group = c.benchmark_group("reload");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    // Labels from here on are new to the artifact cache; 1 and 2 get cached now.
    let mut fresh = 10;
    let cached = [versioned_module(1), versioned_module(2)];
    for bytes in &cached {
        replace_file(&module, bytes);
        runtime.block_on(serving(&gateway, bytes));
    }
    let mut turn = 0;

    group.bench_function("file_change/fresh_module", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                fresh += 1;
                let bytes = versioned_module(fresh);
                let started = Instant::now();
                replace_file(&module, &bytes);
                runtime.block_on(serving(&gateway, &bytes));
                total += started.elapsed();
            }
            total
        })
    });
    group.bench_function("file_change/precompiled_module", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                turn += 1;
                let bytes = &cached[turn % 2];
                let started = Instant::now();
                replace_file(&module, bytes);
                runtime.block_on(serving(&gateway, bytes));
                total += started.elapsed();
            }
            total
        })
    });
    // Uploads go through the rule set directly: no HTTP, no quiet period.
    let rules = gateway.rules().clone();
    let upload = |bytes: Vec<u8>| {
        let started = Instant::now();
        runtime
            .block_on(rules.upload("versioned", bytes.into()))
            .expect("the upload is applied");
        started.elapsed()
    };
    group.bench_function("upload/fresh_module", |b| {
        b.iter_custom(|iterations| {
            (0..iterations)
                .map(|_| {
                    fresh += 1;
                    upload(versioned_module(fresh))
                })
                .sum()
        })
    });
    group.bench_function("upload/precompiled_module", |b| {
        b.iter_custom(|iterations| {
            (0..iterations)
                .map(|_| {
                    turn += 1;
                    upload(cached[turn % 2].clone())
                })
                .sum()
        })
    });
    group.finish();
    runtime
        .block_on(gateway.shutdown())
        .expect("stopping the gateway");
}

criterion_group!(benches, reload);
criterion_main!(benches);
