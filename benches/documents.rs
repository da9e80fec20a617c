//! Operations per second of the collaborative-document core: `cargo bench --bench documents`.
//!
//! The workload is a generated editing trace shaped like a person writing (no package ships a
//! public trace such as automerge-paper): typing runs at a cursor, backspaces, cursor jumps,
//! pastes and selection deletes, with accents and emoji, ~260k edits (the size of the
//! automerge-paper trace). Cases:
//!
//! - **one document, one writer**: every edit is based on the latest version (no rebase);
//! - **one document, 8 concurrent writers**: real [`Client`] state machines that see the others'
//!   revisions 0-16 versions late, so the server rebases most submissions over several revisions;
//! - **10,000 documents**: edits spread at random over many documents (cache misses, many ropes);
//! - **owner pipeline**: what the owner shard does per operation besides `submit` — parsing the
//!   client's JSON and encoding the broadcast — on the single-writer trace, in UTF-16 offsets;
//! - **durable log**: appends through the SQLite store thread, one at a time and pipelined.
//!
//! Each case prints an HDR histogram of nanoseconds per operation and the throughput
//! (operations divided by the time spent in the measured calls).

use hdrhistogram::Histogram;
use ropey::Rope;
use serde_json::json;
use shardcast::config::{DocumentsConfig, Synchronous};
use shardcast::document::{
    Chars, Client, Document, DocumentLimits, Operation, Revision, Unit, Utf16,
};
use shardcast::storage::documents::{DocumentStoreThread, LogEntry};
use std::hint::black_box;
use std::time::{Duration, Instant};

const TRACE_OPS: usize = 260_000;

/// xorshift64*: deterministic, so every run measures the same trace.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One writer's behaviour: a cursor that mostly types forward.
struct Writer {
    rng: Rng,
    cursor: usize,
}

const LETTERS: &[&str] = &[
    "e", "t", "a", "o", "i", "n", " ", "s", "h", "r", "d", "l", "u", "\n", ",", "é", "\u{301}",
    "😀",
];
const PASTE: &str = "operational transform keeps every replica the same 👍";

impl Writer {
    fn new(seed: u64) -> Writer {
        Writer {
            rng: Rng(seed | 1),
            cursor: 0,
        }
    }

    /// The next edit of a document of `len` characters.
    fn edit(&mut self, len: usize) -> Operation {
        self.cursor = self.cursor.min(len);
        let roll = self.rng.below(1000);
        if roll < 30 || len == 0 {
            // Jump somewhere (click), then type.
            self.cursor = self.rng.below(len + 1);
        }
        match roll {
            _ if len == 0 => self.insert(len, "T"),
            0..=819 => {
                let s = LETTERS[self.rng.below(LETTERS.len())];
                self.insert(len, s)
            }
            820..=959 if self.cursor > 0 => {
                self.cursor -= 1;
                Operation::delete_at(len, self.cursor, 1).expect("in range")
            }
            960..=979 => {
                let n = 1 + self.rng.below(PASTE.chars().count());
                let s: String = PASTE.chars().take(n).collect();
                self.insert(len, &s)
            }
            980..=999 if self.cursor < len => {
                let n = 1 + self.rng.below((len - self.cursor).min(40));
                Operation::delete_at(len, self.cursor, n).expect("in range")
            }
            _ => self.insert(len, "x"),
        }
    }

    fn insert(&mut self, len: usize, s: &str) -> Operation {
        let op = Operation::insert_at(len, self.cursor, s).expect("in range");
        self.cursor += s.chars().count();
        op
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

/// Times `f`, recording nanoseconds into `h`; returns its output.
fn timed<T>(h: &mut Histogram<u64>, total: &mut Duration, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    let took = t.elapsed();
    *total += took;
    h.record((took.as_nanos() as u64).max(1))
        .expect("in bounds");
    out
}

fn report(name: &str, h: &Histogram<u64>, total: Duration) {
    let ops = h.len();
    println!(
        "{name:<46} {:>9.0} ops/s   ns/op p50 {:>6} p90 {:>6} p99 {:>7} p99.9 {:>8} max {:>9}   ({ops} ops)",
        ops as f64 / total.as_secs_f64(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max(),
    );
}

fn limits() -> DocumentLimits {
    DocumentLimits::default()
}

fn one_writer() -> String {
    let mut doc = Document::new(limits());
    let mut writer = Writer::new(1);
    let ops: Vec<Operation> = {
        let mut len = 0;
        (0..TRACE_OPS)
            .map(|_| {
                let op = writer.edit(len);
                len = op.target_len();
                op
            })
            .collect()
    };
    let (mut h, mut total) = (histogram(), Duration::ZERO);
    for (v, op) in ops.into_iter().enumerate() {
        let applied = timed(&mut h, &mut total, || {
            doc.submit(op, v as u64, Some("writer"), Some(v as u64 + 1))
        });
        black_box(applied.expect("valid trace"));
    }
    report("one document, one writer", &h, total);
    doc.text().to_string()
}

fn concurrent_writers() {
    const CLIENTS: usize = 8;
    let mut doc = Document::new(limits());
    let mut clients: Vec<Client<Chars>> = (0..CLIENTS)
        .map(|i| Client::new(format!("c{i}"), "", 0))
        .collect();
    let mut writers: Vec<Writer> = (0..CLIENTS).map(|i| Writer::new(i as u64 + 7)).collect();
    let mut log: Vec<Revision> = Vec::with_capacity(TRACE_OPS);
    let mut rng = Rng(99);
    let (mut h, mut total) = (histogram(), Duration::ZERO);
    let mut rebased_over = 0u64;
    let mut step = 0;
    while h.len() < TRACE_OPS as u64 {
        let i = step % CLIENTS;
        step += 1;
        let client = &mut clients[i];
        // This client has seen the revisions up to a few versions ago.
        let target = (doc.version() as usize).saturating_sub(rng.below(17));
        while (client.version() as usize) < target {
            client
                .receive(&log[client.version() as usize])
                .expect("in order");
        }
        if client.pending().is_some() {
            continue;
        }
        let op = writers[i].edit(client.text().len_chars());
        let out = client.edit(op).expect("valid edit").expect("synchronized");
        rebased_over += doc.version() - out.base_version;
        let id = client.id().to_owned();
        let applied = timed(&mut h, &mut total, || {
            doc.submit(out.op, out.base_version, Some(&id), Some(out.seq))
        })
        .expect("valid submission");
        log.push(applied.logged.revision().clone());
    }
    report("one document, 8 concurrent writers", &h, total);
    println!(
        "    (each submission was rebased over {:.1} revisions on average; final text {} chars)",
        rebased_over as f64 / h.len() as f64,
        doc.text().len_chars()
    );
}

fn many_documents() {
    const DOCS: usize = 10_000;
    let mut docs: Vec<Document> = (0..DOCS).map(|_| Document::new(limits())).collect();
    let mut writers: Vec<Writer> = (0..DOCS).map(|i| Writer::new(i as u64 + 1000)).collect();
    let mut rng = Rng(5);
    let (mut h, mut total) = (histogram(), Duration::ZERO);
    for _ in 0..TRACE_OPS * 2 {
        let d = rng.below(DOCS);
        let doc = &mut docs[d];
        let op = writers[d].edit(doc.text().len_chars());
        let version = doc.version();
        let applied = timed(&mut h, &mut total, || {
            doc.submit(op, version, Some("w"), Some(version + 1))
        });
        black_box(applied.expect("valid trace"));
    }
    report("10,000 documents, random spread", &h, total);
}

/// Parsing the client's JSON (UTF-16 offsets), `submit`, and the broadcast payload.
fn owner_pipeline() {
    let mut doc = Document::new(limits());
    let mut writer = Writer::new(1);
    let mut text = Rope::new();
    let (mut h, mut total) = (histogram(), Duration::ZERO);
    for v in 0..TRACE_OPS as u64 {
        let op = writer.edit(text.len_chars());
        // What a JavaScript client would send: the edit in UTF-16 code units.
        let wire = json!({"op": op.to_utf16(&text).expect("valid").to_json(), "version": v});
        op.apply(&mut text).expect("valid");
        let payload = timed(&mut h, &mut total, || {
            let len = doc.len_at::<Utf16>(v).expect("in history");
            let op = Operation::<Utf16>::from_json(&wire["op"], len, 100_000).expect("valid");
            let applied = doc
                .submit(op, v, Some("u3:bob:tab"), Some(v + 1))
                .expect("valid");
            let logged = &applied.logged;
            let mut body = json!({
                "op": logged.op::<Chars>().to_json(),
                "version": logged.version(),
                "user_id": "bob",
                "client_id": "tab",
                "seq": v + 1,
            });
            if logged.op::<Utf16>().components() != logged.op::<Chars>().components() {
                body["op_utf16"] = logged.op::<Utf16>().to_json();
            }
            serde_json::to_vec(&body).expect("serializable")
        });
        black_box(payload);
    }
    report("owner pipeline (JSON in, submit, JSON out)", &h, total);
    assert_eq!(doc.text(), &text);
    black_box(Utf16::rope_len(doc.text()));
}

fn durable_log() {
    let dir = std::env::temp_dir().join(format!("shardcast-bench-docs-{}", std::process::id()));
    for sync in [Synchronous::Normal, Synchronous::Full] {
        let _ = std::fs::remove_dir_all(&dir);
        let config = DocumentsConfig {
            synchronous: sync,
            ..DocumentsConfig::default()
        };
        let thread = DocumentStoreThread::start(&config.store_options(&dir)).expect("store starts");
        let store = thread.handle();
        futures_lite::future::block_on(store.load("bench", true)).expect("created");
        let mut writer = Writer::new(3);
        let mut len = 0;
        let mut version = 0;
        let mut next_entry = || {
            let op = writer.edit(len);
            len = op.target_len();
            version += 1;
            LogEntry {
                revision: Revision {
                    version,
                    op,
                    client_id: Some("u3:bob:tab".into()),
                    seq: Some(version),
                },
                user_id: "bob".into(),
                at_ms: 0,
            }
        };
        // One at a time: the latency of an acknowledgement.
        let (mut h, mut total) = (histogram(), Duration::ZERO);
        for _ in 0..300 {
            let entry = next_entry();
            timed(&mut h, &mut total, || {
                futures_lite::future::block_on(store.append("bench", entry))
            })
            .expect("appended");
        }
        report(&format!("durable log, one at a time ({sync:?})"), &h, total);
        // Pipelined: many operations in flight, committed in batched transactions.
        let (mut h, mut total) = (histogram(), Duration::ZERO);
        for _ in 0..100 {
            let batch: Vec<_> = (0..1000).map(|_| next_entry()).collect();
            let t = Instant::now();
            let answers: Vec<_> = batch
                .into_iter()
                .map(|e| store.append("bench", e))
                .collect();
            futures_lite::future::block_on(async {
                for a in answers {
                    a.await.expect("appended");
                }
            });
            let took = t.elapsed();
            total += took;
            let per_op = (took.as_nanos() as u64 / 1000).max(1);
            h.record_n(per_op, 1000).expect("in bounds");
        }
        report(
            &format!("durable log, 1000 in flight ({sync:?})"),
            &h,
            total,
        );
        thread.stop().expect("store stops");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument picks cases by name.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    println!("trace: {TRACE_OPS} generated edits per case (typing, backspace, jumps, pastes, selection deletes)");
    if want("one") {
        let text = one_writer();
        println!("    (final text {} chars)", text.chars().count());
    }
    if want("concurrent") {
        concurrent_writers();
    }
    if want("many") {
        many_documents();
    }
    if want("pipeline") {
        owner_pipeline();
    }
    if want("durable") {
        durable_log();
    }
}
