//! Single-threaded rows built on real crates and on std's own collections: ordinary program
//! shapes, written the way a Rust program would write them, not loops over `alloc`/`dealloc`.
//!
//! Each function generates its input from the seed (outside the timed region when a real program
//! would have read it from a file), times the work plus every drop, and returns a checksum that
//! depends only on the arguments (never on addresses), computed from the results so a wrong
//! result changes it.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::{Outcome, XorShift32};

/// Start value of [`mix`].
pub(crate) const MIX0: u64 = 0xcbf2_9ce4_8422_2325;

/// Folds `bytes` into `h` eight bytes at a time (a checksum, not a hash table hash: fast enough to
/// run over tens of MiB inside a timed region without mattering).
pub(crate) fn mix(mut h: u64, bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h ^ w).wrapping_mul(0x100_0000_01b3).rotate_left(17);
    }
    for &b in chunks.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h ^ bytes.len() as u64
}

/// [`mix`] over the little-endian bytes of `words`.
pub(crate) fn mix_words(mut h: u64, words: &[u64]) -> u64 {
    for w in words {
        h = mix(h, &w.to_le_bytes());
    }
    h
}

/// SplitMix64 of `x`: a value derived from an index alone, for the parallel rows where the
/// order of generation is not fixed.
pub(crate) fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const WORDS: &[&str] = &[
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "ärger", "größe", "été", "ñandú",
];

fn word(r: u32) -> &'static str {
    WORDS[r as usize % WORDS.len()]
}

// ---------------------------------------------------------------------------------------------
// serde_json

/// One record of the `json` document: the shape of a typical API payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    id: u64,
    name: String,
    email: String,
    active: bool,
    score: f64,
    tags: Vec<String>,
    history: Vec<Event>,
    attrs: BTreeMap<String, String>,
    parent: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Event {
    kind: String,
    at: u64,
    delta: i64,
}

fn make_record(rng: &mut XorShift32, id: u64) -> Record {
    let r = rng.next();
    let name = format!("{} {}{}", word(r), word(r >> 8), r % 1000);
    let email = format!("{}.{}@example.com", word(r >> 4), id);
    let tags = (0..r % 6).map(|k| word(rng.next() ^ k).to_string()).collect();
    let history = (0..(r >> 3) % 8)
        .map(|_| {
            let e = rng.next();
            Event {
                kind: word(e).to_string(),
                at: u64::from(e) * 1000,
                delta: i64::from(e % 2001) - 1000,
            }
        })
        .collect();
    let attrs = (0..(r >> 6) % 5)
        .map(|k| {
            let a = rng.next();
            (format!("{}_{k}", word(a)), format!("{:x}", a))
        })
        .collect();
    Record {
        id,
        name,
        email,
        active: r & 1 == 1,
        // Multiples of 1/8 round-trip exactly through decimal text.
        score: f64::from(r % 100_000) / 8.0,
        tags,
        history,
        attrs,
        parent: (r & 2 == 2).then_some(id / 2),
    }
}

/// `records` records built as typed structs, serialised to one JSON string, parsed back twice
/// (into `serde_json::Value`, the generic tree, and into the typed structs, which must equal the
/// originals), the tree serialised again, then everything dropped. Ops: records.
pub fn json(records: u64, seed: u32) -> Result<Outcome, String> {
    let start = Instant::now();
    let mut rng = XorShift32::new(seed);
    let docs: Vec<Record> = (0..records).map(|i| make_record(&mut rng, i)).collect();
    let text = serde_json::to_string(&docs).map_err(|e| format!("json: serialise: {e}"))?;
    let tree: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("json: parse into Value: {e}"))?;
    let back: Vec<Record> =
        serde_json::from_str(&text).map_err(|e| format!("json: parse into records: {e}"))?;
    if back != docs {
        return Err("json: records parsed back differ from the originals".into());
    }
    let n = tree.as_array().map_or(0, Vec::len) as u64;
    if n != records {
        return Err(format!("json: the parsed tree has {n} records, expected {records}"));
    }
    let again = serde_json::to_string(&tree).map_err(|e| format!("json: serialise tree: {e}"))?;
    let checksum = mix(mix(MIX0, text.as_bytes()), again.as_bytes());
    drop((docs, text, tree, back, again));
    let secs = start.elapsed().as_secs_f64();
    Ok(Outcome { name: "json".into(), ops: records, secs, checksum })
}

// ---------------------------------------------------------------------------------------------
// syn

/// Rust source with `items` structs, each with an impl of a few functions using the common
/// expression kinds (closures, iterators, match, loops, method calls, macros).
pub(crate) fn rust_source(items: u64, seed: u32) -> String {
    let mut rng = XorShift32::new(seed);
    let mut s = String::from("//! Generated.\nuse std::collections::HashMap;\n\n");
    for i in 0..items {
        let r = rng.next();
        let w = word(r);
        let _ = write!(
            s,
            "/// Item {i}.\n#[derive(Debug, Clone, Default)]\npub struct S{i} {{\n    \
             pub id: u64,\n    name: String,\n    parts: Vec<Option<Box<S{i}>>>,\n    \
             index: HashMap<String, (u32, f64)>,\n}}\n\n\
             impl S{i} {{\n    pub fn new(id: u64) -> Self {{\n        \
             Self {{ id, name: format!(\"{w}-{{}}\", id), ..Default::default() }}\n    }}\n\n    \
             pub fn score(&self, x: u64) -> u64 {{\n        let mut acc = x ^ {r:#x};\n        \
             for k in 0..{} {{\n            acc = acc.wrapping_mul(31).wrapping_add(k as u64);\n            \
             if acc % 3 == 0 {{ acc ^= self.id << 2; }} else {{ acc = acc.rotate_left({}); }}\n        }}\n        \
             match acc % 4 {{\n            0 => acc + 1,\n            1 => {{\n                \
             let v: Vec<u64> = (0..4u64).map(|t| t * acc).filter(|t| t % 2 == 0).collect();\n                \
             v.iter().sum::<u64>()\n            }}\n            \
             2 if self.name.len() > {} => self.parts.iter().flatten().map(|p| p.id).max().unwrap_or(0),\n            \
             _ => self.index.get(\"{w}\").map_or(acc, |&(a, b)| a as u64 + b as u64),\n        }}\n    }}\n\n    \
             fn describe(&self) -> String {{\n        \
             let keys: Vec<&str> = self.index.keys().map(String::as_str).collect();\n        \
             format!(\"{{}}#{{}} [{{}}] {{:?}}\", self.name, self.id, keys.join(\", \"), self.parts.len())\n    }}\n}}\n\n",
            r % 10,
            r % 63 + 1,
            r % 17
        );
    }
    s
}

/// Counts what `syn` parsed, through its visitor.
#[derive(Debug, Default)]
struct Counter {
    items: u64,
    exprs: u64,
    idents: u64,
    ident_bytes: u64,
}

impl<'ast> syn::visit::Visit<'ast> for Counter {
    fn visit_item(&mut self, i: &'ast syn::Item) {
        self.items += 1;
        syn::visit::visit_item(self, i);
    }
    fn visit_expr(&mut self, e: &'ast syn::Expr) {
        self.exprs += 1;
        syn::visit::visit_expr(self, e);
    }
    fn visit_ident(&mut self, i: &'ast syn::Ident) {
        self.idents += 1;
        self.ident_bytes += i.to_string().len() as u64;
    }
}

/// A generated Rust file of `items` structs with impls (generated before the timer, as if read
/// from disk) parsed by `syn` into its syntax tree, walked with a visitor, printed back to a
/// token string with `quote`, which is parsed again and must give the same counts; then all is
/// dropped. Ops: items (one struct and its impl each).
pub fn syn_parse(items: u64, seed: u32) -> Result<Outcome, String> {
    let src = rust_source(items, seed);
    let start = Instant::now();
    let file = syn::parse_file(&src).map_err(|e| format!("syn: parse: {e}"))?;
    let mut c = Counter::default();
    syn::visit::visit_file(&mut c, &file);
    let printed = quote::ToTokens::to_token_stream(&file).to_string();
    let again = syn::parse_file(&printed).map_err(|e| format!("syn: parse printed: {e}"))?;
    let mut c2 = Counter::default();
    syn::visit::visit_file(&mut c2, &again);
    if (c.items, c.exprs, c.idents) != (c2.items, c2.exprs, c2.idents) || c.items != 1 + 2 * items {
        return Err(format!("syn: counts differ: first {c:?}, printed and parsed again {c2:?}"));
    }
    let checksum = mix(c.exprs ^ c.idents << 24 ^ c.ident_bytes << 40, printed.as_bytes());
    drop((file, printed, again));
    let secs = start.elapsed().as_secs_f64();
    Ok(Outcome { name: "syn".into(), ops: items, secs, checksum })
}

// ---------------------------------------------------------------------------------------------
// regex

/// A log of `lines` lines like a web server's.
pub(crate) fn log_text(lines: u64, seed: u32) -> String {
    let mut rng = XorShift32::new(seed);
    let mut s = String::with_capacity(lines as usize * 120);
    const LEVEL: &[&str] = &["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"];
    const STATUS: &[u32] = &[200, 200, 200, 201, 204, 301, 404, 500];
    for i in 0..lines {
        let r = rng.next();
        let q = rng.next();
        let _ = writeln!(
            s,
            "2026-11-{:02}T{:02}:{:02}:{:02}Z {} user={}{} ip=10.{}.{}.{} path=/api/v{}/{}/{} \
             status={} dur={}ms mail={}@{}.com",
            1 + r % 30,
            r % 24,
            q % 60,
            i % 60,
            LEVEL[(q >> 8) as usize % LEVEL.len()],
            word(q >> 3),
            r % 100,
            r >> 24,
            (r >> 16) & 0xFF,
            q & 0xFF,
            1 + q % 3,
            word(r >> 5),
            q % 10_000,
            STATUS[(r >> 12) as usize % STATUS.len()],
            q % 997,
            word(r >> 9),
            word(q >> 11),
        );
    }
    s
}

/// One parsed log line.
#[derive(Debug)]
struct LogEntry {
    level: String,
    user: String,
    path: String,
    status: u32,
    dur_ms: u32,
}

/// A log of `lines` lines (generated before the timer, as if read from disk) parsed line by
/// line: a captures regex turns each line into an owned struct, three more patterns (a case-
/// insensitive alternation, a Unicode class, an e-mail shape) count matches; then a set of 200
/// patterns built from the words seen is compiled and run over every path. Ops: lines.
pub fn regex(lines: u64, seed: u32) -> Result<Outcome, String> {
    let text = log_text(lines, seed);
    let start = Instant::now();
    let re = |p: &str| regex::Regex::new(p).map_err(|e| format!("regex: `{p}`: {e}"));
    let line_re = re(concat!(
        r"^\S+ (?P<level>[A-Z]+) user=(?P<user>\w+) ip=(?:\d+\.){3}\d+ ",
        r"path=(?P<path>/[\w/]+) status=(?P<status>\d{3}) dur=(?P<dur>\d+)ms"
    ))?;
    let warn_re = re(r"(?i)\b(?:warn|error|fatal)\b")?;
    let uni_re = re(r"\p{Lowercase}*[äöüéñ]\p{Lowercase}*")?;
    let mail_re = re(r"\b[\w.]+@[\w-]+\.(?:com|org)\b")?;
    let mut entries = Vec::new();
    let (mut warns, mut unis, mut mails) = (0u64, 0u64, 0u64);
    for line in text.lines() {
        let c = line_re.captures(line).ok_or_else(|| format!("regex: no match on `{line}`"))?;
        entries.push(LogEntry {
            level: c["level"].to_string(),
            user: c["user"].to_string(),
            path: c["path"].to_string(),
            status: c["status"].parse().map_err(|_| "regex: bad status")?,
            dur_ms: c["dur"].parse().map_err(|_| "regex: bad duration")?,
        });
        warns += warn_re.find_iter(line).count() as u64;
        unis += uni_re.find_iter(line).count() as u64;
        mails += mail_re.find_iter(line).count() as u64;
    }
    // Patterns built at run time from the data, as a filter or router would: one per
    // (word, version) pair seen, compiled into a set and into single regexes.
    let mut pats: Vec<String> = Vec::new();
    for e in entries.iter().take(4000) {
        let seg = e.path.split('/').nth(3).unwrap_or("");
        let p = format!(r"^/api/v\d+/{}/\d{{{}}}$", regex::escape(seg), 1 + e.path.len() % 4);
        if !pats.contains(&p) {
            pats.push(p);
        }
        if pats.len() == 200 {
            break;
        }
    }
    let set = regex::RegexSet::new(&pats).map_err(|e| format!("regex: set: {e}"))?;
    let singles = pats.iter().map(|p| re(p)).collect::<Result<Vec<_>, _>>()?;
    let mut routed = 0u64;
    let mut by_status: HashMap<u32, (u64, u64)> = HashMap::new();
    for e in &entries {
        let m = set.matches(&e.path);
        routed += m.iter().count() as u64;
        if let Some(i) = m.iter().next() {
            routed += u64::from(singles[i].is_match(&e.path));
        }
        let s = by_status.entry(e.status).or_default();
        s.0 += 1;
        s.1 += u64::from(e.dur_ms) + e.level.len() as u64 + e.user.len() as u64;
    }
    let mut checksum = mix_words(MIX0, &[warns, unis, mails, routed, pats.len() as u64]);
    let mut st: Vec<_> = by_status.into_iter().collect();
    st.sort_unstable();
    for (k, (n, d)) in st {
        checksum = mix_words(checksum, &[u64::from(k), n, d]);
    }
    drop((entries, set, singles, pats, line_re, warn_re, uni_re, mail_re));
    let secs = start.elapsed().as_secs_f64();
    if warns == 0 || unis == 0 || mails != lines {
        return Err(format!("regex: implausible counts: {warns} warnings, {unis} non-ASCII words, {mails} mails in {lines} lines"));
    }
    Ok(Outcome { name: "regex".into(), ops: lines, secs, checksum })
}

// ---------------------------------------------------------------------------------------------
// collections

/// `keys` string keys put into a `HashMap<String, u64>`, a `BTreeMap<String, Vec<u32>>` and a
/// `Vec<String>`; the vector sorted and deduplicated, the tree cloned, every third key removed
/// from the hash map, a second map built by grouping; then all dropped. Ops: keys.
pub fn collections(keys: u64, seed: u32) -> Result<Outcome, String> {
    let start = Instant::now();
    let mut rng = XorShift32::new(seed);
    let mut list: Vec<String> = Vec::new();
    let mut hash: HashMap<String, u64> = HashMap::new();
    let mut tree: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for i in 0..keys {
        let r = rng.next();
        // About one key in eight repeats an earlier one.
        let k = format!("{}/{}/{:x}", word(r), word(r >> 7), (r >> 3) % (keys as u32 * 7 / 8 + 1));
        *hash.entry(k.clone()).or_insert(0) += i;
        tree.entry(k.clone()).or_default().push(r);
        list.push(k);
    }
    list.sort_unstable();
    list.dedup();
    if list.len() != hash.len() || list.len() != tree.len() {
        return Err(format!(
            "collections: {} distinct keys in the list, {} in the hash map, {} in the tree",
            list.len(),
            hash.len(),
            tree.len()
        ));
    }
    let copy = tree.clone();
    let mut grouped: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
    for k in &list {
        grouped.entry(k.split('/').next().unwrap_or("")).or_default().push(k);
    }
    for (i, k) in list.iter().enumerate() {
        if i % 3 == 0 {
            hash.remove(k);
        }
    }
    let mut checksum = MIX0;
    for (k, v) in &copy {
        checksum = mix(checksum, k.as_bytes()) ^ v.iter().map(|&x| u64::from(x)).sum::<u64>();
    }
    let mut remaining: Vec<(&String, &u64)> = hash.iter().collect();
    remaining.sort_unstable();
    for (k, v) in remaining {
        checksum = mix(checksum, k.as_bytes()).wrapping_add(*v);
    }
    for (g, v) in &grouped {
        checksum = mix(checksum, g.as_bytes()).wrapping_add(v.len() as u64);
    }
    drop(grouped);
    drop((list, hash, tree, copy));
    let secs = start.elapsed().as_secs_f64();
    Ok(Outcome { name: "collections".into(), ops: keys, secs, checksum })
}

// ---------------------------------------------------------------------------------------------
// Vec and String growth

/// Vectors and strings grown by `push` from empty, as programs build them: one `Vec<u64>` of
/// `big` elements (8 × `big` bytes), one `String` pushed to `big` bytes, and `big / 64` small
/// `Vec<u32>`s and `String`s of 0..128 elements kept in a `Vec` that grows too; everything read
/// back, then dropped. Ops: elements pushed.
pub fn vec_grow(big: u64, seed: u32) -> Result<Outcome, String> {
    let start = Instant::now();
    let mut pushes = 0u64;
    let mut v: Vec<u64> = Vec::new();
    for i in 0..big {
        v.push(i ^ 0x5555);
    }
    pushes += big;
    let mut s = String::new();
    let mut i = 0u32;
    while (s.len() as u64) < big {
        s.push_str(word(i));
        s.push(if i % 16 == 15 { '\n' } else { ' ' });
        i += 1;
        pushes += 2;
    }
    let mut rng = XorShift32::new(seed);
    let mut smalls: Vec<(Vec<u32>, String)> = Vec::new();
    for _ in 0..big / 64 {
        let r = rng.next();
        let mut a = Vec::new();
        let mut b = String::new();
        for k in 0..r % 128 {
            a.push(r ^ k);
            b.push(char::from(b'a' + (k % 26) as u8));
        }
        pushes += 2 * u64::from(r % 128);
        smalls.push((a, b));
    }
    pushes += big / 64;
    let sum_v = v.iter().fold(0u64, |a, &x| a.wrapping_add(x));
    let want_v = (0..big).fold(0u64, |a, x| a.wrapping_add(x ^ 0x5555));
    if sum_v != want_v {
        return Err(format!("vec_grow: Vec<u64> sums to {sum_v}, expected {want_v}"));
    }
    let mut checksum = mix(sum_v, s.as_bytes());
    for (a, b) in &smalls {
        if a.len() != b.len() {
            return Err("vec_grow: a small Vec and String differ in length".into());
        }
        checksum = checksum.wrapping_add(a.iter().map(|&x| u64::from(x)).sum::<u64>());
        checksum = mix(checksum, b.as_bytes());
    }
    drop((v, s, smalls));
    let secs = start.elapsed().as_secs_f64();
    Ok(Outcome { name: "vec_grow".into(), ops: pushes, secs, checksum })
}

// ---------------------------------------------------------------------------------------------
// A buffer reserved large and filled partly

/// Bytes written at each end of a `reserve` buffer.
const RESERVE_HEAD_MAX: usize = 16 << 10;
const RESERVE_TAIL: usize = 64;

/// Buffers reserved for the largest input they may have to hold and filled partly, as readers
/// and encoders do: `iters` random slot steps over `ws` slots; an empty slot gets
/// `Vec::<u8>::with_capacity(1..=8 MiB)`, filled from the front with 1..16 KiB by
/// `extend_from_slice` and with a 64-byte trailer written into the last bytes of its spare
/// capacity; an occupied slot has both ends checked and is dropped. Ops: steps.
pub fn reserve(iters: u64, ws: usize, seed: u32) -> Result<Outcome, String> {
    const LO: usize = 1 << 20;
    const HI: usize = 8 << 20;
    let src: Vec<u8> = (0..RESERVE_HEAD_MAX).map(|i| (i * 7 + 3) as u8).collect();
    let mut slots: Vec<Option<Vec<u8>>> = (0..ws.max(1)).map(|_| None).collect();
    let mut rng = XorShift32::new(seed);
    let mut checksum = 0u64;
    let start = Instant::now();
    let check = |b: &Vec<u8>| -> Result<u64, String> {
        let cap = b.capacity();
        let head_ok = b.iter().enumerate().step_by(509).all(|(i, &x)| x == src[i]);
        // SAFETY: the last RESERVE_TAIL bytes of the capacity were initialised when the
        // buffer was made (`fill` below) and nothing has written them since.
        let tail =
            unsafe { std::slice::from_raw_parts(b.as_ptr().add(cap - RESERVE_TAIL), RESERVE_TAIL) };
        let tail_ok = tail.iter().enumerate().all(|(i, &x)| x == (cap as u8) ^ (i as u8));
        if head_ok && tail_ok {
            Ok(b.len() as u64)
        } else {
            Err(format!(
                "reserve: a buffer of capacity {cap} lost its {}",
                if head_ok { "trailer" } else { "head" }
            ))
        }
    };
    let step = |slot: &mut Option<Vec<u8>>, r: u32| -> Result<u64, String> {
        match slot.take() {
            Some(b) => check(&b).map(|n| n + (1 << 32)),
            None => {
                let cap = LO + r as usize % (HI - LO + 1);
                let fill = 1024 + (r as usize >> 4) % (RESERVE_HEAD_MAX - 1024 + 1);
                let mut b: Vec<u8> = Vec::with_capacity(cap);
                b.extend_from_slice(&src[..fill]);
                let cap = b.capacity();
                let spare = b.spare_capacity_mut();
                let at = spare.len() - RESERVE_TAIL;
                for (i, x) in spare[at..].iter_mut().enumerate() {
                    x.write((cap as u8) ^ (i as u8));
                }
                *slot = Some(b);
                Ok(cap as u64)
            }
        }
    };
    for _ in 0..iters {
        let r = rng.next();
        let i = r as usize % slots.len();
        checksum = checksum.wrapping_add(step(&mut slots[i], r)?);
    }
    for slot in slots.iter_mut() {
        if let Some(b) = slot.take() {
            checksum = checksum.wrapping_add(check(&b)? + (1 << 32));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Outcome { name: "reserve".into(), ops: iters, secs, checksum })
}
