"""Build .dvc/offline_plots.html: DVC's plots page with Vega inlined, so `dvc plots show`
draws its charts without a network (DVC's own page loads vega, vega-lite and vega-embed
from a CDN). The versions are the ones DVC's page names; the scripts come from their npm
packages (BSD-3-Clause, University of Washington Interactive Data Lab):

    npm pack vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2
    python tools/offline_plots_template.py vega-5.20.2.tgz vega-lite-5.2.0.tgz vega-embed-6.18.2.tgz

(`make plots-template` runs both.) .dvc/config points `plots.html_template` at the result.
"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / ".dvc" / "offline_plots.html"
ORDER = ("vega", "vega-lite", "vega-embed")  # vega-embed needs the other two loaded first

# DVC's page (dvc_render.html.PAGE_HTML) without its {scripts} placeholder: DVC would put
# the CDN script tags there.
PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <title>DVC Plot</title>
    <meta charset="utf-8">
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def _script(tgz: Path) -> tuple[str, str]:
    """(name, inline <script>) from an npm tarball's minified browser build."""
    with tarfile.open(tgz) as tar:
        meta = json.load(tar.extractfile("package/package.json"))
        code = tar.extractfile(f"package/build/{meta['name']}.min.js").read().decode("utf-8")
    if "</script" in code or "{plot_divs}" in code:
        raise SystemExit(f"{tgz}: cannot be inlined as it is")
    header = f"<!-- {meta['name']}@{meta['version']} ({meta.get('license', 'see package')}) -->"
    return meta["name"], f"    {header}\n    <script>{code}</script>"


def main(tarballs: list[str]) -> None:
    scripts = dict(_script(Path(t)) for t in tarballs)
    missing = [n for n in ORDER if n not in scripts]
    if missing:
        raise SystemExit(f"missing npm packages: {', '.join(missing)}")
    OUT.write_text(PAGE.format(scripts="\n".join(scripts[n] for n in ORDER)), encoding="utf-8")
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main(sys.argv[1:])
