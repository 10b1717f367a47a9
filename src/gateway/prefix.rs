//! Prefix-aware choice (pure): a key from the request's leading content, then consistent hashing
//! with bounded loads (CHWBL) over a target's instances, so requests that share a prompt prefix
//! reach the replica whose prompt cache holds it; servers that have seen the same keys choose alike.
//!
//! The key ([`key_of`]) hashes the request's leading content, raw JSON text never decoded: for a
//! chat, the `messages` before the last one (system prompt, document, history: what a tenant or a
//! conversation shares), up to [`KEY_BLOCKS`] × [`BLOCK`] bytes; for a lone message or a
//! completion `prompt`, [`BLOCK`]-byte blocks hashed cumulatively, keyed by the running hash after
//! the last whole block, so contents that share their first 4 KiB share a key whatever follows,
//! and shorter ones when they differ only in the last, partial block. The hash (a fixed
//! multiply-xorshift over 8-byte words, then a fixed finalizer) and the scores depend only on bytes
//! and on instance ids from the database, never on per-process randomness, so every server of an
//! HA pair ranks the instances of a key the same way.
//!
//! Instances are ranked by rendezvous (highest random weight) hashing: when one joins or leaves,
//! only the keys it wins (or won) move. The first instance in that order whose in-flight count is
//! below the bound `ceil(LOAD_FACTOR × (in flight + 1) / instances) + SLACK` takes the request, so
//! a hot prefix spills to its next instances instead of piling on one. A key the server has not
//! placed yet goes where least-outstanding would (ties to the rendezvous order) and keeps that
//! instance as its home ([`choose_homed`]): traffic without shared prefixes is balanced exactly as
//! least-outstanding balances it.

use axum::body::Bytes;
use serde_json::value::RawValue;

use super::snapshot::LoadBalancing;

/// Bytes per hashed block (about 64 tokens of English).
pub const BLOCK: usize = 256;
/// The most blocks the key covers (4 KiB, about 1,000 tokens).
pub const KEY_BLOCKS: usize = 16;
/// An instance above this many times the mean in-flight count is skipped...
pub const LOAD_FACTOR: f64 = 1.25;
/// ...plus this many requests: with a few requests in flight, `ceil(1.25 × mean)` is the mean
/// itself and nearly every request of a busy prefix would spill to an instance without its cache
/// (measured: `docs/benchmarks.md`); one request of slack keeps it home.
pub const SLACK: usize = 1;

const SEED: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// A fixed 64-bit finalizer (splitmix64's): spreads a state over all bits.
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Folds `bytes` into `state`: 8-byte little-endian words by multiply-xorshift, the tail byte by
/// byte (FNV-1a). Block boundaries ([`BLOCK`]) fall on word boundaries, so folding block by block
/// equals folding the whole.
fn fold(mut state: u64, bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        state = (state ^ u64::from_le_bytes(w)).wrapping_mul(GOLDEN);
        state ^= state >> 29;
    }
    for b in words.remainder() {
        state ^= u64::from(*b);
        state = state.wrapping_mul(FNV_PRIME);
    }
    state
}

/// The cumulative hash after each whole block of `content`, at most `max_blocks` of them: entry
/// `i` covers bytes `0 .. (i + 1) × BLOCK`, so two contents share entry `i` when they share that
/// many leading bytes.
pub fn block_hashes(content: &[u8], max_blocks: usize) -> Vec<u64> {
    let mut state = SEED;
    content
        .chunks_exact(BLOCK)
        .take(max_blocks)
        .map(|block| {
            state = fold(state, block);
            mix(state)
        })
        .collect()
}

/// The routing key of `content`: the cumulative hash after its last whole block (at most
/// [`KEY_BLOCKS`]), or of all of it when it is shorter than one block. `None` when empty.
pub fn key(content: &[u8]) -> Option<u64> {
    if content.is_empty() {
        return None;
    }
    let whole = (content.len() / BLOCK).min(KEY_BLOCKS);
    let covered = if whole == 0 { content } else { &content[..whole * BLOCK] };
    Some(mix(fold(SEED, covered)))
}

/// Chat `messages` longer than this are not split into messages: the key's first 4 KiB lie in
/// the history before the last message (unless that message alone is 12 KiB long).
const SPLIT_UP_TO: usize = 16 * 1024;

/// What a request leads with, as raw JSON text (a slice of its body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leading {
    /// The chat `messages` array.
    Messages(Bytes),
    /// The completion `prompt`.
    Prompt(Bytes),
}

impl Leading {
    pub fn raw(&self) -> &[u8] {
        match self {
            Leading::Messages(b) | Leading::Prompt(b) => b,
        }
    }
}

/// The routing key of a request. Chat: the messages before the last one (the context a tenant or a
/// conversation shares; the last is the new question), cut exactly there and hashed up to
/// [`KEY_BLOCKS`] × [`BLOCK`] bytes; one message alone, a prompt, or an array that is not a list
/// of messages: [`key`] (whole blocks only).
pub fn key_of(leading: &Leading) -> Option<u64> {
    match leading {
        Leading::Messages(raw) => match context(raw) {
            Some(context) => {
                let n = context.len().min(KEY_BLOCKS * BLOCK);
                Some(mix(fold(SEED, &context[..n])))
            }
            None => key(raw),
        },
        Leading::Prompt(raw) => key(raw),
    }
}

/// The raw text of a messages array up to the start of its last element, when it has two or more
/// and is at most [`SPLIT_UP_TO`] bytes (a scan of the array only, nothing decoded).
fn context(raw: &[u8]) -> Option<&[u8]> {
    if raw.len() > SPLIT_UP_TO {
        return None;
    }
    let items: Vec<&RawValue> = serde_json::from_slice(raw).ok()?;
    if items.len() < 2 {
        return None;
    }
    let last = items.last()?.get().as_bytes();
    let at = (last.as_ptr() as usize).checked_sub(raw.as_ptr() as usize)?;
    raw.get(..at)
}

/// The score of `id` for `key` in rendezvous hashing.
fn score(key: u64, id: u64) -> u64 {
    mix(key ^ mix(id))
}

/// The most requests in flight an instance may hold and still take one more:
/// `ceil(LOAD_FACTOR × (in_flight + 1) / instances) + SLACK`.
pub fn bound(in_flight: usize, instances: usize) -> usize {
    if instances == 0 {
        return 0;
    }
    (LOAD_FACTOR * (in_flight + 1) as f64 / instances as f64).ceil() as usize + SLACK
}

/// The index (into `ids`) of the instance that takes a request with `key`: the highest-scoring
/// instance whose in-flight count (`loads`, one per id) is below [`bound`]. `None` only when
/// `ids` is empty.
pub fn choose(key: u64, ids: &[i64], loads: &[usize]) -> Option<usize> {
    let total: usize = loads.iter().sum();
    let cap = bound(total, ids.len());
    let mut best: Option<(u64, usize)> = None;
    for (i, id) in ids.iter().enumerate() {
        if loads.get(i).copied().unwrap_or(0) >= cap {
            continue;
        }
        let s = score(key, *id as u64);
        if best.is_none_or(|(b, _)| s > b) {
            best = Some((s, i));
        }
    }
    // Sum(loads) < ids.len() × cap, so some instance is under the cap; kept total for safety.
    best.map(|(_, i)| i).or_else(|| (0..ids.len()).min_by_key(|i| loads.get(*i).copied().unwrap_or(0)))
}

/// The index (into `ids`) of the instance for a prefix-aware request with `key`, given its `home`
/// on this server (the instance it was last placed on afresh, see `balance::Homes`), and whether
/// this choice makes a new home. A key with a home among `ids` stays there while the home is under
/// [`bound`], else spills in rendezvous order ([`choose`]) and keeps its home. A key without one
/// has no prompt cache to find (as far as this server has seen): it goes to the fewest in flight,
/// as least-outstanding would; among those, to the one home to the fewest keys (`homed`, one per
/// id), so prefixes spread evenly and each instance's cache holds its share; then to the
/// highest-scoring, so servers that have seen the same keys place a new one alike. That instance
/// becomes its home. `None` only when `ids` is empty.
pub fn choose_homed(
    key: u64,
    home: Option<i64>,
    ids: &[i64],
    loads: &[usize],
    homed: &[usize],
) -> Option<(usize, bool)> {
    let load = |i: usize| loads.get(i).copied().unwrap_or(0);
    if let Some(at) = home.and_then(|h| ids.iter().position(|id| *id == h)) {
        let cap = bound(loads.iter().sum(), ids.len());
        if load(at) < cap {
            return Some((at, false));
        }
        return choose(key, ids, loads).map(|i| (i, false));
    }
    let keys = |i: usize| homed.get(i).copied().unwrap_or(0);
    (0..ids.len())
        .min_by_key(|i| (load(*i), keys(*i), std::cmp::Reverse(score(key, ids[*i] as u64))))
        .map(|i| (i, true))
}

/// The index (into `ids`, with `loads` one per id) of the instance a route's `policy` picks:
/// [`choose`] for a prefix-aware request with a key; the next in turn (`cursor`) for round-robin;
/// otherwise the fewest in flight, ties taking turns from `cursor`. `None` only when `ids` is empty.
pub fn select(policy: LoadBalancing, key: Option<u64>, ids: &[i64], loads: &[usize], cursor: usize) -> Option<usize> {
    let n = ids.len();
    if n == 0 {
        return None;
    }
    let load = |i: usize| loads.get(i).copied().unwrap_or(0);
    match (policy, key) {
        (LoadBalancing::PrefixAware, Some(key)) => choose(key, ids, loads),
        (LoadBalancing::RoundRobin, _) => Some(cursor % n),
        _ => {
            let mut best = cursor % n;
            for k in 1..n {
                let i = (cursor + k) % n;
                if load(i) < load(best) {
                    best = i;
                }
            }
            Some(best)
        }
    }
}

/// Which of the weighted `targets` (name, weight) takes `key`: weighted rendezvous hashing, so a
/// key stays on one target while the weights split distinct keys in proportion. All-zero weights
/// count as equal. `None` when `targets` is empty.
pub fn choose_target<'a>(key: u64, targets: impl IntoIterator<Item = (&'a str, u32)>) -> Option<usize> {
    let targets: Vec<(&str, u32)> = targets.into_iter().collect();
    let all_zero = targets.iter().all(|(_, w)| *w == 0);
    let mut best: Option<(f64, usize)> = None;
    for (i, (name, weight)) in targets.iter().enumerate() {
        let weight = if all_zero { 1.0 } else { f64::from(*weight) };
        if weight <= 0.0 {
            continue;
        }
        let h = score(key, fold(SEED, name.as_bytes()));
        // A uniform draw in (0, 1) from the top 53 bits; -w / ln(u) ranks by weight.
        let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let s = -weight / u.ln();
        if best.is_none_or(|(b, _)| s > b) {
            best = Some((s, i));
        }
    }
    best.map(|(_, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(seed: usize, len: usize) -> Vec<u8> {
        (0..len).map(|i| b'a' + ((i * 7 + seed * 13 + i / 5) % 26) as u8).collect()
    }

    fn counts(ids: &[i64], keys: impl Iterator<Item = u64>) -> std::collections::HashMap<i64, usize> {
        let mut out = std::collections::HashMap::new();
        for k in keys {
            let i = choose(k, ids, &vec![0; ids.len()]).expect("some");
            *out.entry(ids[i]).or_insert(0) += 1;
        }
        out
    }

    #[test]
    fn keys_follow_the_shared_leading_blocks() {
        let shared = text(1, 5000);
        let with = |tail: &str| [shared.as_slice(), tail.as_bytes()].concat();
        // (a, b, same key)
        let table: Vec<(Vec<u8>, Vec<u8>, bool)> = vec![
            // A long shared prefix: whatever follows, the first 16 blocks decide.
            (with("What is the capital?"), with("Summarize it in one line, please."), true),
            // Differing inside the first 4 KiB: different keys.
            (text(1, 300), text(2, 300), false),
            // Sharing two whole blocks, differing only in the partial third one.
            ([&text(3, 512)[..], b"tail one"].concat(), [&text(3, 512)[..], b"other tail"].concat(), true),
            // Shorter than a block: the whole content is the key.
            (b"hello".to_vec(), b"hello".to_vec(), true),
            (b"hello".to_vec(), b"hellp".to_vec(), false),
        ];
        for (i, (a, b, same)) in table.iter().enumerate() {
            assert_eq!(key(a) == key(b), *same, "row {i}");
        }
        assert_eq!(key(b""), None);
        // Block hashes are cumulative: a longer shared prefix shares more of them.
        let (x, y) =
            (block_hashes(&with("x"), 100), block_hashes(&[&shared[..3000], &text(9, 2000)[..]].concat(), 100));
        assert_eq!(x.len(), 19);
        let shared_blocks = x.iter().zip(&y).take_while(|(a, b)| a == b).count();
        assert_eq!(shared_blocks, 3000 / BLOCK);
        assert_eq!(block_hashes(&shared, 4).len(), 4);
        assert_eq!(key(&shared), Some(block_hashes(&shared, KEY_BLOCKS)[KEY_BLOCKS - 1]));
    }

    #[test]
    fn a_chat_is_keyed_by_the_messages_before_its_last() {
        let chat = |messages: serde_json::Value| Leading::Messages(Bytes::from(messages.to_string()));
        let m = |role: &str, content: &str| serde_json::json!({"role": role, "content": content});
        let system = "You are the support assistant of tenant 7. ".repeat(20);
        let other = "You are the support assistant of tenant 8. ".repeat(20);
        let history = "Earlier turn. ".repeat(2000);
        // (a, b, same key)
        let table = [
            // A system prompt shorter than 4 KiB, different questions: one key.
            (
                chat(serde_json::json!([m("system", &system), m("user", "What are your hours?")])),
                chat(serde_json::json!([m("system", &system), m("user", "Where is my order 1234?")])),
                true,
            ),
            (
                chat(serde_json::json!([m("system", &system), m("user", "Hi")])),
                chat(serde_json::json!([m("system", &other), m("user", "Hi")])),
                false,
            ),
            // One message: the message itself (whole blocks).
            (chat(serde_json::json!([m("user", "Hello")])), chat(serde_json::json!([m("user", "Hello")])), true),
            (chat(serde_json::json!([m("user", "Hello")])), chat(serde_json::json!([m("user", "Hellp")])), false),
            // A long history (past the split limit): its first 4 KiB.
            (
                chat(serde_json::json!([m("user", &history), m("assistant", "ok"), m("user", "a")])),
                chat(serde_json::json!([m("user", &history), m("assistant", "sure"), m("user", "b")])),
                true,
            ),
            // Not a list of messages: the raw text, whole blocks.
            (chat(serde_json::json!("text")), chat(serde_json::json!("text")), true),
            // A prompt: whole blocks, so a differing tail inside the last partial block shares.
            (
                Leading::Prompt(Bytes::from(format!("\"{system} Q1\""))),
                Leading::Prompt(Bytes::from(format!("\"{system} Q2\""))),
                true,
            ),
        ];
        for (i, (a, b, same)) in table.iter().enumerate() {
            assert_eq!(key_of(a) == key_of(b), *same, "row {i}");
            assert!(key_of(a).is_some(), "row {i}");
        }
        // The context is cut exactly before the last message.
        let raw = serde_json::json!([m("system", "S"), m("user", "Q")]).to_string();
        assert_eq!(context(raw.as_bytes()), Some(&br#"[{"content":"S","role":"system"},"#[..]));
        assert_eq!(key_of(&Leading::Messages(Bytes::new())), None);
    }

    #[test]
    fn decisions_are_deterministic_and_fixed_across_builds() {
        // The same bytes give the same key in every process: these values are part of the contract
        // between servers of one cluster (a change moves every prefix once, on upgrade).
        assert_eq!(key(b"hello"), Some(mix(fold(SEED, b"hello"))));
        assert_eq!(fold(SEED, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(key(b"The quick brown fox jumps over the lazy dog"), Some(0x66d7_1c8d_069f_3e55));
        // Folding block by block is folding the whole.
        let text = text(4, 3 * BLOCK);
        assert_eq!(block_hashes(&text, 3)[2], mix(fold(SEED, &text)));
        let ids = [11, 12, 13];
        for k in 0..200u64 {
            let k = mix(k);
            let first = choose(k, &ids, &[0, 0, 0]);
            assert_eq!(first, choose(k, &ids, &[0, 0, 0]));
            // Order of the candidate list does not matter: the id decides.
            let reversed = [13, 12, 11];
            let r = choose(k, &reversed, &[0, 0, 0]).map(|i| reversed[i]);
            assert_eq!(first.map(|i| ids[i]), r);
        }
    }

    #[test]
    fn distinct_keys_spread_evenly() {
        // (instances, keys, largest share / mean at most)
        let table: &[(&[i64], u64, f64)] =
            &[(&[1, 2], 2000, 1.1), (&[1, 2, 3], 3000, 1.1), (&[4, 9, 17, 40, 41], 5000, 1.15), (&[7], 10, 1.0)];
        for (ids, keys, skew) in table {
            let c = counts(ids, (0..*keys).map(|k| key(format!("tenant {k} system prompt").as_bytes()).expect("k")));
            let mean = *keys as f64 / ids.len() as f64;
            let max = *c.values().max().expect("max") as f64;
            assert!(max / mean <= *skew, "{ids:?}: {c:?}");
            assert_eq!(c.len(), ids.len(), "{ids:?}: every instance gets keys");
        }
    }

    #[test]
    fn only_the_joining_or_leaving_share_moves() {
        let keys: Vec<u64> = (0..3000u64).map(mix).collect();
        // (before, after)
        let table: &[(&[i64], &[i64])] =
            &[(&[1, 2, 3], &[1, 2, 3, 4]), (&[1, 2, 3, 4], &[1, 2, 4]), (&[5, 6], &[5, 6, 7]), (&[5, 6, 7], &[6, 7])];
        for (before, after) in table {
            let mut moved = 0;
            for k in &keys {
                let a = before[choose(*k, before, &vec![0; before.len()]).expect("a")];
                let b = after[choose(*k, after, &vec![0; after.len()]).expect("b")];
                if a != b {
                    moved += 1;
                    // A key moves only onto a joining instance or off a leaving one.
                    assert!(!before.contains(&b) || !after.contains(&a), "{before:?} → {after:?}: {a} → {b}");
                }
            }
            let expected = keys.len() as f64 / before.len().max(after.len()) as f64;
            assert!((moved as f64) < expected * 1.15 && (moved as f64) > expected * 0.85, "{before:?}: {moved}");
        }
    }

    #[test]
    fn a_hot_key_spills_within_the_bound() {
        // (in flight, instances, bound)
        for (in_flight, n, b) in
            [(0, 3, 2), (2, 3, 3), (3, 3, 3), (8, 3, 5), (0, 1, 3), (10, 1, 15), (30, 3, 14), (5, 0, 0)]
        {
            assert_eq!(bound(in_flight, n), b, "bound({in_flight}, {n})");
        }
        let ids = [1, 2, 3];
        let k = key(b"one very popular system prompt").expect("k");
        let home = choose(k, &ids, &[0, 0, 0]).expect("home");
        // Requests of one key held open: each lands where the bound allows; none exceeds it.
        let mut loads = [0usize; 3];
        for n in 0..30 {
            let i = choose(k, &ids, &loads).expect("some");
            assert!(loads[i] < bound(n, 3), "instance {i} over the bound at {loads:?}");
            loads[i] += 1;
            let max = *loads.iter().max().expect("max") as f64;
            assert!(max <= (LOAD_FACTOR * (n + 1) as f64 / 3.0).ceil() + SLACK as f64, "{loads:?}");
        }
        assert!(loads[home] >= loads[(home + 1) % 3] && loads[home] >= loads[(home + 2) % 3], "{loads:?}");
        // Below the bound the home instance keeps the key even when busier than the others.
        let mut busy = [0usize; 3];
        busy[home] = 2;
        busy[(home + 1) % 3] = 3;
        assert_eq!(choose(k, &ids, &busy), Some(home));
        // At the bound (4 in flight: ceil(1.25 × 5 / 3) + 1 = 4) it spills.
        let mut full = [0usize; 3];
        full[home] = 4;
        assert_ne!(choose(k, &ids, &full), Some(home));
        assert_eq!(choose(k, &[], &[]), None);
    }

    #[test]
    fn each_policy_picks_its_way() {
        let ids = [1, 2, 3];
        let k = key(b"a shared system prompt").expect("k");
        let home = choose(k, &ids, &[0, 0, 0]).expect("home");
        let lo = LoadBalancing::LeastOutstanding;
        // (policy, key, loads, cursor, picked)
        type Row = (LoadBalancing, Option<u64>, [usize; 3], usize, usize);
        let table: &[Row] = &[
            (lo, None, [2, 0, 1], 0, 1),
            (lo, Some(k), [2, 0, 1], 0, 1),
            // Ties start from the cursor.
            (lo, None, [1, 1, 1], 2, 2),
            (lo, None, [1, 0, 0], 5, 2),
            (LoadBalancing::RoundRobin, None, [0, 9, 9], 4, 1),
            (LoadBalancing::RoundRobin, Some(k), [0, 0, 0], 3, 0),
            (LoadBalancing::PrefixAware, Some(k), [0, 0, 0], 1, home),
            // The home instance keeps the key while under the bound, however the others stand.
            (LoadBalancing::PrefixAware, Some(k), [1, 1, 1], 0, home),
            // Without a key (no messages, no prompt) it is least-outstanding.
            (LoadBalancing::PrefixAware, None, [3, 3, 0], 0, 2),
        ];
        for (i, (policy, key, loads, cursor, picked)) in table.iter().enumerate() {
            assert_eq!(select(*policy, *key, &ids, loads, *cursor), Some(*picked), "row {i}");
        }
        assert_eq!(select(lo, None, &[], &[], 0), None);
    }

    #[test]
    fn a_new_key_goes_where_least_outstanding_would_and_a_homed_one_stays() {
        let ids = [1, 2, 3];
        let k = key(b"a tenant's system prompt").expect("k");
        let owner = choose(k, &ids, &[0, 0, 0]).expect("owner");
        let other = (owner + 1) % 3;
        let mut owner_busy = [0usize; 3];
        owner_busy[owner] = 1;
        let mut owner_full = [0usize; 3];
        owner_full[owner] = 4;
        let second = (0..3).filter(|i| *i != owner).max_by_key(|i| score(k, ids[*i] as u64)).expect("second");
        // (home, loads, picked, new home)
        type Row = (Option<i64>, [usize; 3], usize, bool);
        let table: Vec<Row> = vec![
            // New key, all idle: the rendezvous owner, which every idle server picks too.
            (None, [0, 0, 0], owner, true),
            // New key, its owner busy: the fewest in flight (never a queue behind a hash).
            (None, owner_busy, second, true),
            // A home that left the target counts as none.
            (Some(99), [0, 0, 0], owner, true),
            // Homed: stays, even when others are idler, while under the bound...
            (Some(ids[other]), [0, 0, 0], other, false),
            (Some(ids[owner]), owner_busy, owner, false),
            // ...and spills at it, keeping the home.
            (Some(ids[owner]), owner_full, choose(k, &ids, &owner_full).expect("spill"), false),
        ];
        for (n, (home, loads, picked, fresh)) in table.into_iter().enumerate() {
            assert_eq!(choose_homed(k, home, &ids, &loads, &[0, 0, 0]), Some((picked, fresh)), "row {n}");
        }
        assert_ne!(choose(k, &ids, &owner_full), Some(owner));
        assert_eq!(choose_homed(k, None, &[], &[], &[]), None);
        // Equally loaded: the instance home to the fewest keys, whatever the hash says.
        let mut keys = [5usize; 3];
        keys[other] = 2;
        assert_eq!(choose_homed(k, None, &ids, &[0, 0, 0], &keys), Some((other, true)));
        // Load first: an idle instance home to many keys beats a busy one home to none.
        let mut owner_homes_none = [9usize; 3];
        owner_homes_none[owner] = 0;
        let pick = choose_homed(k, None, &ids, &owner_busy, &owner_homes_none).map(|p| p.0);
        assert!(pick.is_some_and(|p| p != owner), "{pick:?}");
    }

    #[test]
    fn new_keys_balance_like_least_outstanding() {
        // 3 instances, unique keys arriving while earlier ones are in flight: every pick is one
        // of the least loaded, so the spread is as even as least-outstanding's.
        let ids = [11, 22, 33];
        let mut loads = [0usize; 3];
        for n in 0..300u64 {
            let (i, fresh) = choose_homed(mix(n), None, &ids, &loads, &[0, 0, 0]).expect("pick");
            assert!(fresh);
            assert_eq!(loads[i], *loads.iter().min().expect("min"), "pick {n}");
            loads[i] += 1;
        }
        assert_eq!(loads, [100, 100, 100]);
        // Tenants arriving one at a time on idle instances: homes spread 2 / 2 / 2, where the
        // hash alone may put three on one instance and its cache.
        let mut homed = [0usize; 3];
        for t in 0..6u64 {
            let (i, _) = choose_homed(mix(1000 + t), None, &ids, &[0, 0, 0], &homed).expect("pick");
            homed[i] += 1;
        }
        assert_eq!(homed, [2, 2, 2]);
    }

    #[test]
    fn weighted_targets_keep_keys_and_split_by_weight() {
        // (targets, share of the first at least, at most)
        type Row<'a> = (&'a [(&'a str, u32)], f64, f64);
        let table: &[Row] = &[
            (&[("a", 50), ("b", 50)], 0.45, 0.55),
            (&[("a", 90), ("b", 10)], 0.87, 0.93),
            (&[("a", 0), ("b", 0)], 0.45, 0.55),
            (&[("a", 0), ("b", 5)], 0.0, 0.0),
        ];
        for (targets, lo, hi) in table {
            let keys = 4000;
            let first = (0..keys).filter(|k| choose_target(mix(*k), targets.iter().copied()) == Some(0)).count() as f64
                / keys as f64;
            assert!(first >= *lo && first <= *hi, "{targets:?}: {first}");
        }
        let k = mix(42);
        let pick = choose_target(k, [("a", 1), ("b", 1)]);
        assert_eq!(pick, choose_target(k, [("a", 1), ("b", 1)]));
        assert_eq!(choose_target(k, std::iter::empty()), None);
    }

    /// The decision's cost: `cargo test --release --lib prefix::tests::decision_cost -- --ignored
    /// --nocapture`. Prints numbers; asserts nothing about time.
    #[test]
    #[ignore]
    fn decision_cost() {
        let system = String::from_utf8(text(5, 6000)).expect("ascii");
        let body = serde_json::json!({"model": "m", "stream": true, "messages": [
            {"role": "system", "content": system}, {"role": "user", "content": "What does it say about cats?"}]})
        .to_string();
        let ids: Vec<i64> = (1..=16).collect();
        let loads = [1usize; 16];
        #[derive(serde::Deserialize)]
        struct Head<'a> {
            #[serde(borrow)]
            messages: Option<&'a serde_json::value::RawValue>,
        }
        for (what, n) in [("3 instances", 3), ("16 instances", 16)] {
            let mut samples = Vec::with_capacity(20_000);
            for _ in 0..20_000 {
                let t = std::time::Instant::now();
                let head: Head = serde_json::from_str(&body).expect("json");
                let raw = Bytes::copy_from_slice(head.messages.map(|m| m.get().as_bytes()).unwrap_or_default());
                let k = key_of(&Leading::Messages(raw)).expect("key");
                let i = choose(k, &ids[..n], &loads[..n]);
                std::hint::black_box(i);
                samples.push(t.elapsed());
            }
            samples.sort();
            let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
            println!(
                "{what}, {} byte body: read messages+key_of+choose p50 {:?} p99 {:?} max {:?}",
                body.len(),
                at(0.5),
                at(0.99),
                at(1.0)
            );
            let mut keyed = Vec::with_capacity(20_000);
            let head: Head = serde_json::from_str(&body).expect("json");
            let leading = Leading::Messages(Bytes::copy_from_slice(head.messages.expect("messages").get().as_bytes()));
            for _ in 0..20_000 {
                let t = std::time::Instant::now();
                let k = key_of(std::hint::black_box(&leading)).expect("key");
                std::hint::black_box(choose(k, &ids[..n], &loads[..n]));
                keyed.push(t.elapsed());
            }
            keyed.sort();
            let at = |q: f64| keyed[((keyed.len() as f64 * q) as usize).min(keyed.len() - 1)];
            println!("{what}: key_of+choose alone p50 {:?} p99 {:?}", at(0.5), at(0.99));
        }
    }
}
