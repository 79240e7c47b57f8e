//! What the criterion bench targets share that needs their dev-dependencies: the criterion
//! settings. The peer (`etcd-client`) is driven by the library, `etcd_benches::peer`.

use std::time::Duration;

use criterion::Criterion;

/// Short criterion settings: every bench together should finish in minutes on two cores.
pub(crate) fn criterion() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .without_plots()
        .configure_from_args()
}
