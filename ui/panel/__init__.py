"""The Slidewise dock panel: one tab per workflow, each step a Processing algorithm.

:mod:`.workflow` holds the steps, how outputs feed the next step's inputs, where
outputs go and how they are shown; it has no Qt, so tests call it without QGIS.
The widgets live in :mod:`.dock`, :mod:`.step` and :mod:`.runner`.
"""
