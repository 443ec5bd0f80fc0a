"""Benchmarks behind ``securepool bench NAME``; each module has ``main(argv) -> int``."""
