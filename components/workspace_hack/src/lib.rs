//! Holds no code. Its manifest pins the features of RocksDB's dependency tree so that every
//! cargo invocation resolves librocksdb-sys the same way (see `Cargo.toml`).
