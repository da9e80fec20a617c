//! Session simulator: 2–6 clients (some counting UTF-16 code units) edit one document through
//! the server with random delays, deliveries reordered between connections but FIFO within one
//! (as WebSockets give), and random reconnects. Messages a dead connection had sent may still
//! reach the server late, which exercises resend deduplication. Once every message is delivered,
//! every client must hold exactly the server's text.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use ropey::Rope;

use super::client::{CatchUp, Client, Outgoing};
use super::ot::Utf16;
use super::ot::{compose, Chars, Operation, Unit};
use super::server::{Document, DocumentLimits, Logged, SubmitError};

/// SplitMix64: small, seedable, good enough to drive a simulation.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn text(&mut self, max: usize) -> String {
        const ALPHABET: [char; 8] = ['a', 'b', 'e', '\u{301}', 'é', '😀', '👍', '\n'];
        (0..1 + self.below(max))
            .map(|_| ALPHABET[self.below(ALPHABET.len())])
            .collect()
    }

    /// A random edit of `text`: an insert, a delete, or both at once.
    fn edit(&mut self, text: &Rope) -> Operation {
        let len = text.len_chars();
        let insert = |rng: &mut Self, len| {
            Operation::insert_at(len, rng.below(len + 1), &rng.text(4)).expect("in range")
        };
        let delete = |rng: &mut Self, len: usize| {
            let pos = rng.below(len);
            Operation::delete_at(len, pos, 1 + rng.below((len - pos).min(4))).expect("in range")
        };
        match self.below(10) {
            _ if len == 0 => insert(self, len),
            0..=4 => insert(self, len),
            5..=7 => delete(self, len),
            _ => {
                let first = delete(self, len);
                let second = insert(self, first.target_len());
                compose(&first, &second).expect("lengths match")
            }
        }
    }
}

/// A submission, in the unit its client counts.
enum Submission {
    Chars(Outgoing<Chars>),
    Utf16(Outgoing<Utf16>),
}

enum Up {
    Join { known_version: u64 },
    Submit(Submission),
}

/// The server's answer to a join: what the client missed, or the current state.
enum Joined {
    Missed(Vec<Arc<Logged>>),
    State { text: String, version: u64 },
}

enum Down {
    Joined(Joined),
    Ack { version: u64, seq: u64 },
    Broadcast(Arc<Logged>),
    Resync,
}

trait SimUnit: Unit {
    fn submission(out: Outgoing<Self>) -> Submission;
}

impl SimUnit for Chars {
    fn submission(out: Outgoing<Self>) -> Submission {
        Submission::Chars(out)
    }
}

impl SimUnit for Utf16 {
    fn submission(out: Outgoing<Self>) -> Submission {
        Submission::Utf16(out)
    }
}

enum Reply {
    Nothing,
    Send(Up),
    Reconnect,
}

/// A client and whether its current connection has joined.
trait Peer {
    fn edit(&mut self, rng: &mut Rng) -> Reply;
    fn deliver(&mut self, msg: Down) -> Reply;
    fn disconnect(&mut self) -> Up;
    fn settled(&self) -> Option<(&Rope, u64)>;
}

struct SimClient<U: SimUnit> {
    client: Client<U>,
    joined: bool,
}

impl<U: SimUnit> SimClient<U> {
    fn send(&self, out: Option<Outgoing<U>>) -> Reply {
        match out {
            // Edits made while re-joining are sent by the re-join.
            Some(out) if self.joined => Reply::Send(Up::Submit(U::submission(out))),
            _ => Reply::Nothing,
        }
    }
}

impl<U: SimUnit> Peer for SimClient<U> {
    fn edit(&mut self, rng: &mut Rng) -> Reply {
        let op = rng.edit(self.client.text());
        let op = U::from_chars(&op, self.client.text()).expect("valid edit");
        let out = self.client.edit(op).expect("valid edit");
        self.send(out)
    }

    fn deliver(&mut self, msg: Down) -> Reply {
        let out = match msg {
            Down::Joined(joined) => {
                let catch_up = match joined {
                    Joined::Missed(missed) => {
                        CatchUp::Revisions(missed.iter().map(|l| l.revision_in()).collect())
                    }
                    Joined::State { text, version } => CatchUp::State { text, version },
                };
                self.joined = true;
                self.client.rejoin(catch_up)
            }
            Down::Ack { version, seq } => self.client.ack(version, seq),
            Down::Broadcast(logged) => self.client.receive(&logged.revision_in()),
            Down::Resync => return Reply::Reconnect,
        };
        self.send(out.expect("server messages fit the client"))
    }

    fn disconnect(&mut self) -> Up {
        self.joined = false;
        Up::Join {
            known_version: self.client.version(),
        }
    }

    fn settled(&self) -> Option<(&Rope, u64)> {
        let synchronized = self.joined && self.client.pending().is_none();
        synchronized.then(|| (self.client.text(), self.client.version()))
    }
}

struct Connection {
    client: usize,
    epoch: u64,
    up: VecDeque<Up>,
}

struct Session {
    rng: Rng,
    doc: Document,
    peers: Vec<Box<dyn Peer>>,
    /// Each client's current connection, FIFO both ways.
    up: Vec<VecDeque<Up>>,
    down: Vec<VecDeque<Down>>,
    epoch: Vec<u64>,
    /// The connection of each client that the server has joined to the document.
    joined_epoch: Vec<Option<u64>>,
    /// What dead connections had sent and the server may still receive, in order.
    zombies: Vec<Connection>,
    applied: HashSet<(usize, u64)>,
    stats: Stats,
}

/// How often the paths a simulation should exercise were taken.
#[derive(Debug, Default)]
struct Stats {
    catch_ups: usize,
    state_joins: usize,
    resyncs: usize,
    duplicates: usize,
    stale: usize,
    own_echoes: usize,
    utf16_submits: usize,
}

impl Session {
    fn new(seed: u64) -> Self {
        let mut rng = Rng(seed);
        let history = [0, 1, 4, 1000][rng.below(4)];
        let text = if rng.chance(50) {
            rng.text(8)
        } else {
            String::new()
        };
        let limits = DocumentLimits {
            history,
            ..DocumentLimits::default()
        };
        let n = 2 + rng.below(5);
        let peers = (0..n)
            .map(|i| -> Box<dyn Peer> {
                let id = format!("c{i}");
                if rng.chance(50) {
                    let client = Client::<Utf16>::new(id, &text, 0);
                    Box::new(SimClient {
                        client,
                        joined: true,
                    })
                } else {
                    let client = Client::<Chars>::new(id, &text, 0);
                    Box::new(SimClient {
                        client,
                        joined: true,
                    })
                }
            })
            .collect();
        Self {
            rng,
            doc: Document::from_snapshot(&text, 0, limits),
            peers,
            up: (0..n).map(|_| VecDeque::new()).collect(),
            down: (0..n).map(|_| VecDeque::new()).collect(),
            epoch: vec![0; n],
            joined_epoch: vec![Some(0); n],
            zombies: Vec::new(),
            applied: HashSet::new(),
            stats: Stats::default(),
        }
    }

    fn act(&mut self, client: usize, reply: Reply) {
        match reply {
            Reply::Nothing => {}
            Reply::Send(up) => self.up[client].push_back(up),
            Reply::Reconnect => self.reconnect(client),
        }
    }

    fn reconnect(&mut self, client: usize) {
        // Some prefix of what the old connection sent is still on its way to the server.
        let mut up = std::mem::take(&mut self.up[client]);
        up.truncate(self.rng.below(up.len() + 1));
        if !up.is_empty() {
            let epoch = self.epoch[client];
            self.zombies.push(Connection { client, epoch, up });
        }
        self.down[client].clear();
        self.epoch[client] += 1;
        let join = self.peers[client].disconnect();
        self.up[client].push_back(join);
    }

    fn reply(&mut self, client: usize, epoch: u64, msg: Down) {
        if self.epoch[client] == epoch {
            self.down[client].push_back(msg);
        }
    }

    fn serve(&mut self, client: usize, epoch: u64, msg: Up) {
        let (op, base_version, seq) = match msg {
            Up::Join { known_version } => {
                let joined = match self.doc.ops_since(known_version) {
                    Ok(missed) => {
                        self.stats.catch_ups += 1;
                        Joined::Missed(missed.cloned().collect())
                    }
                    Err(_) => {
                        self.stats.state_joins += 1;
                        Joined::State {
                            text: self.doc.text().to_string(),
                            version: self.doc.version(),
                        }
                    }
                };
                // A dead connection's late join does not unsubscribe the live one.
                self.joined_epoch[client] = self.joined_epoch[client].max(Some(epoch));
                return self.reply(client, epoch, Down::Joined(joined));
            }
            Up::Submit(submission) => match submission {
                Submission::Chars(o) => (Ok(o.op), o.base_version, o.seq),
                Submission::Utf16(o) => {
                    self.stats.utf16_submits += 1;
                    (Err(o.op), o.base_version, o.seq)
                }
            },
        };
        let id = format!("c{client}");
        let result = match op {
            Ok(op) => self.doc.submit(op, base_version, Some(&id), Some(seq)),
            Err(op16) => self.doc.submit(op16, base_version, Some(&id), Some(seq)),
        };
        match result {
            Ok(applied) => {
                let version = applied.version();
                if !applied.duplicate {
                    assert!(
                        self.applied.insert((client, seq)),
                        "{id} seq {seq} applied twice"
                    );
                    for other in 0..self.peers.len() {
                        let sender = other == client && epoch == self.epoch[client];
                        if !sender && self.joined_epoch[other] == Some(self.epoch[other]) {
                            self.stats.own_echoes += usize::from(other == client);
                            let msg = Down::Broadcast(applied.logged.clone());
                            self.down[other].push_back(msg);
                        }
                    }
                }
                self.stats.duplicates += usize::from(applied.duplicate);
                self.reply(client, epoch, Down::Ack { version, seq });
            }
            Err(e) if e.needs_resync() => {
                self.stats.resyncs += 1;
                self.reply(client, epoch, Down::Resync);
            }
            // Only a dead connection can send a seq older than one applied since.
            Err(SubmitError::StaleSeq { .. }) if epoch != self.epoch[client] => {
                self.stats.stale += 1;
            }
            Err(e) => panic!("{id} seq {seq} refused: {e}"),
        }
    }

    /// Delivers one random pending message; false when none is left.
    fn deliver(&mut self) -> bool {
        let n = self.peers.len();
        let mut queues: Vec<usize> = (0..n).filter(|&i| !self.up[i].is_empty()).collect();
        queues.extend((0..n).filter(|&i| !self.down[i].is_empty()).map(|i| n + i));
        queues.extend((0..self.zombies.len()).map(|z| 2 * n + z));
        if queues.is_empty() {
            return false;
        }
        match queues[self.rng.below(queues.len())] {
            i if i < n => {
                let msg = self.up[i].pop_front().expect("non-empty");
                self.serve(i, self.epoch[i], msg);
            }
            i if i < 2 * n => {
                let msg = self.down[i - n].pop_front().expect("non-empty");
                let reply = self.peers[i - n].deliver(msg);
                self.act(i - n, reply);
            }
            z => {
                let zombie = &mut self.zombies[z - 2 * n];
                let (client, epoch) = (zombie.client, zombie.epoch);
                let msg = zombie.up.pop_front().expect("non-empty");
                if zombie.up.is_empty() {
                    self.zombies.swap_remove(z - 2 * n);
                }
                self.serve(client, epoch, msg);
            }
        }
        true
    }

    fn run(mut self) -> Stats {
        let steps = 20 + self.rng.below(200);
        let reconnect_percent = self.rng.below(8);
        for _ in 0..steps {
            let client = self.rng.below(self.peers.len());
            match self.rng.below(100) {
                r if r < reconnect_percent => self.reconnect(client),
                r if r < 35 => {
                    let reply = self.peers[client].edit(&mut self.rng);
                    self.act(client, reply);
                }
                _ => {
                    self.deliver();
                }
            }
        }
        let mut rounds = 0;
        while self.deliver() {
            rounds += 1;
            assert!(rounds < 100_000, "messages never settle");
        }
        for (i, peer) in self.peers.iter().enumerate() {
            let (text, version) = peer.settled().unwrap_or_else(|| panic!("c{i} not settled"));
            assert_eq!(text, self.doc.text(), "c{i} diverged");
            assert_eq!(version, self.doc.version(), "c{i} at another version");
        }
        self.stats
    }
}

#[test]
fn every_client_ends_with_the_server_text() {
    let mut total = Stats::default();
    for seed in 0..3000 {
        let session = Session::new(seed);
        let stats = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| session.run()))
            .unwrap_or_else(|_| panic!("session seed {seed} failed (see the panic above)"));
        total.catch_ups += stats.catch_ups;
        total.state_joins += stats.state_joins;
        total.resyncs += stats.resyncs;
        total.duplicates += stats.duplicates;
        total.stale += stats.stale;
        total.own_echoes += stats.own_echoes;
        total.utf16_submits += stats.utf16_submits;
    }
    eprintln!("{total:?}");
    // Every path the simulation exists for was taken many times.
    let Stats {
        catch_ups,
        state_joins,
        resyncs,
        duplicates,
        stale,
        own_echoes,
        utf16_submits,
    } = total;
    for (path, count) in [
        ("catch-up", catch_ups),
        ("state join", state_joins),
        ("resync", resyncs),
        ("duplicate", duplicates),
        ("stale seq", stale),
        ("own echo", own_echoes),
        ("utf-16 submit", utf16_submits),
    ] {
        assert!(count >= 20, "{path} taken only {count} times");
    }
}
