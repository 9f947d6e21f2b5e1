"""End-to-end tests on real local llama.cpp servers (marker: e2e)."""
