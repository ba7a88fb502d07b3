fn main() -> std::process::ExitCode {
    msae::cli::main()
}
