"""The Processing Toolbox keeps the groups in the order of the work."""

from __future__ import annotations

from slidewise.processing_provider.algorithms.base import GROUPS, group_title


def test_group_titles_sort_in_the_order_of_the_work() -> None:
    titles = [group_title(key) for key in GROUPS]
    assert titles == [
        "1. Data preparation",
        "2. Susceptibility",
        "3. Mapping",
        "4. Detection",
        "5. Engine",
    ]
    assert sorted(titles, key=str.lower) == titles


def test_every_algorithm_shows_its_numbered_group(qgis_app) -> None:
    from qgis.core import QgsApplication

    provider = QgsApplication.processingRegistry().providerById("slidewise")
    for alg in provider.algorithms():
        assert alg.group() == group_title(alg.groupId()), alg.name()
