"""mkdocs hook: the KV-cache memory chart is drawn by npattn.kv_plots during the build, from
the configurations in npattn.kv_memory, and added as the generated file figures/kv_memory.svg
(no image is committed)."""

from __future__ import annotations

FIGURES_DIR = "figures"


def on_files(files, config):
    from mkdocs.structure.files import File
    from npattn.plots import figure_bytes

    from npattn.kv_plots import KV_FIGURE, kv_memory_figure

    svg = figure_bytes(kv_memory_figure())
    files.append(File.generated(config, f"{FIGURES_DIR}/{KV_FIGURE}.svg", content=svg))
    return files
