"""mkdocs hook: the figures are drawn during the build, by npattn.chapter.plots and
npattn.chapter.diagrams.

They are added to the site as generated files, figures/<name>.svg (names in
npattn.chapter.plots.FIGURES: the attention heatmaps; npattn.chapter.diagrams.DIAGRAMS: the backward
graph and the tiling grid), so no image is committed and every figure is the current code's.
With torch installed the trainable stages use the chapter's torch-seeded weights.
"""

from __future__ import annotations

import re

FIGURES_DIR = "figures"


def on_files(files, config):
    from mkdocs.structure.files import File

    from npattn.chapter import diagrams
    from npattn.chapter.plots import chapter_figures, figure_bytes

    for name, fig in chapter_figures(weights="auto").items():
        files.append(File.generated(config, f"{FIGURES_DIR}/{name}.svg", content=figure_bytes(fig)))
    for name, fig in diagrams.diagram_figures().items():
        svg = diagrams.figure_bytes(fig)
        files.append(File.generated(config, f"{FIGURES_DIR}/{name}.svg", content=svg))
    return files


def link_figures(html: str) -> str:
    """Each figure links to its full-size file, in a box that scrolls sideways on a narrow
    screen rather than shrinking the figure past legibility (docs/css/extra.css)."""
    return re.sub(
        r'<img ([^>]*?)src="([^"]+\.(?:svg|png))"([^>]*)>',
        r'<a class="figure-link" href="\2" title="the full-size figure">'
        r'<img \1src="\2"\3></a>',
        html,
    )


def on_page_content(html, page, config, files):
    return link_figures(html)
