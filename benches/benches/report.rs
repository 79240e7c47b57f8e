//! `report`: the lock-strategy comparison, as a report (`cargo xtask compare [--full] [--fsync]`).
//! The code, and its flags, are in the library: `etcd_benches::report`.

fn main() -> Result<(), etcd_benches::BoxError> {
    etcd_benches::report::main_with(&std::env::args().skip(1).collect::<Vec<_>>())
}
