"""The report viewer's fallback reads the figures embedded in the HTML reports."""

from __future__ import annotations

import base64

from slidewise.ui.report_viewer import decode_data_url


def test_data_urls_of_embedded_figures_are_decoded() -> None:
    png = b"\x89PNG\r\n\x1a\n-fake"
    url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    assert decode_data_url(url) == png
    assert decode_data_url("data:image/svg+xml;base64," + base64.b64encode(b"<svg/>").decode()) == (
        b"<svg/>"
    )


def test_other_urls_are_left_to_the_browser() -> None:
    assert decode_data_url("file:///tmp/figure.png") is None
    assert decode_data_url("data:text/plain;base64,aGk=") is None
    assert decode_data_url("data:image/png;base64,@@@") is None
