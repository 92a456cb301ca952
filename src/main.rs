//! The `scalenet` command: a thin shell over the library. Every failure ends here as one
//! line on stderr and exit code 1.

mod cli;

fn main() {
    scalenet::device::tune_host_allocator();
    // A bug must still end as one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        // A panic inside the tokenizers crate is caught and reported as an error by the caller.
        if scalenet::data::tokenizer::panic_is_guarded() {
            return;
        }
        eprintln!(
            "error: internal error: {info} (please report this at the scalenet issue tracker)"
        );
    }));
    if let Err(err) = cli::run() {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
