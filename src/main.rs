//! The `squeeze` binary: parse the command line, set up logging, dispatch.

use clap::Parser;
use squeeze::cli;
use squeeze::config::Cli;

fn main() -> std::process::ExitCode {
    let args = Cli::parse();
    cli::init_tracing(args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(args.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", cli::one_line(&err));
            std::process::ExitCode::FAILURE
        }
    }
}
