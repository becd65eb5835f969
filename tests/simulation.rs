//! Deterministic simulation of 3- and 5-member ensembles (see `sim/mod.rs`).
//!
//! `cargo test --release --test simulation` runs the CI seed set. Environment:
//! * `RK_SIM_SEED=N`   run only seed N (replay a failure); `RK_SIM_TRACE=1` prints every step;
//! * `RK_SIM_SEEDS=K`  how many seeds (default 1000; even seeds run 3 members, odd seeds 5);
//! * `RK_SIM_FIRST_SEED=S` start there (nightly runs pick fresh ranges);
//! * `RK_SIM_THREADS=T` worker threads (default: available cores);
//! * `RK_SIM_PROFILE=lagging` long outages under a long workload, caught up by snapshot
//!   transfer (see `sim::Profile`);
//!
//! Without any of `RK_SIM_SEED`, `RK_SIM_SEEDS`, `RK_SIM_PROFILE` (the CI run) it runs 1000
//! seeds of the default profile and `CI_LAGGING_SEEDS` of the lagging one.
//!
//! Every failure prints its seed and the last events before it.

mod sim;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}"))
    })
}

/// Seeds of the lagging profile the CI run adds to the default ones (each runs a minute or
/// more of virtual time with thousands of entries and snapshot transfers).
const CI_LAGGING_SEEDS: u64 = 48;

/// The seeds to run: the environment's choice, else `default_count` from 0.
fn seeds(default_count: u64) -> Vec<u64> {
    if let Some(seed) = env_u64("RK_SIM_SEED") {
        return vec![seed];
    }
    let first = env_u64("RK_SIM_FIRST_SEED").unwrap_or(0);
    let count = env_u64("RK_SIM_SEEDS").unwrap_or(default_count);
    (first..first + count).collect()
}

#[test]
fn simulated_ensembles() {
    let chosen = std::env::var_os("RK_SIM_PROFILE").is_some()
        || std::env::var_os("RK_SIM_SEED").is_some()
        || std::env::var_os("RK_SIM_SEEDS").is_some();
    let mut runs = vec![(sim::Profile::from_env(), seeds(1000))];
    if !chosen {
        // The CI run: the default profile, and a few seeds of the lagging one.
        runs.push((sim::Profile::Lagging, seeds(CI_LAGGING_SEEDS)));
    }
    let mut failures = Vec::new();
    for (profile, seeds) in runs {
        failures.extend(run_profile(profile, &seeds));
    }
    if let Some(first) = failures.first() {
        let seeds: Vec<String> = failures.iter().map(|f| f.seed.to_string()).collect();
        panic!(
            "{} seeds failed: {}\n\n{first}",
            failures.len(),
            seeds.join(" ")
        );
    }
}

/// Runs `seeds` of `profile` on worker threads; prints a summary and every failure.
fn run_profile(profile: sim::Profile, seeds: &[u64]) -> Vec<sim::Failure> {
    let threads = env_u64("RK_SIM_THREADS")
        .map(|t| t as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .clamp(1, seeds.len().max(1));
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&seed) = seeds.get(i) else { break };
                let r = sim::run_seed(seed, profile);
                results.lock().unwrap().push((seed, r));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(seed, _)| *seed);
    let mut failures = Vec::new();
    let mut total = sim::Summary::default();
    for (seed, r) in results {
        match r {
            Ok(s) => {
                if seeds.len() == 1 {
                    eprintln!("seed {seed}: {s:?}");
                }
                total.entries += s.entries;
                total.acks += s.acks;
                total.commands += s.commands;
                total.repeats += s.repeats;
                total.leader_changes += s.leader_changes;
                total.minority_proposals += s.minority_proposals;
                total.crashes += s.crashes;
                total.power_losses += s.power_losses;
                total.torn += s.torn;
                total.overwritten += s.overwritten;
                total.partitions += s.partitions;
                total.snapshots_sent += s.snapshots_sent;
                total.snapshots_installed += s.snapshots_installed;
                total.wipes += s.wipes;
                total.reconfigs += s.reconfigs;
                total.reads += s.reads;
                total.virtual_ms += s.virtual_ms;
                total.events += s.events;
            }
            Err(f) => failures.push(f),
        }
    }
    eprintln!(
        "simulation ({profile:?}): {} seeds in {:.1}s ({} failed): {} entries, {} requests, \
         {} acks, {} repeats answered from the idempotency record, {} reads after a sync, {} \
         new leaders, {} crashes ({} power losses, {} torn writes, {} wiped disks), {} log \
         entries overwritten, {} partitions ({} proposals in a minority), {} snapshots \
         streamed ({} installed), {} configuration changes, {:.0}s of virtual time, {} events",
        seeds.len(),
        started.elapsed().as_secs_f64(),
        failures.len(),
        total.entries,
        total.commands,
        total.acks,
        total.repeats,
        total.reads,
        total.leader_changes,
        total.crashes,
        total.power_losses,
        total.torn,
        total.wipes,
        total.overwritten,
        total.partitions,
        total.minority_proposals,
        total.snapshots_sent,
        total.snapshots_installed,
        total.reconfigs,
        total.virtual_ms as f64 / 1000.0,
        total.events
    );
    for f in &failures {
        eprintln!(
            "FAILED seed {} ({:?}, {} members): {}",
            f.seed, f.profile, f.members, f.message
        );
    }
    failures
}

/// The same seed twice gives the same run, event for event (the election timeouts are pinned
/// from the seed, see `sim::member`), snapshot transfers and wiped disks included.
#[test]
fn a_seed_replays_exactly() {
    use sim::Profile::{Default, Lagging};
    for (seed, profile) in [(3, Default), (8, Default), (22, Lagging)] {
        let a = sim::run_seed(seed, profile)
            .map_err(|f| f.to_string())
            .unwrap();
        let b = sim::run_seed(seed, profile)
            .map_err(|f| f.to_string())
            .unwrap();
        assert_eq!(
            (a.fingerprint, a.events, a.entries),
            (b.fingerprint, b.events, b.entries),
            "seed {seed} ({profile:?}) did not replay exactly"
        );
        if profile == Lagging {
            assert!(
                a.snapshots_installed > 0 && a.wipes > 0,
                "lagging seed {seed} no longer installs a snapshot and wipes a disk ({a:?}): \
                 pick one that does"
            );
        }
    }
}
