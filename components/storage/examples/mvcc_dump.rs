//! Debug aid for fault campaigns: prints the lock and write records of every transactional key
//! whose raw form contains NEEDLE, from a store's RocksDB (a copy of `<store>/db`, or the
//! directory of a stopped store).
//!
//! `cargo run -p storage --example mvcc_dump -- <db-dir> <needle>`
use engine::{KvEngine, RocksConfig, RocksEngine, CF_LOCK, CF_WRITE};
use txn_types::{Key, Lock, Write};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: mvcc_dump <db-dir> <needle>");
        std::process::exit(2);
    }
    let e = RocksEngine::open(&args[1], &RocksConfig::default()).expect("open the db");
    let needle = args[2].as_bytes();
    let snap = e.snapshot();
    for cf in [CF_LOCK, CF_WRITE] {
        snap.scan_cf(cf, b"z", Some(b"{"), false, &mut |k, v| {
            let enc = &k[1..];
            let (user, ts) = if cf == CF_WRITE {
                let (u, t) = Key::split_on_ts(enc).unwrap();
                (u.to_vec(), Some(t))
            } else {
                (enc.to_vec(), None)
            };
            let raw = Key::from_encoded(user).to_raw().unwrap_or_default();
            if raw.windows(needle.len()).any(|w| w == needle) {
                if cf == CF_WRITE {
                    let w = Write::parse(v).unwrap();
                    println!(
                        "write {:?} commit_ts={:?} {:?}",
                        String::from_utf8_lossy(&raw),
                        ts,
                        w
                    );
                } else {
                    let l = Lock::parse(v).unwrap();
                    println!("lock {:?} {:?}", String::from_utf8_lossy(&raw), l);
                }
            }
            Ok(true)
        })
        .unwrap();
    }
}
