//! The `scalenet` command: a thin shell over the library. Every failure ends here as one
//! line on stderr and exit code 1.

mod cli;

fn main() {
    scalenet::device::tune_host_allocator();
    // `scalenet info DIR | head` closes the pipe early. Rust ignores SIGPIPE, so the next print
    // would panic; with the default action the process ends quietly, as `cat` or `ls` do.
    #[cfg(unix)]
    // SAFETY: called before any other thread starts; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
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
