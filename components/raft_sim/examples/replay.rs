//! Replays one seed: `cargo run -p raft_sim --example replay -- <seed>`.

fn main() {
    let seed: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("usage: replay <seed>");
    match raft_sim::run_seed(seed, raft_sim::Options::default()) {
        Ok(stats) => println!("seed {seed}: safe, {stats:?}"),
        Err(v) => {
            eprintln!("seed {seed}: {v}");
            std::process::exit(1);
        }
    }
}
