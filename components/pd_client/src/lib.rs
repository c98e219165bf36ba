//! pd_client
