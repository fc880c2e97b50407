"""systemd units; installed as package data ``edge_aigc.systemd`` so ``edge-aigc flash`` finds them."""
