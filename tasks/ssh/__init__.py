"""The way to the target: Fabric connections through jump hosts, host keys, OpenSSH argv."""
