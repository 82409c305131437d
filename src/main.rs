//! The `squeeze` binary: parse the command line, set up logging, dispatch.

use clap::Parser;
use squeeze::cli;
use squeeze::config::Cli;

fn main() -> std::process::ExitCode {
    // candle's element-wise operations hand work to a pool of its own threads that spin while
    // they wait. The evaluation already runs one sequence per rayon thread, and there the
    // spinning cost more than the pool gave (SmolLM2-135M: 12 % of the accuracy pass). Its
    // matmuls keep using rayon, and one token's quantized product is split into row bands on
    // rayon (eval::weights). The pool reads this variable once, at its first use.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: no other thread exists yet: the async runtime and the rayon pools are
        // started below, and nothing before this line reads or writes the environment.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
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
