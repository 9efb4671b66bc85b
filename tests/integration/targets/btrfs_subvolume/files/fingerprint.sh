#!/bin/sh
# Everything about the BTRFS under $1 that btrfs_subvolume could change, read with btrfs-progs and
# find only (never with the module): the default subvolume, every subvolume's ID, parent and UUIDs,
# each subvolume's read-only flag and compression, and every name in the tree.
set -eu
cd "$1"
btrfs subvolume get-default .
btrfs subvolume list -p -u -q .
find . -inum 256 -type d | sort | while IFS= read -r dir; do
    printf '%s %s %s\n' "$dir" "$(btrfs property get -t subvol "$dir" ro)" "$(btrfs property get -t inode "$dir" compression)"
done
find . | sort
