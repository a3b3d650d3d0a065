"""Installing without a package index: the target's wheel signature, the cached wheelhouse, the push."""
