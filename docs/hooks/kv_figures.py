"""mkdocs hook: the KV-cache memory chart is drawn by npattn.beyond.kv_plots during the build, from
the configurations in npattn.beyond.kv_memory, and added as the generated file figures/kv_memory.svg
(no image is committed)."""

from __future__ import annotations

FIGURES_DIR = "figures"


def on_files(files, config):
    from mkdocs.structure.files import File

    from npattn.beyond.kv_plots import KV_FIGURE, kv_memory_figure
    from npattn.chapter.plots import figure_bytes

    svg = figure_bytes(kv_memory_figure())
    files.append(File.generated(config, f"{FIGURES_DIR}/{KV_FIGURE}.svg", content=svg))
    return files
