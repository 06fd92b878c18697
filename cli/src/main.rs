//! `kompakt`: convert, inspect, translate and benchmark `.kpk` models.
use clap::{Parser, Subcommand};

mod inspect;

#[derive(Parser)]
#[command(name = "kompakt", version, about = "Compress Qwen2-Audio into one small file and run it")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Summarise a .kpk file: size, parameters, bits per weight, size bin
    Inspect(inspect::InspectArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(args),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
