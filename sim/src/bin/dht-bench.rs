//! Measures the DHT simulation: builds a network (10,000 nodes by default), runs lookups with
//! no dead nodes, then with 20% dead, then under churn, and a batch of put/get pairs, and
//! prints success rate, median/p95 rounds and messages per lookup, and memory per node.
//!
//! `cargo run --release --offline -p covey-sim --bin dht-bench -- [--seed N] [--nodes N]
//! [--lookups N] [--join-refresh 0|1] [--farthest N]`

use std::process::ExitCode;
use std::time::Instant;

use covey_sim::dht::{DhtSim, DhtSimConfig, LookupReport};

const USAGE: &str =
    "usage: dht-bench [--seed N] [--nodes N] [--lookups N] [--join-refresh 0|1] [--farthest N]";

fn parse() -> Result<(u64, usize, usize, bool, usize), String> {
    let mut seed = 1u64;
    let mut nodes = 10_000usize;
    let mut lookups = 1_000usize;
    let mut join_refresh = false;
    let mut farthest = 3usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().ok_or_else(|| USAGE.to_string())?;
        let n: u64 = v
            .parse()
            .map_err(|_| format!("not a number: {v}\n{USAGE}"))?;
        match a.as_str() {
            "--seed" => seed = n,
            "--nodes" => nodes = n as usize,
            "--lookups" => lookups = n as usize,
            "--join-refresh" => join_refresh = n != 0,
            "--farthest" => farthest = n as usize,
            _ => return Err(USAGE.to_string()),
        }
    }
    Ok((seed, nodes, lookups, join_refresh, farthest))
}

fn print(label: &str, r: &LookupReport) {
    println!(
        "{label:<12} lookups {:>6}  success {:>7.3}%  rounds median {} p95 {}  messages median {} p95 {}",
        r.lookups,
        r.success_rate() * 100.0,
        r.median_rounds(),
        r.p95_rounds(),
        r.median_messages(),
        r.p95_messages()
    );
}

fn main() -> ExitCode {
    let (seed, nodes, lookups, join_refresh, farthest) = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let start = Instant::now();
    let config = DhtSimConfig {
        join_refresh,
        join_refresh_farthest: farthest,
        ..DhtSimConfig::new(seed, nodes)
    };
    let mut sim = match DhtSim::new(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bootstrap failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "seed {seed}: {nodes} nodes bootstrapped in {:.1}s wall; mean routing table {:.1} contacts; ~{} bytes per node (table + store + maps)",
        start.elapsed().as_secs_f64(),
        sim.mean_table_size(),
        sim.bytes_per_node()
    );
    let result = (|| -> covey_core::Result<()> {
        let t = Instant::now();
        let r = sim.measure_lookups(lookups)?;
        print("0% dead", &r);
        let mut churn = sim.clone();
        let mut records = sim.clone();
        sim.kill_fraction(0.2, &[]);
        let r = sim.measure_lookups(lookups)?;
        print("20% dead", &r);
        let r = churn.measure_lookups_with_churn(lookups, 2)?;
        print("churn 2/op", &r);
        // Records: put from a random node, get from another.
        let mut ok = 0;
        let n = (lookups / 10).max(1);
        let mut get_rounds = Vec::new();
        for i in 0..n {
            let Some(w) = records.random_alive() else {
                break;
            };
            let Some(r) = records.random_alive() else {
                break;
            };
            let name = format!("rec-{i}");
            let put = records.op(w, |d, now| {
                d.put(name.as_bytes(), b"value", 3_600_000, None, now)
            })?;
            let publisher = records.nodes()[w].dht.id().0;
            let (got, stats) = records.get(r, publisher, name.as_bytes())?;
            if matches!(put.0, covey_core::dht::Outcome::Put(Ok(1)))
                && got.is_some_and(|g| g.value == b"value")
            {
                ok += 1;
            }
            get_rounds.push(stats.rounds);
        }
        println!(
            "records      put+get {n}: {ok} found ({:.2}%), get rounds median {} p95 {}; ~{} bytes per node after",
            ok as f64 * 100.0 / n as f64,
            LookupReport::quantile(&get_rounds, 0.5),
            LookupReport::quantile(&get_rounds, 0.95),
            records.bytes_per_node()
        );
        println!("measurements took {:.1}s wall", t.elapsed().as_secs_f64());
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
