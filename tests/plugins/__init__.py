"""Shared test fixtures and helpers, registered in tests/conftest.py through ``pytest_plugins``.

Test modules never import another test module or a conftest: fixtures come from these plugins by
name, and plain helpers (``wait_until``, ``free_port``, ``tiny_mlp``, ``make_package`` ...) are
imported from here, e.g. ``from tests.plugins.waiting import wait_until``.

- ``waiting``: ``wait_until`` (the one poll-until-deadline loop) and ``free_port``.
- ``models``: ``tiny_mlp``, ``tiny_sequential``, ``HalfPlusThree``, ``TinyTagger``, ``TwoHeads``,
  ``make_package``.
- ``serving``: a tiny model repository and an in-process server (``repo_dir``, ``server`` ...).
- ``processes``: a server in its own process and a keep-alive load client.
- ``digits``: packages of small models trained on sklearn's digits (export tests).
"""
