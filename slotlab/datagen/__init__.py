"""The GLASS data engine: prompts in, generated images with pseudo semantic masks out.

GLASS Sec. 4 and supplement Sec. 2: a prompt "<caption>; <class> ..." conditions Stable
Diffusion 2.1; while sampling, cross-attention of each class prompt and self-attention
are captured (``attention``) and turned into a pseudo semantic mask (``pseudo_masks``).
Prompts come from ``prompts`` and ``lexicon``. Two backends share one interface
(``backends.base.Backend.generate(prompts, seeds) -> [Generation]``):

- ``backends.sd.SDBackend``: Stable Diffusion from a local directory (or the tiny random
  twin ``tiny_engine_sd()``, with the same code path, for tests);
- ``backends.scenes.ScenesBackend``: renders built-in scenes of the prompt's classes on a
  CPU and makes a class-level pseudo mask that behaves like the diffusion one.

``run.run_generation`` writes a sharded, resumable dataset (``slotlab.data.generated``);
``config`` holds the typed settings of a run.
"""
