//! The `mtd-connector` binary: parse the command line, hand over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    mtd_connector::cli::main(mtd_connector::cli::Cli::parse())
}
