"""Tests of the audit run (``pipeline/run``); a package so that its module names
(``test_changes``, ``test_predict`` ...) do not clash with other test folders'."""
