//! `stretchfs`: run a node, a whole local cluster (`dev`), or talk to one.

use std::path::Path;
use std::process::ExitCode;
use stretchfs::config::FileConfig;
use stretchfs::{cli, dev, server};
use tracing_subscriber::EnvFilter;

const USAGE: &str = "\
usage:
  stretchfs dev [--dir DIR] [--port PORT]   start a local cluster (1 authority, 3 stores, 2 prisms)
  stretchfs run [--config FILE]             run one node (STRETCHFS_* variables override the file)
  stretchfs upload FILE [--ext EXT]         upload a file through a prism
  stretchfs purchase HASH [--ext EXT] [--life LIFE]
                                            create a purchase (LIFE: seconds or 30m, 2h, 7d)
  stretchfs status                          nodes, health, copies, repair backlog

client options (or STRETCHFS_PRISM / STRETCHFS_API_KEY; default: the dev cluster here):
  --prism URL   --api-key KEY   --dir DIR
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first().cloned() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let opts = match cli::Opts::parse(&args[1..]) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("stretchfs: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let default_log = if cmd == "run" { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stretchfs: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cmd.as_str() {
            "run" => run(opts.config.as_deref()).await,
            "dev" => dev::run(&opts.dir_or_default(), opts.port.unwrap_or(dev::BASE_PORT)).await,
            "upload" => cli::upload(&opts).await,
            "purchase" => cli::purchase(&opts).await,
            "status" => cli::status(&opts).await,
            "help" | "--help" | "-h" => {
                print!("{USAGE}");
                Ok(())
            }
            other => Err(format!("unknown command {other:?}\n\n{USAGE}")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stretchfs: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Option<&Path>) -> Result<(), String> {
    let cfg = FileConfig::load(config).map_err(|e| e.to_string())?;
    let mut node = server::start(cfg).await.map_err(|e| e.to_string())?;
    tokio::select! {
        _ = cli::shutdown_signal() => {
            tracing::info!("signal received: leaving the cluster");
            node.shutdown().await;
            Ok(())
        }
        why = node.failed() => Err(why),
    }
}
