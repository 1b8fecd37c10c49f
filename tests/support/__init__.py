"""Shared test machinery: file writers, fixture constants, servers and workflow helpers.

Test modules import from here, never from one another or from conftest.py
(tests/test_layout.py checks this).
"""
