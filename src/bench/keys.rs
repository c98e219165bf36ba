//! Which keys a benchmark touches: uniform, zipfian (YCSB's scrambled zipfian, so the hot keys
//! spread over the keyspace and over regions) or zipfian-range (the same skew unscrambled: the
//! hottest keys are neighbours, a hot key range in one region), and how a key index is spelled.

use rand::Rng;

/// How keys are drawn from `0..count`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// YCSB's zipfian (theta 0.99): a few keys take most of the load.
    Zipfian,
    /// Zipfian without the scrambling: key `r` has rank `r`, so the load falls on the first
    /// keys of the keyspace, a hot range (what load-based split exists for).
    #[value(name = "zipfian-range")]
    #[serde(rename = "zipfian-range")]
    ZipfianRange,
}

/// The key with index `i`, the same on every target.
pub fn key_name(i: u64) -> String {
    format!("bench{i:012}")
}

/// Draws key indexes in `0..count`.
#[derive(Clone, Debug)]
pub struct KeyChooser {
    count: u64,
    zipf: Option<Zipf>,
    scrambled: bool,
}

impl KeyChooser {
    /// A chooser over `count` keys (at least one).
    pub fn new(count: u64, dist: Distribution) -> KeyChooser {
        let count = count.max(1);
        let zipf = (dist != Distribution::Uniform).then(|| Zipf::new(count, ZIPF_THETA));
        KeyChooser {
            count,
            zipf,
            scrambled: dist == Distribution::Zipfian,
        }
    }

    /// The next key index.
    pub fn next(&self, rng: &mut impl Rng) -> u64 {
        match &self.zipf {
            None => rng.gen_range(0..self.count),
            // Scrambled: rank r is spread by a hash, so rank 0 is not always key 0.
            Some(z) if self.scrambled => fnv64(z.next(rng)) % self.count,
            Some(z) => z.next(rng),
        }
    }
}

/// YCSB's skew.
const ZIPF_THETA: f64 = 0.99;

/// Gray et al.'s zipfian generator ("Quickly generating billion-record synthetic databases"),
/// the one YCSB uses: ranks in `0..n`, rank 0 the most likely.
#[derive(Clone, Debug)]
struct Zipf {
    n: u64,
    theta: f64,
    alpha: f64,
    zeta_n: f64,
    eta: f64,
}

impl Zipf {
    fn new(n: u64, theta: f64) -> Zipf {
        let zeta = |n: u64| (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
        let zeta_n = zeta(n);
        let zeta_2 = zeta(2.min(n));
        let eta = (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n);
        Zipf {
            n,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta_n,
            eta,
        }
    }

    fn next(&self, rng: &mut impl Rng) -> u64 {
        let u: f64 = rng.gen();
        let uz = u * self.zeta_n;
        if uz < 1.0 || self.n == 1 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        let r = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        r.min(self.n - 1)
    }
}

fn fnv64(v: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in v.to_le_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn counts(dist: Distribution, n: u64, draws: usize) -> Vec<u64> {
        let c = KeyChooser::new(n, dist);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut counts = vec![0u64; n as usize];
        for _ in 0..draws {
            counts[c.next(&mut rng) as usize] += 1;
        }
        counts
    }

    #[test]
    fn uniform_covers_the_keyspace_evenly() {
        let c = counts(Distribution::Uniform, 100, 100_000);
        assert!(c.iter().all(|&x| (700..1300).contains(&x)), "{c:?}");
    }

    #[test]
    fn zipfian_is_skewed_and_stays_in_range() {
        let mut c = counts(Distribution::Zipfian, 1000, 200_000);
        c.sort_unstable_by(|a, b| b.cmp(a));
        let top10: u64 = c[..10].iter().sum();
        // With theta 0.99 over 1,000 keys the ten hottest take about 39% of the draws.
        assert!(top10 > 200_000 * 30 / 100, "top10 {top10}");
        assert!(c[0] > 20 * c[500], "hottest {} median {}", c[0], c[500]);
    }

    #[test]
    fn zipfian_range_puts_the_load_on_the_first_keys() {
        let c = counts(Distribution::ZipfianRange, 1000, 200_000);
        // The same skew as zipfian, unscrambled: the first 10 keys are the ten hottest.
        let first10: u64 = c[..10].iter().sum();
        assert!(first10 > 200_000 * 30 / 100, "first10 {first10}");
        assert!(
            c[0] > c[1] && c[1] > c[9] && c[9] > c[500],
            "{:?}",
            &c[..10]
        );
        // The scrambled one does not: its first ten keys hold an ordinary share.
        let s = counts(Distribution::Zipfian, 1000, 200_000);
        assert!(s[..10].iter().sum::<u64>() < first10 / 2);
    }

    #[test]
    fn key_names_sort_like_their_indexes() {
        assert!(key_name(9) < key_name(10));
        assert_eq!(key_name(42), "bench000000000042");
    }
}
