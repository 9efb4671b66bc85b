#!/usr/bin/env bash
# The health check of the op-dbus guide (000_633617563577e836.txt, "Health Check Script"), as written there.

echo "=== op-dbus Health Check ==="

# Service status
if systemctl is-active --quiet op-dbus; then
  echo "✓ Service running"
else
  echo "✗ Service NOT running"
  exit 1
fi

# Blockchain directory
if [ -d /var/lib/op-dbus/blockchain ]; then
  echo "✓ Blockchain directory exists"
else
  echo "✗ Blockchain directory missing"
  exit 1
fi

# Recent snapshot (within last hour)
LATEST=$(ls -t /var/lib/op-dbus/blockchain/snapshots | head -1)
if [ -n "$LATEST" ]; then
  AGE=$(( $(date +%s) - $(stat -c %Y "/var/lib/op-dbus/blockchain/snapshots/$LATEST") ))
  if [ $AGE -lt 3600 ]; then
    echo "✓ Recent snapshot found ($AGE seconds old)"
  else
    echo "⚠ No snapshot in last hour"
  fi
else
  echo "✗ No snapshots found"
fi

echo "=== Health check complete ==="
