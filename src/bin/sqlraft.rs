//! `sqlraft`: the interactive shell (logic in `sqlraft::shell`).

fn main() -> std::process::ExitCode {
    sqlraft::shell::main()
}
