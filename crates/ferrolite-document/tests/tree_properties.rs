//! Property tests of `RevTree`: random revision forests, inserted as histories in random
//! orders, pruned, encoded and decoded.

// Test helpers outside `#[test]` functions are not covered by `allow-unwrap-in-tests`.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use ferrolite_document::{InsertMode, RevId, RevTree};
use proptest::prelude::*;

/// Largest forest generated.
const MAX_NODES: usize = 40;

/// One generated revision.
#[derive(Debug, Clone)]
struct Node {
    id: RevId,
    parent: Option<usize>,
    /// Only meaningful for leaves (a history carries the deletion flag of its newest entry).
    deleted: bool,
    /// Random flags, used only when the tree is built through `decode`.
    conflict: bool,
    closed: bool,
}

/// A random forest; parents always come before their children.
#[derive(Debug, Clone)]
struct Forest {
    nodes: Vec<Node>,
}

impl Forest {
    fn children(&self) -> Vec<Vec<usize>> {
        let mut children = vec![Vec::new(); self.nodes.len()];
        for (i, node) in self.nodes.iter().enumerate() {
            if let Some(p) = node.parent {
                children[p].push(i);
            }
        }
        children
    }

    fn leaves(&self) -> Vec<usize> {
        let children = self.children();
        (0..self.nodes.len())
            .filter(|&i| children[i].is_empty())
            .collect()
    }

    /// The full history of a node, newest first.
    fn history(&self, mut i: usize) -> Vec<RevId> {
        let mut out = vec![self.nodes[i].id.clone()];
        while let Some(p) = self.nodes[i].parent {
            out.push(self.nodes[p].id.clone());
            i = p;
        }
        out
    }

    /// Distance from every node to its nearest leaf descendant.
    fn leaf_distances(&self) -> Vec<u32> {
        let children = self.children();
        let mut distance = vec![0u32; self.nodes.len()];
        for i in (0..self.nodes.len()).rev() {
            distance[i] = children[i]
                .iter()
                .map(|&c| distance[c] + 1)
                .min()
                .unwrap_or(0);
        }
        distance
    }

    /// Builds a tree by inserting every leaf's full history, in the given leaf order.
    fn insert_all(&self, order: &[usize]) -> RevTree {
        let mut tree = RevTree::new();
        for (n, &leaf) in order.iter().enumerate() {
            let outcome = tree
                .insert_history(
                    &self.history(leaf),
                    Some(leaf_body(leaf)),
                    self.nodes[leaf].deleted,
                    n as u64 + 1,
                    InsertMode::AllowConflicts,
                )
                .unwrap();
            assert!(outcome.added >= 1, "a leaf is never already present");
            assert_eq!(
                outcome.conflict,
                n > 0,
                "every branch after the first is a conflict"
            );
        }
        tree
    }

    /// The encoded form of this forest with its random flags, per the format documented in
    /// `tree.rs` (built by hand, so `decode` can give trees with arbitrary flags).
    fn encode_by_hand(&self) -> Vec<u8> {
        let leaves: BTreeSet<usize> = self.leaves().into_iter().collect();
        let mut out = vec![1u8];
        put_varint(&mut out, self.nodes.len() as u64);
        for (i, node) in self.nodes.iter().enumerate() {
            put_varint(&mut out, node.id.as_str().len() as u64);
            out.extend_from_slice(node.id.as_str().as_bytes());
            put_varint(&mut out, node.parent.map_or(0, |p| p as u64 + 1));
            let deleted = node.deleted && leaves.contains(&i);
            let flags = u8::from(deleted)
                | u8::from(node.conflict) << 1
                | u8::from(node.closed) << 2
                | u8::from(i % 3 == 0) << 3;
            out.push(flags);
            put_varint(&mut out, i as u64 * 1000);
            if i % 3 == 0 {
                let body = leaf_body(i);
                put_varint(&mut out, body.len() as u64);
                out.extend_from_slice(&body);
            }
        }
        out
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn leaf_body(i: usize) -> Bytes {
    Bytes::from(format!(r#"{{"leaf":{i}}}"#))
}

/// Per node: (parent choice, deleted, conflict, closed, random digest part, root generation).
type RawNode = (u8, usize, bool, bool, bool, u32, u32);

fn forest_strategy() -> impl Strategy<Value = Forest> {
    prop::collection::vec(
        (
            0u8..100,
            any::<usize>(),
            prop::bool::weighted(0.3),
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.1),
            any::<u32>(),
            1u32..5,
        ),
        1..MAX_NODES,
    )
    .prop_map(|raw: Vec<RawNode>| {
        let mut nodes: Vec<Node> = Vec::with_capacity(raw.len());
        for (j, (kind, pick, deleted, conflict, closed, digest, root_gen)) in
            raw.into_iter().enumerate()
        {
            // Mostly extend the newest node (long chains), sometimes branch anywhere,
            // rarely start a new root.
            let parent = match (j, kind) {
                (0, _) | (_, 0..=3) => None,
                (_, 4..=59) => Some(j - 1),
                _ => Some(pick % j),
            };
            let generation = parent.map_or(root_gen, |p| nodes[p].id.generation() + 1);
            // The index suffix keeps digests unique; the random prefix varies the order.
            let id = RevId::parse(&format!("{generation}-{digest:08x}{j:04x}")).unwrap();
            nodes.push(Node {
                id,
                parent,
                deleted,
                conflict,
                closed,
            });
        }
        Forest { nodes }
    })
}

/// A forest and two orders of its leaves.
fn forest_and_orders() -> impl Strategy<Value = (Forest, Vec<usize>, Vec<usize>)> {
    forest_strategy().prop_flat_map(|forest| {
        let leaves = forest.leaves();
        (
            Just(forest),
            Just(leaves.clone()).prop_shuffle(),
            Just(leaves).prop_shuffle(),
        )
    })
}

/// The order-independent shape of a tree: each ID with its parent ID, deletion flag and
/// whether it is a leaf.
fn shape(tree: &RevTree) -> BTreeMap<String, (Option<String>, bool, bool)> {
    let leaves: BTreeSet<&RevId> = tree.leaves().iter().map(|r| r.id()).collect();
    tree.revisions()
        .map(|rev| {
            let parent = tree.parent(rev.id()).map(|p| p.id().to_string());
            (
                rev.id().to_string(),
                (parent, rev.is_deleted(), leaves.contains(rev.id())),
            )
        })
        .collect()
}

/// The shape the generated forest should produce.
fn expected_shape(forest: &Forest) -> BTreeMap<String, (Option<String>, bool, bool)> {
    let leaves: BTreeSet<usize> = forest.leaves().into_iter().collect();
    forest
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let parent = node.parent.map(|p| forest.nodes[p].id.to_string());
            let leaf = leaves.contains(&i);
            (node.id.to_string(), (parent, leaf && node.deleted, leaf))
        })
        .collect()
}

proptest! {
    /// Inserting every leaf's history, in any order, gives the same tree: same IDs, parents,
    /// leaves, deletion flags, leaf bodies and conflict state.
    ///
    /// The winner is order-dependent *by design* (Couchbase Lite's rule): the branch that
    /// arrives first is the local one, and every later branch is pulled in flagged
    /// conflict, which never becomes current by itself. So the precise property is: in
    /// every order, `current()` is the leaf of the first history inserted, and it is the only
    /// leaf not flagged conflict. (The rule itself, flags included, is checked against a
    /// reference in `winner_follows_the_rule_on_any_flags`.)
    #[test]
    fn insertion_order_does_not_change_the_tree((forest, order_a, order_b) in forest_and_orders()) {
        let a = forest.insert_all(&order_a);
        let b = forest.insert_all(&order_b);
        let expected = expected_shape(&forest);
        prop_assert_eq!(a.len(), forest.nodes.len());
        prop_assert_eq!(&shape(&a), &expected);
        prop_assert_eq!(&shape(&b), &expected);

        let live_leaves = forest.leaves().iter().filter(|&&l| !forest.nodes[l].deleted).count();
        prop_assert_eq!(a.is_conflicted(), live_leaves > 1);
        prop_assert_eq!(b.is_conflicted(), live_leaves > 1);

        for (tree, order) in [(&a, &order_a), (&b, &order_b)] {
            let first = &forest.nodes[order[0]].id;
            prop_assert_eq!(tree.current().unwrap().id(), first);
            let unflagged: Vec<_> = tree.leaves().into_iter().filter(|r| !r.is_conflict()).collect();
            prop_assert_eq!(unflagged.len(), 1);
            prop_assert_eq!(unflagged[0].id(), first);
            for &leaf in order {
                let rev = tree.get(&forest.nodes[leaf].id).unwrap();
                prop_assert_eq!(rev.body(), Some(&leaf_body(leaf)));
                let history = forest.history(leaf);
                prop_assert_eq!(tree.history(&forest.nodes[leaf].id), history.iter().collect::<Vec<_>>());
            }
            // Inserting everything again changes nothing.
            let mut again = tree.clone();
            for &leaf in order {
                let outcome = again
                    .insert_history(&forest.history(leaf), None, false, 99, InsertMode::NoConflicts)
                    .unwrap();
                prop_assert_eq!(outcome.added, 0);
            }
            prop_assert_eq!(&again, tree);
        }
        // Same first branch, same winner.
        if order_a[0] == order_b[0] {
            prop_assert_eq!(a.current().unwrap().id(), b.current().unwrap().id());
        }
    }

    /// Pruning keeps every leaf, removes exactly the revisions `max_depth` or more above all
    /// their leaves, re-links the rest, and leaves no root `max_depth` or more above its
    /// nearest leaf.
    #[test]
    fn pruning_keeps_leaves_and_bounds_depth(forest in forest_strategy(), max_depth in 1u32..12) {
        let order: Vec<usize> = forest.leaves();
        let mut tree = forest.insert_all(&order);
        let distances = forest.leaf_distances();
        let removed = tree.prune(max_depth);

        let kept: BTreeSet<usize> =
            (0..forest.nodes.len()).filter(|&i| distances[i] < max_depth).collect();
        prop_assert_eq!(removed, forest.nodes.len() - kept.len());
        prop_assert_eq!(tree.len(), kept.len());
        for &leaf in &order {
            prop_assert!(tree.contains(&forest.nodes[leaf].id));
        }
        prop_assert_eq!(tree.leaves().len(), order.len());
        for (i, node) in forest.nodes.iter().enumerate() {
            prop_assert_eq!(tree.contains(&node.id), kept.contains(&i));
            if kept.contains(&i) {
                let expected_parent =
                    node.parent.filter(|p| kept.contains(p)).map(|p| &forest.nodes[p].id);
                prop_assert_eq!(tree.parent(&node.id).map(|r| r.id()), expected_parent);
            }
        }
        // From every remaining root, the nearest leaf is fewer than max_depth steps down,
        // so the chain root..=leaf holds at most max_depth revisions.
        let tree_children = |id: &RevId| -> Vec<RevId> {
            tree.revisions()
                .filter(|r| tree.parent(r.id()).map(|p| p.id()) == Some(id))
                .map(|r| r.id().clone())
                .collect()
        };
        fn nearest(id: &RevId, children: &dyn Fn(&RevId) -> Vec<RevId>) -> u32 {
            children(id).iter().map(|c| nearest(c, children) + 1).min().unwrap_or(0)
        }
        for rev in tree.revisions().filter(|r| tree.parent(r.id()).is_none()) {
            prop_assert!(nearest(rev.id(), &tree_children) < max_depth);
        }
        prop_assert_eq!(tree.prune(max_depth), 0, "pruning again removes nothing");
        prop_assert_eq!(RevTree::decode(&tree.encode()).unwrap(), tree);
    }

    /// Encoding then decoding gives the same tree, bodies, flags and sequences included.
    #[test]
    fn encode_decode_round_trip(
        (forest, order, _) in forest_and_orders(),
        drop_bodies in prop::option::of(0usize..4),
        prune in prop::option::of(1u32..6),
    ) {
        let mut tree = forest.insert_all(&order);
        if let Some(keep) = drop_bodies {
            tree.drop_old_bodies(keep);
        }
        if let Some(depth) = prune {
            tree.prune(depth);
        }
        let bytes = tree.encode();
        let back = RevTree::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &tree);
        prop_assert_eq!(back.encode(), bytes);

        // Trees with arbitrary flags (built by hand) round-trip too, byte for byte.
        let by_hand = forest.encode_by_hand();
        let decoded = RevTree::decode(&by_hand).unwrap();
        prop_assert_eq!(decoded.encode(), by_hand);
    }

    /// `current()`, `leaves()`, `is_conflicted()` and `history()` follow the rules on trees
    /// with arbitrary conflict / closed / deleted flags: leaf, then not conflict, then live,
    /// then not closed, then the higher revID.
    #[test]
    fn winner_follows_the_rule_on_any_flags(forest in forest_strategy()) {
        let tree = RevTree::decode(&forest.encode_by_hand()).unwrap();
        let leaves: BTreeSet<usize> = forest.leaves().into_iter().collect();
        let best = (0..forest.nodes.len())
            .max_by_key(|&i| {
                let n = &forest.nodes[i];
                let leaf = leaves.contains(&i);
                (leaf, !n.conflict, !(leaf && n.deleted), !n.closed, n.id.clone())
            })
            .unwrap();
        prop_assert_eq!(tree.current().unwrap().id(), &forest.nodes[best].id);
        let live = leaves.iter().filter(|&&l| !forest.nodes[l].deleted).count();
        prop_assert_eq!(tree.is_conflicted(), live > 1);
        let got: BTreeSet<&RevId> = tree.leaves().iter().map(|r| r.id()).collect();
        let want: BTreeSet<&RevId> = leaves.iter().map(|&l| &forest.nodes[l].id).collect();
        prop_assert_eq!(got, want);
        for (i, node) in forest.nodes.iter().enumerate() {
            let history = forest.history(i);
            prop_assert_eq!(tree.history(&node.id), history.iter().collect::<Vec<_>>());
            prop_assert_eq!(tree.get(&node.id).unwrap().is_conflict(), node.conflict);
            prop_assert_eq!(tree.get(&node.id).unwrap().is_closed(), node.closed);
        }
    }

    /// Arbitrary bytes never make `decode` panic.
    #[test]
    fn decode_never_panics_on_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = RevTree::decode(&bytes);
        // The same with a valid header, to get past the version check more often.
        let mut with_header = vec![1u8];
        with_header.extend_from_slice(&bytes);
        if let Ok(tree) = RevTree::decode(&with_header) {
            // Whatever decodes is canonical and usable.
            prop_assert_eq!(tree.encode(), with_header);
            let _ = tree.current();
        }
    }

    /// Corrupting a valid encoding (byte changes, truncation) never makes `decode` panic, and
    /// whatever still decodes re-encodes to the same bytes.
    #[test]
    fn decode_never_panics_on_corrupted_trees(
        forest in forest_strategy(),
        changes in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = forest.encode_by_hand();
        for (at, xor) in changes {
            let i = at.index(bytes.len());
            bytes[i] ^= xor;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        if let Ok(tree) = RevTree::decode(&bytes) {
            prop_assert_eq!(tree.encode(), bytes);
            let _ = (tree.current(), tree.leaves(), tree.is_conflicted());
        }
    }
}
