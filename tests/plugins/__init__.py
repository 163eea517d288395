"""Everything the tests share, in one place; ``tests/conftest.py`` registers the fixture modules.

* :mod:`tests.plugins.broker`: the embedded broker and ``make_settings`` (fixtures);
* :mod:`tests.plugins.asr`: the shipped recognizer and samples (fixtures);
* :mod:`tests.plugins.kafka`: reading topics from the beginning, waiting, scraping ``/metrics``;
* :mod:`tests.plugins.builders`: records (frames, hops, hypotheses, latency events, commands);
* :mod:`tests.plugins.clock`: the hand-driven clock of the pure-logic tests;
* :mod:`tests.plugins.services`: hopline services as child processes that must exit cleanly.
"""
