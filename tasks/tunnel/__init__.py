"""The laptop side of `tunnel` and `rmate`: the ssh forward, its supervisor, rmate's port."""
