"""Write the print layout templates resources/layouts/*.qpt (run with PyQGIS's Python).

    QT_QPA_PLATFORM=offscreen PYTHONPATH=.. /usr/bin/python3 scripts/make_layouts.py

The templates are built by slidewise.processing_provider.layouts.build_template_layout;
edit that function (or a template in QGIS's layout designer, keeping the item ids) and
run this again.
"""

from __future__ import annotations

import sys

from qgis.core import QgsApplication, QgsProject, QgsReadWriteContext


def main() -> int:
    app = QgsApplication([], False)
    app.initQgis()
    from slidewise.processing_provider.layouts import LAYOUTS, TEMPLATES, build_template_layout

    LAYOUTS.mkdir(parents=True, exist_ok=True)
    for key, (name, _) in TEMPLATES.items():
        layout = build_template_layout(QgsProject(), key)
        if not layout.saveAsTemplate(str(LAYOUTS / name), QgsReadWriteContext()):
            print(f"could not write {name}", file=sys.stderr)
            return 1
        print(LAYOUTS / name)
    app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
