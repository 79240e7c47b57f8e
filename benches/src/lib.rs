//! Shared code for the benchmarks (filled in by the benchmarks issue).
