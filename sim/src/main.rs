//! `stretchfs-sim`: run one seed, a swarm of seeds, or the benchmark.

use std::process::ExitCode;
use stretchfs_sim::{bench, run, swarm, SimConfig};

const USAGE: &str = "usage:
  stretchfs-sim run --seed N [--trace]        one seed (swarm fault mix drawn from N)
  stretchfs-sim swarm --seeds N [--from S] [--jobs J] [--no-replay]
                                              N seeds on J threads (default: all cores);
                                              each seed runs twice unless --no-replay
  stretchfs-sim bench [--quick]               simulator speed and probe load table
  stretchfs-sim bench-content [--quick]       scan-and-diff, feed catch-up and placement tables";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse_and_run(&args) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("error: {msg}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn flag_value<T: std::str::FromStr>(args: &[String], name: &str) -> Result<Option<T>, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(None),
        Some(i) => {
            let v = args
                .get(i + 1)
                .ok_or_else(|| format!("{name} needs a value"))?;
            v.parse()
                .map(Some)
                .map_err(|_| format!("{name}: cannot parse {v:?}"))
        }
    }
}

fn check_flags(
    args: &[String],
    known_values: &[&str],
    known_switches: &[&str],
) -> Result<(), String> {
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        if known_values.contains(&a) {
            i += 2;
        } else if known_switches.contains(&a) {
            i += 1;
        } else {
            return Err(format!("unknown argument {a:?}"));
        }
    }
    Ok(())
}

fn parse_and_run(args: &[String]) -> Result<ExitCode, String> {
    let Some(cmd) = args.first() else {
        return Err("no command".into());
    };
    let rest = &args[1..];
    match cmd.as_str() {
        "run" => {
            check_flags(rest, &["--seed"], &["--trace"])?;
            let seed: u64 = flag_value(rest, "--seed")?.ok_or("run needs --seed N")?;
            let trace = rest.iter().any(|a| a == "--trace");
            let report = run(SimConfig::swarm(seed), trace);
            println!("{report}");
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        "swarm" => {
            check_flags(rest, &["--seeds", "--from", "--jobs"], &["--no-replay"])?;
            let seeds: u64 = flag_value(rest, "--seeds")?.unwrap_or(1000);
            let from: u64 = flag_value(rest, "--from")?.unwrap_or(0);
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let jobs: usize = flag_value(rest, "--jobs")?.unwrap_or(cores);
            let replay = !rest.iter().any(|a| a == "--no-replay");
            let summary = swarm::run_swarm(from, seeds, jobs, replay);
            summary.print();
            Ok(if summary.violations() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        "bench" => {
            check_flags(rest, &[], &["--quick"])?;
            bench::run(rest.iter().any(|a| a == "--quick"));
            Ok(ExitCode::SUCCESS)
        }
        "bench-content" => {
            check_flags(rest, &[], &["--quick"])?;
            stretchfs_sim::bench_content::run(rest.iter().any(|a| a == "--quick"));
            Ok(ExitCode::SUCCESS)
        }
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => Err(format!("unknown command {other:?}")),
    }
}
