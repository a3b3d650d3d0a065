"""What labhop keeps on the target: its layout, the lock, the probe, guarded long steps."""
