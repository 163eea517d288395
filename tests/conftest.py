"""Everything the tests share lives in ``tests/plugins`` (see its ``__init__``); registered here.

Fixture modules (``broker``, ``asr``) provide fixtures to every test; the helper modules are
registered too, so pytest rewrites their ``assert`` statements into detailed failure messages.
"""

pytest_plugins = [
    "tests.plugins.broker",
    "tests.plugins.asr",
    "tests.plugins.kafka",
    "tests.plugins.builders",
    "tests.plugins.clock",
    "tests.plugins.faults",
    "tests.plugins.services",
]
