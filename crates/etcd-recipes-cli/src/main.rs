//! The `etcd-recipes` binary; everything lives in the library (`etcd_recipes_cli`).

fn main() -> std::process::ExitCode {
    etcd_recipes_cli::main()
}
