"""Shared fixtures of the parakoon_kv tests."""

from __future__ import annotations
