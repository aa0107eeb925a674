fn main() -> std::process::ExitCode {
    ma_idp::cli::main()
}
