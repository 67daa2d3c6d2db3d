//! [`List`]: an intrusive doubly linked list whose links live inside the nodes.
//!
//! The allocator's lists link memory it manages: a region's header, a slab's record. The list
//! therefore owns no memory; an [`Adapter`] says what a node handle is (usually a raw pointer
//! into a mapping, but any copyable handle with a "none" value works, such as a packed
//! `(base, index)` slot) and where in the node its [`Links`] for this list are. A node can be
//! on several lists at once through several `Links` fields, one adapter each.
//!
//! Provenance: the list never makes a reference to a node. It reads and writes links only
//! through the raw pointer the adapter derives from the handle, so a handle that carries its
//! mapping's provenance keeps it, and a node may be rewritten or unmapped by its owner as soon
//! as it is off every list (no borrow of it outlives a call).
//!
//! Invariants: `len` is the number of nodes reachable from `head` through `next`; `head`'s
//! `prev` and `tail`'s `next` are none; for every listed node `n`, `next(prev(n)) == n`. A node
//! is on at most one list per adapter. Unlinked nodes have both links none.
//!
//! Concurrency: none. A list is plain data; its owner serialises access (the lists in hakmem
//! all live under a mutex or in one thread's state).

use core::marker::PhantomData;
use core::ptr;

/// A node handle: copyable, comparable, with a value that stands for "no node".
pub trait Handle: Copy + PartialEq {
    /// The handle of no node (a null pointer for pointers).
    const NONE: Self;
}

impl<T> Handle for *mut T {
    const NONE: Self = ptr::null_mut();
}

/// Where a node keeps its links for one list.
///
/// # Safety
/// For a node `n` that is valid (the caller of every unsafe [`List`] method promises so),
/// `links(n)` returns a pointer valid for reads and writes of a `Links<Node>`, derived from
/// `n` (so it carries `n`'s provenance), the same every time for the same node, and distinct
/// for distinct nodes. It must not read or write the links itself, and `Node::NONE` is never
/// passed to it.
pub unsafe trait Adapter {
    /// The node handle.
    type Node: Handle;
    /// The node's links for this list.
    ///
    /// # Safety
    /// `n` is a valid node.
    unsafe fn links(n: Self::Node) -> *mut Links<Self::Node>;
}

/// The two links a node carries for one list. Start it with [`Links::new`] (both none).
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct Links<H> {
    next: H,
    prev: H,
}

impl<H: Handle> Links<H> {
    /// Unlinked.
    pub const fn new() -> Links<H> {
        Links { next: H::NONE, prev: H::NONE }
    }
}

impl<H: Handle> Default for Links<H> {
    fn default() -> Self {
        Self::new()
    }
}

/// An intrusive doubly linked list with head, tail and length. See the module docs.
pub struct List<A: Adapter> {
    head: A::Node,
    tail: A::Node,
    len: usize,
    _adapter: PhantomData<fn() -> A>,
}

impl<A: Adapter> core::fmt::Debug for List<A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("List").field("len", &self.len).finish_non_exhaustive()
    }
}

impl<A: Adapter> Default for List<A> {
    fn default() -> Self {
        Self::new()
    }
}

/// `Some(n)` unless `n` is none.
#[inline]
fn some<H: Handle>(n: H) -> Option<H> {
    if n == H::NONE {
        None
    } else {
        Some(n)
    }
}

impl<A: Adapter> List<A> {
    /// An empty list.
    pub const fn new() -> List<A> {
        List { head: A::Node::NONE, tail: A::Node::NONE, len: 0, _adapter: PhantomData }
    }

    /// Nodes on the list.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the list is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first node.
    #[inline]
    pub fn head(&self) -> Option<A::Node> {
        some(self.head)
    }

    /// The last node.
    #[inline]
    pub fn tail(&self) -> Option<A::Node> {
        some(self.tail)
    }

    /// The node after `n`.
    ///
    /// # Safety
    /// `n` is a valid node on this list.
    #[inline]
    pub unsafe fn next(&self, n: A::Node) -> Option<A::Node> {
        // SAFETY: `n` is valid (caller); the adapter's pointer is readable.
        some(unsafe { (*A::links(n)).next })
    }

    /// The node before `n`.
    ///
    /// # Safety
    /// `n` is a valid node on this list.
    #[inline]
    pub unsafe fn prev(&self, n: A::Node) -> Option<A::Node> {
        // SAFETY: as in `next`.
        some(unsafe { (*A::links(n)).prev })
    }

    /// Puts `n` first.
    ///
    /// # Safety
    /// `n` is valid, on no list of this adapter, and stays valid while listed; every listed
    /// node is valid.
    pub unsafe fn push_front(&mut self, n: A::Node) {
        let old = self.head;
        // SAFETY: `n` and the old head are valid (caller); links are written in place.
        unsafe {
            A::links(n).write(Links { next: old, prev: A::Node::NONE });
            if old == A::Node::NONE {
                self.tail = n;
            } else {
                (*A::links(old)).prev = n;
            }
        }
        self.head = n;
        self.len += 1;
    }

    /// Puts `n` last.
    ///
    /// # Safety
    /// As for [`List::push_front`].
    pub unsafe fn push_back(&mut self, n: A::Node) {
        let old = self.tail;
        // SAFETY: as in `push_front`.
        unsafe {
            A::links(n).write(Links { next: A::Node::NONE, prev: old });
            if old == A::Node::NONE {
                self.head = n;
            } else {
                (*A::links(old)).next = n;
            }
        }
        self.tail = n;
        self.len += 1;
    }

    /// Takes `n` off the list and clears its links.
    ///
    /// # Safety
    /// `n` is on this list; every listed node is valid.
    pub unsafe fn remove(&mut self, n: A::Node) {
        // SAFETY: `n` and its neighbours are listed, hence valid (caller).
        unsafe {
            let l = A::links(n);
            let (next, prev) = ((*l).next, (*l).prev);
            if prev == A::Node::NONE {
                self.head = next;
            } else {
                (*A::links(prev)).next = next;
            }
            if next == A::Node::NONE {
                self.tail = prev;
            } else {
                (*A::links(next)).prev = prev;
            }
            l.write(Links::new());
        }
        self.len -= 1;
    }

    /// Takes the first node off.
    ///
    /// # Safety
    /// Every listed node is valid.
    pub unsafe fn pop_front(&mut self) -> Option<A::Node> {
        let n = self.head()?;
        // SAFETY: `n` is listed (caller: valid).
        unsafe { self.remove(n) };
        Some(n)
    }

    /// Takes the last node off.
    ///
    /// # Safety
    /// Every listed node is valid.
    pub unsafe fn pop_back(&mut self) -> Option<A::Node> {
        let n = self.tail()?;
        // SAFETY: as in `pop_front`.
        unsafe { self.remove(n) };
        Some(n)
    }

    /// Moves every node into a new list (in order) and leaves this one empty.
    pub fn take(&mut self) -> List<A> {
        core::mem::take(self)
    }

    /// The first node, from the head, for which `pred` holds, looking at no more than
    /// `max_visits` nodes (bounded work, for searches under a lock).
    ///
    /// # Safety
    /// Every listed node is valid.
    pub unsafe fn find(
        &self,
        max_visits: usize,
        mut pred: impl FnMut(A::Node) -> bool,
    ) -> Option<A::Node> {
        let mut n = self.head;
        let mut left = max_visits;
        while n != A::Node::NONE && left > 0 {
            if pred(n) {
                return Some(n);
            }
            left -= 1;
            // SAFETY: `n` is listed, hence valid (caller).
            n = unsafe { (*A::links(n)).next };
        }
        None
    }

    /// The nodes from head to tail. The iterator reads a node's successor before yielding the
    /// node, so the caller may remove (not free) the node it was just given.
    ///
    /// # Safety
    /// Every listed node stays valid while the iterator is used, and no node is removed but
    /// the one last yielded.
    pub unsafe fn iter(&self) -> Iter<A> {
        Iter { next: self.head, _adapter: PhantomData }
    }

    /// Checks the invariants by walking the whole list (tests and debug checks): returns
    /// whether `len`, `head`, `tail` and every `prev` agree with the `next` chain.
    ///
    /// # Safety
    /// Every listed node is valid.
    pub unsafe fn is_consistent(&self) -> bool {
        let mut prev = A::Node::NONE;
        let mut n = self.head;
        let mut seen = 0usize;
        while n != A::Node::NONE {
            if seen == self.len {
                return false; // longer than `len` (or a cycle)
            }
            // SAFETY: `n` is listed, hence valid (caller).
            let l = unsafe { *A::links(n) };
            if l.prev != prev {
                return false;
            }
            seen += 1;
            prev = n;
            n = l.next;
        }
        seen == self.len && self.tail == prev
    }
}

/// Iterator over a [`List`]'s nodes; see [`List::iter`].
pub struct Iter<A: Adapter> {
    next: A::Node,
    _adapter: PhantomData<fn() -> A>,
}

impl<A: Adapter> core::fmt::Debug for Iter<A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Iter").finish_non_exhaustive()
    }
}

impl<A: Adapter> Iterator for Iter<A> {
    type Item = A::Node;
    fn next(&mut self) -> Option<A::Node> {
        let n = some(self.next)?;
        // SAFETY: `List::iter`'s contract keeps listed nodes valid while we iterate.
        self.next = unsafe { (*A::links(n)).next };
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[repr(C)]
    struct Node {
        value: u32,
        a: Links<*mut Node>,
        b: Links<*mut Node>,
    }

    struct ByA;
    // SAFETY: derives the field pointer from `n` without a reference.
    unsafe impl Adapter for ByA {
        type Node = *mut Node;
        unsafe fn links(n: *mut Node) -> *mut Links<*mut Node> {
            // SAFETY: `n` is valid (caller).
            unsafe { &raw mut (*n).a }
        }
    }
    struct ByB;
    // SAFETY: as for `ByA`.
    unsafe impl Adapter for ByB {
        type Node = *mut Node;
        unsafe fn links(n: *mut Node) -> *mut Links<*mut Node> {
            // SAFETY: `n` is valid (caller).
            unsafe { &raw mut (*n).b }
        }
    }

    /// Nodes in one raw allocation, so every handle shares its provenance, as in a mapping.
    struct Arena(*mut Node, usize);
    impl Arena {
        fn new(n: usize) -> Arena {
            let v: Vec<Node> = (0..n as u32)
                .map(|value| Node { value, a: Links::new(), b: Links::new() })
                .collect();
            let b = v.into_boxed_slice();
            Arena(Box::into_raw(b).cast::<Node>(), n)
        }
        fn at(&self, i: usize) -> *mut Node {
            assert!(i < self.1);
            // SAFETY: in bounds.
            unsafe { self.0.add(i) }
        }
    }
    impl Drop for Arena {
        fn drop(&mut self) {
            // SAFETY: made by `Box::into_raw` of a slice of this length.
            drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(self.0, self.1)) });
        }
    }
    use std::boxed::Box;

    fn values<A: Adapter<Node = *mut Node>>(l: &List<A>) -> Vec<u32> {
        // SAFETY: the arena outlives the walk.
        unsafe { l.iter().map(|n| (*n).value).collect() }
    }

    #[test]
    fn push_pop_remove_keep_order_and_links() {
        let ar = Arena::new(5);
        let mut l = List::<ByA>::new();
        // SAFETY: arena nodes are valid and start unlinked.
        unsafe {
            l.push_back(ar.at(1));
            l.push_front(ar.at(0));
            l.push_back(ar.at(2));
            l.push_back(ar.at(3));
            assert_eq!(values(&l), [0, 1, 2, 3]);
            assert!(l.is_consistent());
            l.remove(ar.at(2));
            assert_eq!(values(&l), [0, 1, 3]);
            assert!(l.is_consistent());
            assert_eq!(l.pop_back(), Some(ar.at(3)));
            assert_eq!(l.pop_front(), Some(ar.at(0)));
            assert_eq!(values(&l), [1]);
            assert_eq!((l.head(), l.tail(), l.len()), (Some(ar.at(1)), Some(ar.at(1)), 1));
            l.remove(ar.at(1));
            assert!(l.is_empty() && l.head().is_none() && l.tail().is_none());
            assert!(l.is_consistent());
            // Removed nodes are unlinked and can be listed again.
            l.push_front(ar.at(2));
            assert_eq!(values(&l), [2]);
        }
    }

    #[test]
    fn a_node_is_on_two_lists_through_two_adapters() {
        let ar = Arena::new(4);
        let mut a = List::<ByA>::new();
        let mut b = List::<ByB>::new();
        // SAFETY: as above.
        unsafe {
            for i in 0..4 {
                a.push_back(ar.at(i));
                b.push_front(ar.at(i));
            }
            a.remove(ar.at(1));
            assert_eq!(values(&a), [0, 2, 3]);
            assert_eq!(values(&b), [3, 2, 1, 0]);
            assert!(a.is_consistent() && b.is_consistent());
        }
    }

    #[test]
    fn find_is_bounded_and_take_moves_everything() {
        let ar = Arena::new(6);
        let mut l = List::<ByA>::new();
        // SAFETY: as above.
        unsafe {
            for i in 0..6 {
                l.push_back(ar.at(i));
            }
            assert_eq!(l.find(10, |n| (*n).value == 4), Some(ar.at(4)));
            assert_eq!(l.find(4, |n| (*n).value == 4), None, "five visits needed, four allowed");
            let t = l.take();
            assert!(l.is_empty());
            assert_eq!(values(&t), [0, 1, 2, 3, 4, 5]);
            assert!(t.is_consistent());
        }
    }

    #[test]
    fn iter_allows_removing_the_node_just_yielded() {
        let ar = Arena::new(5);
        let mut l = List::<ByA>::new();
        // SAFETY: as above.
        unsafe {
            for i in 0..5 {
                l.push_back(ar.at(i));
            }
            let it = l.iter();
            for n in it {
                if (*n).value % 2 == 1 {
                    l.remove(n);
                }
            }
            assert_eq!(values(&l), [0, 2, 4]);
            assert!(l.is_consistent());
        }
    }

    #[test]
    fn a_broken_prev_link_is_detected() {
        let ar = Arena::new(3);
        let mut l = List::<ByA>::new();
        // SAFETY: as above.
        unsafe {
            for i in 0..3 {
                l.push_back(ar.at(i));
            }
            (*ar.at(2)).a.prev = ar.at(0);
            assert!(!l.is_consistent());
        }
    }
}
