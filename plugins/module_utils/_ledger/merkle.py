# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""RFC 6962 / RFC 9162 section 2.1 Merkle tree hashing, proofs and proof verifiers.

Pure functions over SHA-256 digests (``bytes`` of length 32), standard library only, so the
same file can be copied next to an auditor's script and used without Ansible.

The verifiers follow the bit-manipulation algorithms of RFC 9162 2.1.3.2 (inclusion) and
2.1.4.2 (consistency). They are fed data from other hosts and from users, so they never
raise: anything malformed simply does not verify.
"""

from __future__ import annotations

import hashlib
import re


HASH_SIZE = 32
_sha256 = hashlib.sha256
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
EMPTY_ROOT = _sha256(b"").digest()


def leaf_hash(data):
    """Hash of one log entry: SHA-256(0x00 || data)."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left, right):
    """Hash of an interior node: SHA-256(0x01 || left || right)."""
    return _sha256(b"\x01" + left + right).digest()


def root_from_leaf_hashes(hashes):
    """Merkle tree head (MTH) of a sequence of leaf hashes.

    Pairing neighbours level by level and promoting an unpaired last node unchanged builds
    exactly the left-balanced tree of RFC 6962 (the split at the largest power of two), with
    one list comprehension per level instead of a Python call per node.
    """
    level = list(hashes)
    if not level:
        return EMPTY_ROOT
    sha = _sha256
    while len(level) > 1:
        odd = level[-1] if len(level) & 1 else None
        level = [sha(b"\x01" + left + right).digest() for left, right in zip(level[0::2], level[1::2])]
        if odd is not None:
            level.append(odd)
    return level[0]


def _split(n):
    """Largest power of two strictly smaller than n (n >= 2): the RFC 6962 split point."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_range(leaf_hashes, size):
    if size is None:
        size = len(leaf_hashes)
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= len(leaf_hashes):
        raise ValueError("tree size %r is not between 0 and the %d leaf hashes given" % (size, len(leaf_hashes)))
    return size


def inclusion_proof(leaf_hashes, index, size=None):
    """Audit path (RFC 9162 2.1.3.1 PATH) for leaf ``index`` in the tree of the first ``size`` leaves.

    ``size`` defaults to all of ``leaf_hashes``. Returns a list of digests, leaf level first.
    Raises ValueError for an index or size outside the tree.
    """
    size = _check_range(leaf_hashes, size)
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < size:
        raise ValueError("leaf index %r is outside a tree of size %d" % (index, size))
    proof = []
    lo, hi = 0, size
    # Walk from the root towards the leaf; PATH lists the siblings bottom-up, hence the reverse.
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            proof.append(root_from_leaf_hashes(leaf_hashes[lo + k:hi]))
            hi = lo + k
        else:
            proof.append(root_from_leaf_hashes(leaf_hashes[lo:lo + k]))
            lo += k
    proof.reverse()
    return proof


def consistency_proof(leaf_hashes, old_size, new_size=None):
    """Consistency proof (RFC 9162 2.1.4.1 PROOF) from the tree of ``old_size`` leaves to ``new_size``.

    ``new_size`` defaults to all of ``leaf_hashes``. The proof is empty when ``old_size`` is 0
    or equal to ``new_size``. Raises ValueError when the sizes are out of order or out of range.
    """
    new_size = _check_range(leaf_hashes, new_size)
    if not isinstance(old_size, int) or isinstance(old_size, bool) or not 0 <= old_size <= new_size:
        raise ValueError("old size %r is not between 0 and the new size %d" % (old_size, new_size))
    if old_size in (0, new_size):
        return []
    proof = []
    # Iterative SUBPROOF(m, D[lo:hi], complete): m counts the old tree's leaves inside [lo, hi).
    lo, hi, m, complete = 0, new_size, old_size, True
    while hi - lo != m:
        k = _split(hi - lo)
        if m <= k:
            proof.append(root_from_leaf_hashes(leaf_hashes[lo + k:hi]))
            hi = lo + k
        else:
            proof.append(root_from_leaf_hashes(leaf_hashes[lo:lo + k]))
            lo += k
            m -= k
            complete = False
    if not complete:
        proof.append(root_from_leaf_hashes(leaf_hashes[lo:hi]))
    proof.reverse()
    return proof


def _is_hash(value):
    return isinstance(value, bytes) and len(value) == HASH_SIZE


def _is_size(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_proof(value):
    return isinstance(value, (list, tuple)) and all(_is_hash(p) for p in value)


def verify_inclusion(leaf, index, size, proof, root):
    """True when ``proof`` shows that ``leaf`` (a leaf hash) is entry ``index`` of the tree with ``root``."""
    if not (_is_hash(leaf) and _is_size(index) and _is_size(size) and _is_proof(proof) and _is_hash(root)):
        return False
    if index >= size:
        return False
    sha = _sha256
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = sha(b"\x01" + p + r).digest()
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = sha(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(old_size, new_size, old_root, new_root, proof):
    """True when ``proof`` shows the tree (new_size, new_root) extends the tree (old_size, old_root).

    A tree of size 0 has exactly one valid root, EMPTY_ROOT; unlike some implementations a
    checkpoint claiming size 0 with any other root is rejected rather than accepted as trivially
    consistent.
    """
    if not (_is_size(old_size) and _is_size(new_size) and _is_hash(old_root) and _is_hash(new_root)
            and _is_proof(proof)):
        return False
    if old_size > new_size:
        return False
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT and (new_size > 0 or new_root == EMPTY_ROOT)
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        # The old tree is a complete subtree of the new one, so its root is the first node.
        path.insert(0, old_root)
    sha = _sha256
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = sha(b"\x01" + c + fr).digest()
            sr = sha(b"\x01" + c + sr).digest()
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = sha(b"\x01" + sr + c).digest()
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


def _popcount(n):
    return bin(n).count("1")


class Frontier:
    """Compact range covering leaves [0, size): the roots of its perfect subtrees, largest first.

    It holds one digest per set bit of ``size``, which is all that is needed to append a leaf
    (O(log n) hashes, amortised O(1)) and to compute the current root without the leaves.
    """

    __slots__ = ("size", "nodes", "_as_left")

    def __init__(self, size=0, nodes=()):
        nodes = list(nodes)
        if not _is_size(size):
            raise ValueError("frontier size must be a non-negative integer, not %r" % (size,))
        if len(nodes) != _popcount(size) or not all(_is_hash(n) for n in nodes):
            raise ValueError("a frontier of size %d needs %d hashes of %d bytes" % (size, _popcount(size), HASH_SIZE))
        self.size = size
        self.nodes = nodes
        # Every frontier node is only ever hashed as the left child of a node hash, so each one
        # keeps a SHA-256 state that has already absorbed 0x01 || node. Copying that state and
        # feeding it the right child costs about 60% of hashing the concatenation afresh, and
        # folding the frontier into a root for every entry is most of what verification hashes.
        self._as_left = [_sha256(b"\x01" + n) for n in nodes]

    def append(self, leaf):
        """Add one leaf hash at index ``size``."""
        nodes = self.nodes
        as_left = self._as_left
        n = self.size
        # Every trailing 1 bit of the old size is a perfect subtree the new leaf completes.
        while n & 1:
            state = as_left.pop().copy()
            state.update(leaf)
            leaf = state.digest()
            nodes.pop()
            n >>= 1
        nodes.append(leaf)
        as_left.append(_sha256(b"\x01" + leaf))
        self.size += 1

    def extend(self, leaves):
        """Append several leaf hashes."""
        append = self.append
        for leaf in leaves:
            append(leaf)

    def extend_with_roots(self, leaves):
        """Append each leaf hash in turn; return the list of roots as they were just before each leaf.

        Those are the roots ledger entries record as ``prev_root``. The loop is written out with
        local names because it is most of the hashing a ledger verification does.
        """
        nodes = self.nodes
        as_left = self._as_left
        sha = _sha256
        size = self.size
        roots = []
        keep = roots.append
        for leaf in leaves:
            r = nodes[-1] if nodes else EMPTY_ROOT
            for state in as_left[-2::-1]:
                state = state.copy()
                state.update(r)
                r = state.digest()
            keep(r)
            n = size
            while n & 1:
                state = as_left.pop().copy()
                state.update(leaf)
                leaf = state.digest()
                nodes.pop()
                n >>= 1
            nodes.append(leaf)
            as_left.append(sha(b"\x01" + leaf))
            size += 1
        self.size = size
        return roots

    def root(self):
        """Merkle tree head of the leaves appended so far."""
        nodes = self.nodes
        if not nodes:
            return EMPTY_ROOT
        r = nodes[-1]
        for state in self._as_left[-2::-1]:
            state = state.copy()
            state.update(r)
            r = state.digest()
        return r

    def copy(self):
        other = Frontier.__new__(Frontier)
        other.size = self.size
        other.nodes = list(self.nodes)
        # The hash states are only ever copied before use, never updated, so they can be shared.
        other._as_left = list(self._as_left)
        return other

    def to_hex(self):
        """The node digests as lowercase hex strings, the form stored in head.json."""
        return [n.hex() for n in self.nodes]

    @classmethod
    def from_hex(cls, size, hexes):
        """Inverse of ``to_hex``; raises ValueError on anything that is not a valid frontier."""
        if not isinstance(hexes, (list, tuple)) or not all(
                isinstance(h, str) and _HEX_DIGEST.fullmatch(h) for h in hexes):
            raise ValueError("a frontier is a list of 64-character lowercase hex digests")
        return cls(size, [bytes.fromhex(h) for h in hexes])

    def __eq__(self, other):
        if not isinstance(other, Frontier):
            return NotImplemented
        return self.size == other.size and self.nodes == other.nodes

    __hash__ = None

    def __repr__(self):
        return "Frontier(size=%d, nodes=%r)" % (self.size, self.to_hex())
