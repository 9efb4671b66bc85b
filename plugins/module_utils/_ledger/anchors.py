# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checkpoints held away from the host, and the check that a host's ledger still extends one.

A checkpoint is ``{"origin", "size", "root"}``: the ledger's identity, how many entries it covers and
their RFC 6962 root. The host can prove that its ledger extends a checkpoint with a consistency
proof; ``check_extension`` verifies that proof with the standard library only, so the controller
(the opdbus_checkpoint action) decides from hashes it recomputes, never from the host's verdict.
"""

from __future__ import annotations

from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.entries import HEX_DIGEST, is_int
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.merkle import verify_consistency


def parse_checkpoint(checkpoint, name="the anchor"):
    """(origin, size, root bytes) of a checkpoint; ValueError naming the key that is wrong."""
    if not isinstance(checkpoint, dict):
        raise ValueError("%s must be a dict with origin, size and root" % name)
    origin, size, root = checkpoint.get("origin"), checkpoint.get("size"), checkpoint.get("root")
    if origin is not None and (not isinstance(origin, str) or not origin):
        raise ValueError("%s's origin must be a non-empty string" % name)
    if not is_int(size) or size < 0:
        raise ValueError("%s's size must be a non-negative integer" % name)
    if not isinstance(root, str) or not HEX_DIGEST.fullmatch(root):
        raise ValueError("%s's root must be a lowercase hex SHA-256" % name)
    if origin is None and size:
        raise ValueError("%s without an origin can only be the empty checkpoint (size 0)" % name)
    return origin, size, bytes.fromhex(root)


def describe(checkpoint):
    """A checkpoint in one line, for messages that must name it."""
    return "%s size %s root %s" % (checkpoint.get("origin"), checkpoint.get("size"), checkpoint.get("root"))


def check_extension(stored, current, proof):
    """None when CURRENT extends STORED by PROOF (a list of hex node hashes), else (kind, message).

    STORED is trusted (it was verified when it was stored); CURRENT and PROOF come from the host and
    are checked as data: a malformed reply fails like a wrong one.
    """
    old_origin, old_size, old_root = parse_checkpoint(stored, "the stored checkpoint")
    try:
        origin, size, root = parse_checkpoint(current, "the host's checkpoint")
    except ValueError as exc:
        return "bad_checkpoint", str(exc)
    where = "stored checkpoint: %s; host's checkpoint: %s" % (describe(stored), describe(current))
    if old_origin is not None and origin != old_origin:
        return "anchor_origin_mismatch", "the host's ledger is not the one the stored checkpoint belongs to: it was " \
            "replaced or reinitialised (%s)" % where
    if size < old_size:
        return "anchor_truncated", "the host's ledger holds fewer entries than the stored checkpoint covers: it was " \
            "truncated or rolled back to an earlier copy (%s)" % where
    try:
        nodes = [bytes.fromhex(node) for node in proof] if isinstance(proof, list) else None
    except (TypeError, ValueError):
        nodes = None
    if nodes is None or not verify_consistency(old_size, size, old_root, root, nodes):
        return "anchor_inconsistent", "the host's ledger does not extend the stored checkpoint: the consistency " \
            "proof does not verify, so entries the stored checkpoint covers were rewritten (%s)" % where
    return None
