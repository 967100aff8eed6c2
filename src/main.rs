//! The `gatehouse` binary: parse the command line, run it, map the result to an exit code.

use clap::Parser;

fn main() {
    let cli = gatehouse::cli::Cli::parse();
    std::process::exit(gatehouse::ops::main(cli));
}
