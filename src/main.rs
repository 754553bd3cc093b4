//! The `meridian` binary: parses the command line and hands over to `meridian::cli`.
//! Must hold no logic of its own.

fn main() -> std::process::ExitCode {
    meridian::cli::main()
}
