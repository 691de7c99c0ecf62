"""Beyond chapter 3, the face of the modern classes: their demo section, the decoding demo
(`python -m npattn decode`), KV-cache memory per class, and the figures the docs draw.

The maths itself lives where the chapter's does: the ops in npattn/ops/ (rope, rmsnorm,
softcap, sinks, window masks) and the classes in npattn/modules/ (gqa, mla, swa, qwen3).
"""
