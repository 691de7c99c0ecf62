"""mkdocs hook: the figures of the pages beyond chapter 3 are drawn by npattn.beyond.plots
during the build.

They are added to the site as generated files, figures/<name>.svg (names in
npattn.beyond.plots.MODERN_FIGURES), so no image is committed and every figure is the current
code's.
"""

from __future__ import annotations

FIGURES_DIR = "figures"


def on_files(files, config):
    from mkdocs.structure.files import File

    from npattn.beyond.plots import figure_bytes, modern_figures

    for name, fig in modern_figures().items():
        files.append(File.generated(config, f"{FIGURES_DIR}/{name}.svg", content=figure_bytes(fig)))
    return files
