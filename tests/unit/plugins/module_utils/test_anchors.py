# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller's check of a host's checkpoint against the stored one decides from the proof alone."""

from __future__ import annotations

import hashlib

import pytest

from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.anchors import check_extension, parse_checkpoint
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.merkle import (
    EMPTY_ROOT,
    consistency_proof,
    leaf_hash,
    root_from_leaf_hashes,
)

ORIGIN = "5b0c7b4e-1f0e-4a55-9a63-1d9f2f1e7c01"


def leaves(count, salt=""):
    return [leaf_hash(("%s entry %d" % (salt, i)).encode()) for i in range(count)]


def checkpoint(hashes, size, origin=ORIGIN):
    return {"origin": origin, "size": size, "root": root_from_leaf_hashes(hashes[:size]).hex()}


def proof(hashes, old_size, new_size):
    return [node.hex() for node in consistency_proof(hashes, old_size, new_size)]


@pytest.mark.parametrize("old_size", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17])
@pytest.mark.parametrize("grown", [0, 1, 2, 5, 31])
def test_a_ledger_that_grew_extends_the_stored_checkpoint(old_size, grown):
    hashes = leaves(old_size + grown)
    new_size = old_size + grown
    assert check_extension(checkpoint(hashes, old_size), checkpoint(hashes, new_size),
                           proof(hashes, old_size, new_size)) is None


def test_the_first_checkpoint_of_an_empty_ledger_is_extended_by_anything():
    hashes = leaves(3)
    empty = {"origin": None, "size": 0, "root": EMPTY_ROOT.hex()}
    assert check_extension(empty, checkpoint(hashes, 3), []) is None


@pytest.mark.parametrize("kept", [0, 1, 4, 6])
def test_a_rolled_back_ledger_is_truncated_whatever_proof_the_host_sends(kept):
    hashes = leaves(7)
    kind, message = check_extension(checkpoint(hashes, 7), checkpoint(hashes, kept), proof(hashes, kept, 7))
    assert kind == "anchor_truncated"
    assert "size 7" in message and "size %d" % kept in message


@pytest.mark.parametrize("size", [1, 2, 5, 8])
def test_a_rewrite_of_equal_size_is_inconsistent(size):
    stored, rewritten = leaves(size), leaves(size, salt="forged")
    kind, message = check_extension(checkpoint(stored, size), checkpoint(rewritten, size), [])
    assert kind == "anchor_inconsistent"
    assert checkpoint(stored, size)["root"] in message and checkpoint(rewritten, size)["root"] in message


@pytest.mark.parametrize("changed", [0, 3, 5])
def test_a_rewrite_that_also_grew_is_inconsistent_even_with_its_own_proof(changed):
    original = leaves(6)
    rewritten = original[:changed] + leaves(10 - changed, salt="forged")
    problem = check_extension(checkpoint(original, 6), checkpoint(rewritten, 10), proof(rewritten, 6, 10))
    assert problem[0] == "anchor_inconsistent"


def test_forged_proofs_do_not_verify():
    hashes = leaves(9)
    stored, current = checkpoint(hashes, 5), checkpoint(hashes, 9)
    honest = proof(hashes, 5, 9)
    flipped = [honest[0][:-1] + ("0" if honest[0][-1] != "0" else "1")] + honest[1:]
    for forged in ([], honest[:-1], honest + [honest[0]], flipped, ["00" * 32] * len(honest), None, "proof",
                   ["not hex"], [None]):
        assert check_extension(stored, current, forged)[0] == "anchor_inconsistent", forged


def test_another_ledger_is_an_origin_mismatch():
    hashes = leaves(4)
    other = checkpoint(hashes, 4, origin="another-ledger")
    assert check_extension(checkpoint(hashes, 3), other, proof(hashes, 3, 4))[0] == "anchor_origin_mismatch"


@pytest.mark.parametrize("reply", [None, [], {}, {"origin": ORIGIN, "size": "4", "root": "00" * 32},
                                   {"origin": ORIGIN, "size": 4, "root": "AB" * 32}, {"origin": "", "size": 4}])
def test_a_reply_without_a_well_formed_checkpoint_fails(reply):
    hashes = leaves(4)
    assert check_extension(checkpoint(hashes, 3), reply, proof(hashes, 3, 4))[0] == "bad_checkpoint"


def test_a_malformed_stored_checkpoint_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="the stored checkpoint's root"):
        check_extension({"origin": ORIGIN, "size": 1, "root": hashlib.sha256(b"x").hexdigest().upper()},
                        checkpoint(leaves(1), 1), [])
    with pytest.raises(ValueError, match="without an origin"):
        parse_checkpoint({"origin": None, "size": 2, "root": "00" * 32})
