"""mkdocs hook: the attention heatmaps are drawn by npattn.chapter.plots during the build.

They are added to the site as generated files, figures/<name>.svg (names in
npattn.chapter.plots.FIGURES), so no image is committed and every figure is the current code's.
With torch installed the trainable stages use the chapter's torch-seeded weights.
"""

from __future__ import annotations

FIGURES_DIR = "figures"


def on_files(files, config):
    from mkdocs.structure.files import File

    from npattn.chapter.plots import chapter_figures, figure_bytes

    for name, fig in chapter_figures(weights="auto").items():
        files.append(File.generated(config, f"{FIGURES_DIR}/{name}.svg", content=figure_bytes(fig)))
    return files
