"""Side-by-side benchmarks (host side): `edge-aigc bench`. See README.md here."""
