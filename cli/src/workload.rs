//! What the load generator sends: tests, key choice (uniform or Zipf), and the RESP
//! encoding of each request. Pure: randomness comes in as an RNG.

use rand::Rng;
use rand_distr::{Distribution, Zipf};
use ringkv_protocol::{Protocol, ReplyWriter};

/// A benchmark test, as `-t` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    /// PING
    Ping,
    /// GET key
    Get,
    /// SET key value
    Set,
    /// INCR counter
    Incr,
    /// MGET of 10 keys
    Mget,
    /// MSET of 10 keys
    Mset,
    /// HSET hash field value
    Hset,
    /// HGET hash field
    Hget,
    /// SET key value then WAIT 1 0, pipelined: a write a replica has acknowledged.
    SetWait,
}

impl Test {
    /// Every test, in `-t` order.
    pub const ALL: [Test; 9] = [
        Test::Ping,
        Test::Get,
        Test::Set,
        Test::Incr,
        Test::Mget,
        Test::Mset,
        Test::Hset,
        Test::Hget,
        Test::SetWait,
    ];

    /// The `-t` name.
    pub fn name(self) -> &'static str {
        match self {
            Test::Ping => "ping",
            Test::Get => "get",
            Test::Set => "set",
            Test::Incr => "incr",
            Test::Mget => "mget",
            Test::Mset => "mset",
            Test::Hset => "hset",
            Test::Hget => "hget",
            Test::SetWait => "setwait",
        }
    }

    /// Replies one request of this test gets.
    pub fn replies(self) -> usize {
        if self == Test::SetWait { 2 } else { 1 }
    }

    /// Parses a `-t` list such as `get,set`.
    pub fn parse_list(text: &str) -> Result<Vec<Test>, String> {
        text.split(',')
            .map(|name| {
                Test::ALL
                    .into_iter()
                    .find(|t| t.name().eq_ignore_ascii_case(name.trim()))
                    .ok_or_else(|| {
                        format!(
                            "unknown test '{name}' (known: ping get set incr mget mset hset hget setwait)"
                        )
                    })
            })
            .collect()
    }
}

/// How keys are picked from the key space.
#[derive(Debug, Clone)]
pub enum KeyChoice {
    /// Every request uses key 0.
    Single,
    /// Uniform over `0..n`.
    Uniform(u64),
    /// Zipf over `0..n` with exponent θ (rank 0 hottest).
    Zipf(Zipf<f64>),
    /// Each key once, in order (fill).
    Sequential(u64),
}

impl KeyChoice {
    /// A key choice for a key space of `keys` (0 = a single key) and an optional θ.
    pub fn new(keys: u64, zipf: Option<f64>) -> Result<KeyChoice, String> {
        Ok(match (keys, zipf) {
            (0, _) => KeyChoice::Single,
            (n, None) => KeyChoice::Uniform(n),
            (n, Some(theta)) => {
                KeyChoice::Zipf(Zipf::new(n as f64, theta).map_err(|e| format!("zipf: {e}"))?)
            }
        })
    }

    /// The next key index; `sequence` is this request's global number (for fills).
    pub fn pick(&self, rng: &mut impl Rng, sequence: u64) -> u64 {
        match self {
            KeyChoice::Single => 0,
            KeyChoice::Uniform(n) => rng.random_range(0..*n),
            KeyChoice::Zipf(z) => z.sample(rng) as u64 - 1,
            KeyChoice::Sequential(n) => sequence % n.max(&1),
        }
    }
}

/// Writes the 16-byte key for index `i` (`key:` and 12 digits), as the memory test wants.
pub fn key_name(prefix: &str, i: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(prefix.as_bytes());
    let digits = format!("{i:012}");
    out.extend_from_slice(digits.as_bytes());
}

// A request is an array of bulk strings: exactly what the reply writer's RESP2 output is.
fn array_header(out: &mut Vec<u8>, n: usize) {
    ReplyWriter::new(out, Protocol::Resp2).array(n);
}

fn bulk(out: &mut Vec<u8>, data: &[u8]) {
    ReplyWriter::new(out, Protocol::Resp2).bulk(data);
}

fn bulk_key(out: &mut Vec<u8>, tag: &str, prefix: &str, i: u64) {
    let mut key = Vec::with_capacity(16 + tag.len());
    key.extend_from_slice(tag.as_bytes());
    key_name(prefix, i, &mut key);
    bulk(out, &key);
}

/// Appends one request of `test` for key index `key` to `out`; every key name starts with
/// `tag` (a hash tag such as `{a}` puts them all in one cluster slot).
pub fn encode(test: Test, key: u64, value: &[u8], hash_fields: u64, tag: &str, out: &mut Vec<u8>) {
    match test {
        Test::Ping => {
            array_header(out, 1);
            bulk(out, b"PING");
        }
        Test::Get => {
            array_header(out, 2);
            bulk(out, b"GET");
            bulk_key(out, tag, "key:", key);
        }
        Test::Set => {
            array_header(out, 3);
            bulk(out, b"SET");
            bulk_key(out, tag, "key:", key);
            bulk(out, value);
        }
        Test::Incr => {
            array_header(out, 2);
            bulk(out, b"INCR");
            bulk_key(out, tag, "ctr:", key);
        }
        Test::Mget => {
            array_header(out, 11);
            bulk(out, b"MGET");
            for i in 0..10 {
                bulk_key(out, tag, "key:", key.wrapping_add(i));
            }
        }
        Test::Mset => {
            array_header(out, 21);
            bulk(out, b"MSET");
            for i in 0..10 {
                bulk_key(out, tag, "key:", key.wrapping_add(i));
                bulk(out, value);
            }
        }
        Test::Hset => {
            // With hash_fields > 0 (fill), one key gets all its fields in one HSET.
            let fields = hash_fields.max(1);
            array_header(out, 2 + 2 * fields as usize);
            bulk(out, b"HSET");
            if hash_fields > 0 {
                bulk_key(out, tag, "hsh:", key);
                for f in 0..fields {
                    bulk(out, format!("field:{f}").as_bytes());
                    bulk(out, value);
                }
            } else {
                bulk(out, format!("{tag}myhash").as_bytes());
                bulk_key(out, tag, "fld:", key);
                bulk(out, value);
            }
        }
        Test::Hget => {
            array_header(out, 3);
            bulk(out, b"HGET");
            bulk(out, format!("{tag}myhash").as_bytes());
            bulk_key(out, tag, "fld:", key);
        }
        Test::SetWait => {
            encode(Test::Set, key, value, hash_fields, tag, out);
            array_header(out, 3);
            bulk(out, b"WAIT");
            bulk(out, b"1");
            bulk(out, b"0");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn keys_are_sixteen_bytes() {
        let mut key = Vec::new();
        key_name("key:", 42, &mut key);
        assert_eq!(key, b"key:000000000042");
    }

    #[test]
    fn requests_parse_as_the_server_would() {
        let mut out = Vec::new();
        for test in Test::ALL {
            encode(test, 7, b"vv", 0, "", &mut out);
        }
        let mut parser = ringkv_protocol::RequestParser::default();
        let mut batch = ringkv_protocol::Batch::new();
        let parsed = parser.parse(&out, &mut batch).unwrap();
        assert_eq!(parsed.consumed, out.len());
        // One command per test, two for SET + WAIT.
        let replies: usize = Test::ALL.iter().map(|t| t.replies()).sum();
        assert_eq!(batch.len(), replies);
        assert_eq!(batch.command(&out, 5).len(), 21);
        assert_eq!(batch.command(&out, replies - 1).get(0), b"WAIT");
    }

    #[test]
    fn a_key_tag_prefixes_every_key() {
        let mut out = Vec::new();
        encode(Test::Set, 3, b"v", 0, "{a}", &mut out);
        assert!(out.windows(19).any(|w| w == b"{a}key:000000000003"));
    }

    #[test]
    fn zipf_prefers_low_ranks_and_stays_in_range() {
        let choice = KeyChoice::new(1000, Some(0.99)).unwrap();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let picks: Vec<u64> = (0..10_000).map(|i| choice.pick(&mut rng, i)).collect();
        assert!(picks.iter().all(|&k| k < 1000));
        let hot = picks.iter().filter(|&&k| k < 10).count();
        assert!(hot > 2000, "top 1% of keys drew only {hot} of 10000");
        assert!(Test::parse_list("get,SET").is_ok());
        assert!(Test::parse_list("get,nope").is_err());
    }
}
