//! The `scalenet` command: a thin shell over the library. Every failure ends here as one
//! line on stderr and exit code 1.

mod cli;

fn main() {
    if let Err(err) = cli::run() {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
