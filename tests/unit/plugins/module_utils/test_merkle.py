# -*- coding: utf-8 -*-
# Copyright: contributors to the opdbus.fleet collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.merkle import (
    EMPTY_ROOT, Frontier, consistency_proof, inclusion_proof, leaf_hash, node_hash, root_from_leaf_hashes, verify_consistency, verify_inclusion,
)


# -- A slow reference: RFC 6962 section 2.1 transcribed literally --------------------------------

def ref_leaf(data):
    return hashlib.sha256(b"\x00" + data).digest()


def ref_node(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def ref_k(n):
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(data):
    n = len(data)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return ref_leaf(data[0])
    k = ref_k(n)
    return ref_node(ref_mth(data[:k]), ref_mth(data[k:]))


def ref_path(m, data):
    n = len(data)
    if n == 1:
        return []
    k = ref_k(n)
    if m < k:
        return ref_path(m, data[:k]) + [ref_mth(data[k:])]
    return ref_path(m - k, data[k:]) + [ref_mth(data[:k])]


def ref_subproof(m, data, complete):
    n = len(data)
    if m == n:
        return [] if complete else [ref_mth(data)]
    k = ref_k(n)
    if m <= k:
        return ref_subproof(m, data[:k], complete) + [ref_mth(data[k:])]
    return ref_subproof(m - k, data[k:], False) + [ref_mth(data[:k])]


def ref_proof(m, data):
    if m == 0 or m == len(data):
        return []
    return ref_subproof(m, data, True)


DATA = [bytes([i, i * 7 % 256]) for i in range(64)]
HASHES = [ref_leaf(d) for d in DATA]


# -- Known answers: the RFC 6962 test data used by certificate-transparency and -----------------
# -- transparency-dev/merkle (leaf inputs "", 00, 10, 2021, ...) -------------------------------

CT_LEAVES = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")]
CT_HASHES = [leaf_hash(d) for d in CT_LEAVES]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (leaf index, tree size, audit path); indexes are 0-based here.
CT_INCLUSION = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (0, 1, []),
]
CT_CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]


def test_hash_primitives():
    assert EMPTY_ROOT.hex() == CT_ROOTS[0]
    assert leaf_hash(b"").hex() == CT_ROOTS[1]
    assert node_hash(CT_HASHES[0], CT_HASHES[1]).hex() == CT_ROOTS[2]


@pytest.mark.parametrize("size", range(len(CT_ROOTS)))
def test_known_roots(size):
    assert root_from_leaf_hashes(CT_HASHES[:size]).hex() == CT_ROOTS[size]
    frontier = Frontier()
    frontier.extend(CT_HASHES[:size])
    assert frontier.root().hex() == CT_ROOTS[size]


@pytest.mark.parametrize("index, size, path", CT_INCLUSION)
def test_known_inclusion_proofs(index, size, path):
    proof = inclusion_proof(CT_HASHES, index, size)
    assert [p.hex() for p in proof] == path
    assert verify_inclusion(CT_HASHES[index], index, size, proof, bytes.fromhex(CT_ROOTS[size]))


@pytest.mark.parametrize("old, new, path", CT_CONSISTENCY)
def test_known_consistency_proofs(old, new, path):
    proof = consistency_proof(CT_HASHES, old, new)
    assert [p.hex() for p in proof] == path
    assert verify_consistency(old, new, bytes.fromhex(CT_ROOTS[old]), bytes.fromhex(CT_ROOTS[new]), proof)


# -- Cross-check against the reference for every size up to 64 ----------------------------------

@pytest.mark.parametrize("size", range(0, 65))
def test_roots_match_reference(size):
    want = ref_mth(DATA[:size])
    assert root_from_leaf_hashes(HASHES[:size]) == want
    frontier = Frontier()
    roots = frontier.extend_with_roots(HASHES[:size])
    assert roots == [ref_mth(DATA[:i]) for i in range(size)]
    assert frontier.size == size and frontier.root() == want
    one_by_one = Frontier()
    for leaf in HASHES[:size]:
        one_by_one.append(leaf)
    assert one_by_one == frontier


@pytest.mark.parametrize("size", range(1, 65))
def test_inclusion_proofs_match_reference(size):
    root = ref_mth(DATA[:size])
    for index in range(size):
        proof = inclusion_proof(HASHES, index, size)
        assert proof == ref_path(index, DATA[:size]), (index, size)
        assert verify_inclusion(HASHES[index], index, size, proof, root), (index, size)


@pytest.mark.parametrize("size", range(1, 65))
def test_consistency_proofs_match_reference(size):
    root = ref_mth(DATA[:size])
    for old in range(0, size + 1):
        proof = consistency_proof(HASHES, old, size)
        assert proof == ref_proof(old, DATA[:size]), (old, size)
        assert verify_consistency(old, size, ref_mth(DATA[:old]), root, proof), (old, size)


def test_proof_defaults_to_all_leaves():
    assert inclusion_proof(HASHES[:13], 4) == inclusion_proof(HASHES, 4, 13)
    assert consistency_proof(HASHES[:13], 5) == consistency_proof(HASHES, 5, 13)


@pytest.mark.parametrize("call", [
    lambda: inclusion_proof(HASHES[:4], 4),
    lambda: inclusion_proof(HASHES[:4], -1),
    lambda: inclusion_proof(HASHES[:4], 0, 5),
    lambda: inclusion_proof([], 0),
    lambda: inclusion_proof(HASHES[:4], True),
    lambda: consistency_proof(HASHES[:4], 5),
    lambda: consistency_proof(HASHES[:4], 3, 2),
    lambda: consistency_proof(HASHES[:4], -1),
    lambda: consistency_proof(HASHES[:4], 1, 9),
])
def test_proof_generators_reject_out_of_range(call):
    with pytest.raises(ValueError):
        call()


# -- Mutation vectors in the style of transparency-dev/merkle's verifier tests ------------------

GARBAGE = [b"", b"\x00" * 31, b"\x00" * 33, "00" * 32, None, 0, bytearray(32)]


def flipped_bits(proof):
    for i, element in enumerate(proof):
        for bit in range(len(element) * 8):
            changed = bytearray(element)
            changed[bit // 8] ^= 1 << (bit % 8)
            yield proof[:i] + [bytes(changed)] + proof[i + 1:]


def structural_mutations(proof, extra):
    """Proofs one element off: dropped, duplicated, appended, prepended, replaced by garbage."""
    for i in range(len(proof)):
        yield proof[:i] + proof[i + 1:]
        yield proof[:i + 1] + proof[i:]
        for g in GARBAGE:
            yield proof[:i] + [g] + proof[i + 1:]
    for e in extra + [b"\x00" * 32] + GARBAGE:
        yield proof + [e]
        yield [e] + proof
    yield []
    yield proof + proof
    if len(proof) > 1:
        yield proof[::-1]


@pytest.mark.parametrize("size", range(1, 21))
def test_inclusion_mutations_never_verify(size):
    root = ref_mth(DATA[:size])
    for index in range(size):
        leaf = HASHES[index]
        proof = inclusion_proof(HASHES, index, size)
        bad = []
        for mutated in flipped_bits(proof):
            bad.append((leaf, index, size, mutated, root))
        for mutated in structural_mutations(proof, [leaf, root]):
            if mutated != proof:
                bad.append((leaf, index, size, mutated, root))
        for wrong_index in {index - 1, index + 1, index ^ 2, size, -1} - {index}:
            bad.append((leaf, wrong_index, size, proof, root))
        # As for consistency below, only sizes that change the shape of the audit path.
        for wrong_size in {size * 2, size // 2, 0} - {size}:
            bad.append((leaf, index, wrong_size, proof, root))
        for other in range(size):
            if other != index:
                bad.append((HASHES[other], index, size, proof, root))
        bad += [
            (leaf, index, size, proof, EMPTY_ROOT),
            (leaf, index, size, proof, root[:-1]),
            (leaf, index, size, proof, root + b"\x00"),
            (leaf, index, size, proof, root.hex()),
            (leaf[:-1], index, size, proof, root),
            (DATA[index], index, size, proof, root),
            (leaf, float(index), size, proof, root),
            (leaf, index, str(size), proof, root),
            (leaf, index, size, tuple(proof) + (None,), root),
            (leaf, index, size, None, root),
            (leaf, index, size, b"".join(proof), root),
        ]
        if index == 0:
            bad.append((leaf, False, size, proof, root))
        for args in bad:
            assert verify_inclusion(*args) is False, args


@pytest.mark.parametrize("size", range(1, 21))
def test_consistency_mutations_never_verify(size):
    new_root = ref_mth(DATA[:size])
    for old in range(1, size):
        old_root = ref_mth(DATA[:old])
        proof = consistency_proof(HASHES, old, size)
        bad = []
        for mutated in flipped_bits(proof):
            bad.append((old, size, old_root, new_root, mutated))
        for mutated in structural_mutations(proof, [old_root, new_root]):
            if mutated != proof:
                bad.append((old, size, old_root, new_root, mutated))
        # Only sizes that change the shape of the proof: the verifier takes the sizes on
        # trust (they come with the roots in a checkpoint), and some neighbouring sizes
        # legitimately share a proof's shape.
        for wrong_old in {old - 1, old + 1, old ^ 2} - {old}:
            bad.append((wrong_old, size, old_root, new_root, proof))
        for wrong_new in {size * 2, size // 2} - {size}:
            bad.append((old, wrong_new, old_root, new_root, proof))
        bad += [
            (old, size, new_root, old_root, proof),
            (old, size, old_root, old_root, proof),
            (old, size, EMPTY_ROOT, new_root, proof),
            (old, size, old_root, EMPTY_ROOT, proof),
            (old, size, old_root[:-1], new_root, proof),
            (old, size, old_root, new_root.hex(), proof),
            (size, old, new_root, old_root, proof),
            (old, size, old_root, new_root, None),
            (old, size, old_root, new_root, tuple(proof) + (b"",)),
            (True, size, old_root, new_root, proof),
            (old, float(size), old_root, new_root, proof),
        ]
        for args in bad:
            assert verify_consistency(*args) is False, args


def test_consistency_edge_cases():
    root3 = ref_mth(DATA[:3])
    assert verify_consistency(0, 3, EMPTY_ROOT, root3, [])
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    # The empty tree has one root; a size-0 checkpoint claiming another is not a checkpoint.
    assert not verify_consistency(0, 3, root3, root3, [])
    assert not verify_consistency(0, 0, root3, root3, [])
    assert not verify_consistency(0, 3, EMPTY_ROOT, root3, [root3])
    assert verify_consistency(3, 3, root3, root3, [])
    assert not verify_consistency(3, 3, root3, root3, [root3])
    assert not verify_consistency(3, 3, root3, EMPTY_ROOT, [])
    assert not verify_consistency(4, 3, root3, root3, [])


# -- Garbage never raises ------------------------------------------------------------------------

anything = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70), st.floats(allow_nan=True),
    st.binary(max_size=40), st.text(max_size=70),
    st.lists(st.one_of(st.binary(min_size=31, max_size=33), st.none(), st.integers()), max_size=6),
)
hashes = st.binary(min_size=32, max_size=32)
sizes = st.integers(min_value=-3, max_value=2**66)


@settings(max_examples=300, deadline=None)
@given(anything, anything, anything, anything, anything)
def test_verifiers_never_raise_on_anything(a, b, c, d, e):
    assert verify_inclusion(a, b, c, d, e) in (True, False)
    assert verify_consistency(a, b, c, d, e) in (True, False)


@settings(max_examples=300, deadline=None)
@given(hashes, sizes, sizes, st.lists(hashes, max_size=70), hashes)
def test_verifiers_never_raise_on_well_typed_garbage(h, i, n, proof, root):
    assert verify_inclusion(h, i, n, proof, root) in (True, False)
    assert verify_consistency(i, n, h, root, proof) in (True, False)


# -- Frontier ------------------------------------------------------------------------------------

def test_frontier_serialises_to_hex_and_back():
    for size in range(0, 40):
        frontier = Frontier()
        frontier.extend(HASHES[:size])
        assert len(frontier.to_hex()) == bin(size).count("1")
        again = Frontier.from_hex(size, frontier.to_hex())
        assert again == frontier and again.root() == frontier.root()
        again.append(HASHES[size])
        frontier.append(HASHES[size])
        assert again.root() == frontier.root() == ref_mth(DATA[:size + 1])


def test_frontier_copy_is_independent():
    frontier = Frontier()
    frontier.extend(HASHES[:5])
    copy = frontier.copy()
    copy.append(HASHES[5])
    assert frontier.size == 5 and frontier.root() == ref_mth(DATA[:5])
    assert copy.root() == ref_mth(DATA[:6])


@pytest.mark.parametrize("size, hexes", [
    (3, [HASHES[0].hex()]),
    (1, [HASHES[0].hex(), HASHES[1].hex()]),
    (1, [HASHES[0].hex().upper()]),
    (1, [HASHES[0].hex()[:-2]]),
    (1, ["zz" * 32]),
    (1, HASHES[0].hex()),
    (1, [HASHES[0]]),
    (-1, []),
    (True, [HASHES[0].hex()]),
])
def test_frontier_rejects_invalid_serialisations(size, hexes):
    with pytest.raises(ValueError):
        Frontier.from_hex(size, hexes)
