"""A stand-in for Ascend's ais_bench (tests only): see infer/interface.py."""
