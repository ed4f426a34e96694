//! One bounded queue per upstream, fair between clients.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes a client id (sequential, or already a hash for UDP peers) with
/// one multiply, not SipHash: two lookups per forwarded request.
#[derive(Debug, Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The queue is at its depth: answer exception 06 (server busy).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upstream queue full ({depth} requests)")]
pub struct QueueFull<T> {
    /// The refused item, handed back.
    pub item: T,
    /// The queue's depth.
    pub depth: usize,
}

/// A bounded FIFO per client, served round robin: a client with many
/// requests waiting does not delay another client's first one by more than
/// one request each. Per-client queues keep their capacity, so steady
/// traffic does not allocate.
#[derive(Debug)]
pub struct FairQueue<T> {
    per_client: HashMap<u64, VecDeque<T>, BuildHasherDefault<IdHasher>>,
    /// Clients with something waiting, in serving order.
    ring: VecDeque<u64>,
    len: usize,
    depth: usize,
}

impl<T> FairQueue<T> {
    /// An empty queue holding at most `depth` items (at least 1).
    pub fn new(depth: usize) -> Self {
        Self {
            per_client: HashMap::default(),
            ring: VecDeque::new(),
            len: 0,
            depth: depth.max(1),
        }
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bound.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Queues `item` from `client`; refused (handed back) when full.
    pub fn push(&mut self, client: u64, item: T) -> Result<(), QueueFull<T>> {
        if self.len >= self.depth {
            return Err(QueueFull {
                item,
                depth: self.depth,
            });
        }
        let q = self.per_client.entry(client).or_default();
        if q.is_empty() {
            self.ring.push_back(client);
        }
        q.push_back(item);
        self.len += 1;
        Ok(())
    }

    /// The next item, round robin between clients.
    pub fn pop(&mut self) -> Option<T> {
        let client = self.ring.pop_front()?;
        let q = self.per_client.get_mut(&client)?;
        let item = q.pop_front();
        if !q.is_empty() {
            self.ring.push_back(client);
        }
        if item.is_some() {
            self.len -= 1;
        }
        item
    }

    /// Takes every waiting item (to fail them all when the upstream is down).
    pub fn drain_all(&mut self, mut each: impl FnMut(T)) {
        while let Some(item) = self.pop() {
            each(item);
        }
    }

    /// Forgets a client that left (and frees its queue).
    pub fn remove_client(&mut self, client: u64) {
        if let Some(q) = self.per_client.remove(&client) {
            self.len -= q.len();
            self.ring.retain(|&c| c != client);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_between_clients() {
        let mut q = FairQueue::new(10);
        for i in 0..4 {
            q.push(1, (1, i)).unwrap();
        }
        q.push(2, (2, 0)).unwrap();
        q.push(3, (3, 0)).unwrap();
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, vec![(1, 0), (2, 0), (3, 0), (1, 1), (1, 2), (1, 3)]);
        assert!(q.is_empty());
    }

    #[test]
    fn bounded_and_hands_back() {
        let mut q = FairQueue::new(2);
        q.push(1, 'a').unwrap();
        q.push(2, 'b').unwrap();
        assert_eq!(q.push(3, 'c'), Err(QueueFull { item: 'c', depth: 2 }));
        q.remove_client(1);
        assert_eq!(q.len(), 1);
        q.push(3, 'c').unwrap();
        let mut all = Vec::new();
        q.drain_all(|x| all.push(x));
        assert_eq!(all, vec!['b', 'c']);
    }
}
