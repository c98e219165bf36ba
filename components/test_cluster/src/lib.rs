//! test_cluster
