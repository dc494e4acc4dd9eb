"""``adlight demo --exported DIR``: a local Gradio page to try an exported model.

Drop or choose images; each gets its score, its decision, the anomaly map over the image and
the predicted defect mask. The threshold slider starts at the exported image threshold; moving
it re-decides every image without scoring again, and the table says which images flip against
the exported threshold. Scoring goes through :class:`adlight.inference.Inferencer`, so the page
shows what ``adlight serve`` and ``adlight predict --exported`` give. Local only (``share=False``,
127.0.0.1 unless ``--host`` says otherwise); ``pip install "adlight[demo]"``.
"""
